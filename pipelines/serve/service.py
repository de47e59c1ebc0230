"""The speech service behind the HTTP app: a student on the LM engine stack, its codec, and a
batcher that gives the engine the requests that arrive together as one batch.

    service = SpeechService("student/", max_seconds=20)        # loads engine + codec, checks both
    prompt = service.prepare(text="Hello.", instruction=understand(None, text="Hello."), voice="amy")
    speech = await service.speak(prompt)                         # Speech(wav, ids, prompt_ids, ...)

Prompts and sampling are the LM teacher's (:class:`engine.teachers.lm.LMTeacher`: the Step-Audio
system brief, tagged text and clone turn, the 2:3 audio constraint, upstream decoding), so a
served student hears exactly what it was distilled on. The engines' ``generate`` returns whole
generations, so requests are batched per engine call: the ones that arrive while a batch runs
form the next batch (up to ``max_batch``); there is no per-step scheduler here.
"""
from __future__ import annotations

import asyncio
import dataclasses
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from engine.codec import load_codec
from engine.instructions import Instruction
from engine.prompts import ClonePrompt, build_tts_prompt
from engine.speakers import Speaker, load_speakers
from engine.task import Task
from engine.teachers.lm import LMTeacher, clone_turn, convert_layout
from engine.tokens import GROUP, STEP_AUDIO, TOKENS_PER_SECOND, check_audio_ids
from manifests.errors import UserError
from pipelines.evaluate import check_codec, check_student, pick_engine
from pipelines.serve.voices import Voice, VoiceStore

DEFAULT_VOICE = "default"  # the student's own voice: no clone turn


class VoiceNotFound(UserError):
    """A ``voice`` that is neither built in nor registered."""


@dataclass
class Prompt:
    """One request, ready for the engine: prompt ids and SamplingParams."""

    ids: list[int]
    params: object
    voice: str
    instruction: Instruction


@dataclass
class Speech:
    """One generated utterance: ``wav float32 [samples]`` at ``sample_rate``, the audio ids
    (Step-Audio layout), how many prompt ids it took and the engine's finish reason."""

    wav: np.ndarray
    sample_rate: int
    ids: np.ndarray
    prompt_ids: int
    finish_reason: str

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


class SpeechService:
    """A student checkpoint served with its codec.

    Args:
        student: the student dir (``engine.models.export`` layout; checked as ``eval`` does).
        engine: ``auto``, ``torch`` or ``vllm`` (:func:`pipelines.evaluate.pick_engine`).
        codec: ``melvq`` or a weights file; refused when it is not the one the student's corpus
            was tokenized with (``STUDENT/train.json``).
        max_batch: requests decoded together by one engine call.
        max_seconds: audio length cap per request.
        voices: the folder of registered voices (default ``STUDENT/voices``, made on the first
            registration; see :class:`pipelines.serve.voices.VoiceStore`).
    Each function in ``batch_listeners`` is called with the size of every engine batch (metrics).
    """

    def __init__(self, student, engine: str = "auto", codec: str = "melvq", max_batch: int = 8,
                 max_seconds: float = 30.0, voices=None):
        if max_batch < 1 or not max_seconds > 0:
            raise UserError(f"max_batch must be >= 1 and max_seconds > 0, got {max_batch} and {max_seconds}")
        self.student, student_type = check_student(student)
        self.kind = pick_engine(student_type, engine)
        self.codec = load_codec(codec)
        check_codec(self.student, self.codec)
        batch_option = "max_batch" if self.kind == "torch" else "max_num_seqs"
        self.teacher = LMTeacher(f"{self.kind}:{self.student}?max_seconds={max_seconds:g}&{batch_option}={max_batch}",
                                 codec=self.codec)
        self.model_id = self.student.name
        self.max_seconds = max_seconds
        self.max_batch = max_batch
        self.builtin = {s.name: s for s in load_speakers("builtin")}
        self.registered = VoiceStore(voices or self.student / "voices", self.codec,
                                     reserved={DEFAULT_VOICE, *self.builtin})
        self._builtin_ids: dict = {}
        self.teacher.engine  # load the model now: the first request should not pay for it
        self.batch_listeners: list = []
        self._batcher = _Batcher(self.teacher.engine, max_batch, self.batch_listeners)

    # -- requests ----------------------------------------------------------------------------
    def voice(self, name: str) -> Speaker | Voice | None:
        """The clone prompt of ``name`` (None for the default voice); VoiceNotFound otherwise."""
        if name == DEFAULT_VOICE:
            return None
        found = self.builtin.get(name) or self.registered.get(name)
        if found is None:
            raise VoiceNotFound(f"unknown voice {name!r}; voices: {', '.join(self.voice_names())}")
        return found

    def voice_names(self) -> list[str]:
        return [DEFAULT_VOICE, *sorted(self.builtin), *self.registered.names()]

    def clone_prompt(self, name: str) -> ClonePrompt | None:
        """The few-shot clone turn of voice ``name``: a built-in prompt is tokenized on first use
        (as the LM teacher does), a registered one was tokenized when it was registered."""
        voice = self.voice(name)
        layout = self.teacher.layout
        if isinstance(voice, Voice):
            ids = convert_layout(np.asarray(voice.ids, np.int64), STEP_AUDIO, layout)
            return ClonePrompt(voice.name, voice.text, tuple(int(i) for i in ids))
        if voice is None:
            return None
        task = Task(id=name, text="", lang="", speaker=voice.name, speaker_wav=voice.wav_path, speaker_text=voice.text)
        return clone_turn(task, layout, lambda: self.codec, self._builtin_ids)

    def prepare(self, text: str, instruction: Instruction, voice: str = DEFAULT_VOICE, seed: int | None = None,
                sampling: dict | None = None) -> Prompt:
        """The prompt of one request: the LM teacher's Step-Audio TTS prompt and sampling.

        Args:
            instruction: from :func:`pipelines.serve.instructions.understand` (checked against the
                text's language there).
            sampling: ``temperature``, ``top_k``, ``top_p`` over the upstream defaults.
        Raises:
            UserError: a voice, text or sampling option that cannot be used.
        """
        if not text.strip():
            raise UserError("input is empty")
        ids = build_tts_prompt(text, instruction, self.teacher.tokenizer, self.clone_prompt(voice))
        context = self.teacher.context
        if context and len(ids) + GROUP > context:
            raise UserError(f"the input makes a prompt of {len(ids)} ids, which leaves no room for audio "
                            f"in the model's {context}-id context; send a shorter input")
        chosen = {k: v for k, v in (sampling or {}).items() if v is not None}
        task = Task(id="request", text=text, lang=instruction.lang, seed=0)
        params = dataclasses.replace(self.teacher.sampling_params(task), seed=seed, **chosen)
        return Prompt(ids, params, voice, instruction)

    async def speak(self, prompt: Prompt) -> Speech:
        """Generate and decode one prompt (batched with whatever else is waiting)."""
        gen = await asyncio.wrap_future(self._batcher.submit(prompt.ids, prompt.params))
        return await asyncio.to_thread(self.decode, gen, len(prompt.ids))

    def decode(self, gen, prompt_ids: int) -> Speech:
        """A Generation -> Speech (the ids checked against the 2:3 pattern, decoded by the codec)."""
        content = gen.content_ids((self.teacher.tokenizer.eot,))
        ids = convert_layout(check_audio_ids(content, self.teacher.layout), self.teacher.layout, STEP_AUDIO)
        wav = self.codec.detokenize(ids) if ids.size else np.zeros(0, np.float32)
        return Speech(wav, self.codec.sample_rate, ids.astype(np.int32), prompt_ids, gen.finish_reason)

    @property
    def queued(self) -> int:
        """Requests waiting for the engine."""
        return self._batcher.waiting

    def info(self) -> dict:
        return {"model": self.model_id, "student": str(self.student), "engine": self.kind,
                "codec": self.codec.version, "max_batch": self.max_batch,
                "max_seconds": self.teacher.options["max_seconds"], "ids_per_second": round(TOKENS_PER_SECOND, 2)}

    def close(self) -> None:
        self._batcher.close()
        self.teacher.close()


class _Batcher:
    """One thread that owns the engine: it takes every request waiting (up to ``max_batch``),
    runs them as one ``generate`` call, and resolves their futures."""

    def __init__(self, engine, max_batch: int, listeners: list):
        self.engine, self.max_batch, self.listeners = engine, max_batch, listeners
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.waiting = 0
        self._thread = threading.Thread(target=self._loop, name="stepforge-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, ids: list[int], params) -> Future:
        fut: Future = Future()
        with self._lock:
            self.waiting += 1
        self._queue.put((ids, params, fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            with self._lock:
                self.waiting -= len(batch)
            batch = [b for b in batch if b[2].set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list) -> None:
        for listen in self.listeners:
            listen(len(batch))
        start = time.perf_counter()
        try:
            gens = self.engine.generate([b[0] for b in batch], [b[1] for b in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][2].set_exception(exc)
                return
            for one in batch:  # find the request that fails: one at a time
                self._run([one])
            return
        for (_ids, _params, fut), gen in zip(batch, gens):
            gen.info["engine_s"] = time.perf_counter() - start
            fut.set_result(gen)
