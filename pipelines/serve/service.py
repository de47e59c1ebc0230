"""The speech service behind the HTTP app: a student on the LM engine stack, its codec, and the
scheduler that feeds the engine.

    service = SpeechService("student/", max_seconds=20)        # loads engine + codec, checks both
    prompt = service.prepare(text="Hello.", instruction=understand(None, text="Hello."), voice="amy")
    speech = await service.speak(prompt)                         # Speech(wav, ids, prompt_ids, ...)
    utterance = service.start(prompt, stream=True)               # or audio as it is generated:
    async for samples in utterance.audio(): ...                  #   float32 pieces; then .speech

Prompts and sampling are the LM teacher's (:class:`engine.teachers.lm.LMTeacher`: the Step-Audio
system brief, tagged text and clone turn, the 2:3 audio constraint, upstream decoding), so a
served student hears exactly what it was distilled on.

Both engines batch continuously: requests join and leave the running batch at every step and
their ids stream out as they are sampled. The torch engine runs under
:class:`engine.lm.stream.ContinuousBatcher` (the system + clone turns' KV computed once per voice
and style); vLLM under :class:`engine.lm.vllm_stream.VLLMStreamBatcher` (its own scheduler and
prefix cache, stepped by one thread). A streamed utterance is decoded incrementally
(:mod:`engine.codec.stream`) when the codec can; otherwise it is decoded whole at its end.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from engine.codec import load_codec
from engine.codec.stream import VocoderBatcher, lower_priority, open_stream
from engine.instructions import Instruction
from engine.lm.base import Generation
from engine.lm.stream import FINISH_CANCELLED, ContinuousBatcher
from engine.prompts import ClonePrompt, tts_prompt_parts
from engine.speakers import Speaker, load_speakers
from engine.stepaudio.tts_prompt import BOT, tagged_text
from engine.task import Task
from engine.teachers.lm import LMTeacher, clone_turn, convert_layout
from engine.tokens import GROUP, STEP_AUDIO, TOKENS_PER_SECOND, check_audio_ids
from manifests.errors import UserError
from pipelines.evaluate import check_codec, check_student, pick_engine
from pipelines.serve.voices import Voice, VoiceStore

DEFAULT_VOICE = "default"  # the student's own voice: no clone turn
# Decode and vocoder threads run this much nicer than the engine's thread, which every stream
# waits on. bench/serve_load.py at 32 clients, two pairs of runs back to back: 16 -> 22 and
# 22 -> 27 audio s per wall s (runs of the same code on this 2-core VM differ by up to 25%).
DECODE_NICE = 5


class VoiceNotFound(UserError):
    """A ``voice`` that is neither built in nor registered."""


class GenerationFailed(RuntimeError):
    """The engine could not generate a request (the message says why)."""


@dataclass
class Prompt:
    """One request, ready for the engine: prompt ids (the first ``prefix`` of them shared with
    other requests of the same voice and style) and SamplingParams."""

    ids: list[int]
    params: object
    voice: str
    instruction: Instruction
    prefix: int = 0


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
        max_batch: requests decoding together.
        max_seconds: audio length cap per request.
        voices: the folder of registered voices (default ``STUDENT/voices``, made on the first
            registration; see :class:`pipelines.serve.voices.VoiceStore`).
        decode_threads: threads that decode and encode audio (:meth:`off_loop`), each computing
            on one core; default ``max_batch`` plus the cores this process may use, since a
            streaming request's decode waits there while the shared vocoder phases its block
            with the other streams' (:class:`engine.codec.stream.VocoderBatcher`).
        lm: an LM engine already loaded over ``student`` (of kind ``engine``) to use instead of
            loading one; the service then drives it alone until ``close``.
    Each function in ``batch_listeners`` is called with the batch size of every engine step.
    """

    def __init__(self, student, engine: str = "auto", codec: str = "melvq", max_batch: int = 8,
                 max_seconds: float = 30.0, voices=None, lm=None, decode_threads: int | None = None):
        if max_batch < 1 or not max_seconds > 0:
            raise UserError(f"max_batch must be >= 1 and max_seconds > 0, got {max_batch} and {max_seconds}")
        if decode_threads is not None and decode_threads < 1:
            raise UserError(f"decode_threads must be >= 1, got {decode_threads}")
        self.student, student_type = check_student(student)
        self.kind = pick_engine(student_type, engine)
        self.codec = load_codec(codec)
        check_codec(self.student, self.codec)
        batch_option = "max_batch" if self.kind == "torch" else "max_num_seqs"
        self.teacher = LMTeacher(f"{self.kind}:{self.student}?max_seconds={max_seconds:g}&{batch_option}={max_batch}",
                                 codec=self.codec, engine=lm)
        self.model_id = self.student.name
        self.max_seconds = max_seconds
        self.max_batch = max_batch
        self.builtin = {s.name: s for s in load_speakers("builtin")}
        self.registered = VoiceStore(voices or self.student / "voices", self.codec,
                                     reserved={DEFAULT_VOICE, *self.builtin})
        self._builtin_ids: dict = {}
        self.batch_listeners: list = []
        engine_ = self.teacher.engine  # load the model now: the first request should not pay for it
        if self.kind == "torch":
            self.scheduler = ContinuousBatcher(engine_, max_batch)
        else:
            from engine.lm.vllm_stream import VLLMStreamBatcher

            self.scheduler = VLLMStreamBatcher(engine_)
        self.scheduler.step_listeners.append(self._batch)
        self._owns_engine = lm is None
        self.decode_threads = decode_threads or max_batch + len(os.sched_getaffinity(0))
        self.vocoder = VocoderBatcher(nice=DECODE_NICE)
        self._decoders = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="stepforge-decode",
                                            initializer=_decode_thread)
        self.closed = False

    def _batch(self, size: int) -> None:
        for listen in self.batch_listeners:
            listen(size)

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
        ids, prefix = self.prompt_ids(text, instruction, voice)
        context = self.teacher.context
        if context and len(ids) + GROUP > context:
            raise UserError(f"the input makes a prompt of {len(ids)} ids, which leaves no room for audio "
                            f"in the model's {context}-id context; send a shorter input")
        chosen = {k: v for k, v in (sampling or {}).items() if v is not None}
        task = Task(id="request", text=text, lang=instruction.lang, seed=0)
        params = dataclasses.replace(self.teacher.sampling_params(task), seed=seed, **chosen)
        return Prompt(ids, params, voice, instruction, prefix=prefix)

    def prompt_ids(self, text: str, instruction: Instruction, voice: str) -> tuple[list[int], int]:
        """(the prompt ids, how many leading ids requests with this voice and style share). With
        the released Step-Audio stack the prompt is upstream's TTS-3B prompt, as the LM teacher
        builds it; else the project's (:func:`engine.prompts.tts_prompt_parts`)."""
        prompter = self.teacher.step_prompter
        if prompter is None:
            shared, own = tts_prompt_parts(text, instruction, self.teacher.tokenizer, self.clone_prompt(voice))
            return shared + own, len(shared)
        found = self.voice(voice)
        if isinstance(found, Voice):  # tokenized once, when it was registered
            ids = prompter.build(tagged_text(text, instruction), found.text, found.ids)
        else:  # a built-in speaker, or the codec's default voice
            task = Task(id="request", text=text, lang=instruction.lang, speaker=found.name if found else "",
                        **{k: v for k, v in dataclasses.asdict(instruction).items() if k != "speaker"})
            ids = self.teacher.prompt(task)
        return ids, last_turn(ids, [BOT, *prompter.tokenizer.encode("human\n")])

    async def off_loop(self, fn, *args):
        """``fn(*args)`` on a decode thread (codec decodes, audio encoding), awaited.

        Concurrency across requests is the parallelism: each thread computes on one core (torch's
        OpenMP team of one). A torch op that opens a team per calling thread on every core, from
        many threads at once, oversubscribes the cores several times over: a stream decode cost
        282 ms of CPU per audio second that way on 2 busy cores, 38 ms on one thread each.
        """
        return await asyncio.get_running_loop().run_in_executor(self._decoders, fn, *args)

    def start(self, prompt: Prompt, stream: bool = True) -> "Utterance":
        """Submit one prompt; the :class:`Utterance` yields its audio (streamed: as the ids come
        and settle; else decoded whole at the end). Call from the event loop."""
        if self.closed:
            raise GenerationFailed("the server is shutting down")
        return Utterance(self, prompt, stream)

    async def speak(self, prompt: Prompt) -> Speech:
        """Generate and decode one prompt whole (batched with whatever else is running)."""
        utterance = self.start(prompt, stream=False)
        try:
            async for _ in utterance.audio():
                pass
        finally:
            utterance.cancel()
        return utterance.speech

    def audio_ids(self, gen: Generation) -> np.ndarray:
        """A finished generation's audio ids in the Step-Audio layout (checked against the 2:3
        pattern), without its stop id."""
        content = gen.content_ids((self.teacher.tokenizer.eot,))
        ids = convert_layout(check_audio_ids(content, self.teacher.layout), self.teacher.layout, STEP_AUDIO)
        return ids.astype(np.int32)

    def decode(self, gen: Generation, prompt: Prompt) -> Speech:
        """A Generation -> Speech, decoded whole by the codec."""
        ids = self.audio_ids(gen)
        return Speech(self.decode_ids(ids, prompt), self.codec.sample_rate, ids, len(prompt.ids), gen.finish_reason)

    def decode_ids(self, ids: np.ndarray, prompt: Prompt) -> np.ndarray:
        """Step-Audio layout ids -> waveform, through the codec's decode stage with the request's
        voice and style (the Step-Audio decoder speaks like the voice's prompt recording and
        takes its Music model for rap and humming; melvq has one voice)."""
        if not ids.size:
            return np.zeros(0, np.float32)
        voice = self.voice(prompt.voice)
        record = {"id": "request", "tokens": ids, "speaker_wav": voice.wav_path if voice else "",
                  "speaker": voice.name if isinstance(voice, Speaker) else "", "style": prompt.instruction.style}
        [out] = self.codec.process([record])
        if out.get("error"):
            raise GenerationFailed(out["error"])
        return np.asarray(out["audio"], np.float32)

    @property
    def queued(self) -> int:
        """Requests waiting for the engine."""
        return self.scheduler.waiting

    def info(self) -> dict:
        return {"model": self.model_id, "student": str(self.student), "engine": self.kind,
                "codec": self.codec.version, "max_batch": self.max_batch,
                "scheduler": "continuous",
                "max_seconds": self.teacher.options["max_seconds"], "ids_per_second": round(TOKENS_PER_SECOND, 2),
                "decode_threads": self.decode_threads}

    def close(self) -> None:
        self.closed = True
        self.scheduler.close()
        self._decoders.shutdown(wait=False, cancel_futures=True)
        self.vocoder.close()
        if self._owns_engine:
            self.teacher.close()


def _decode_thread() -> None:
    torch.set_num_threads(1)  # one core each: the threads are the parallelism (SpeechService.off_loop)
    lower_priority(DECODE_NICE)


def last_turn(ids: list[int], header: list[int]) -> int:
    """Where the last turn starting with ``header`` (BOT + role) begins: the request's own turn
    (BOT is a special id no text encodes to). 0 when there is none."""
    n = len(header)
    for start in range(len(ids) - n, -1, -1):
        if ids[start:start + n] == header:
            return start
    return 0


class Utterance:
    """One prompt in the engine: ids arrive as they are sampled, audio leaves as it settles.

    ``audio()`` yields float32 pieces at the codec's rate; once it ends, ``speech`` holds the
    whole utterance. ``cancel()`` (a client that left) takes the request out of the batch at the
    engine's next step. Raises GenerationFailed (from ``audio()``) when the engine fails it.
    """

    def __init__(self, service: SpeechService, prompt: Prompt, stream: bool):
        self.service, self.prompt, self.stream = service, prompt, stream
        self.speech: Speech | None = None
        self.first_audio: float | None = None  # perf_counter of the first samples out
        # The engine's thread leaves ids here and wakes audio() once per batch of news: when a
        # stream has two groups to decode, or at the end (per sampled id, 32 streams' wake-ups
        # kept the event loop busier than anything else in the server).
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._end: tuple | None = None  # (the finished Generation or None, an error or None)
        self._news = asyncio.Event()
        self._signalled = False
        want = 2 * GROUP if stream else None
        loop = asyncio.get_running_loop()

        def on_ids(ids, done, error) -> None:  # on the engine's thread
            with self._lock:
                self._ids.extend(ids)
                if done is not None or error is not None:
                    self._end = (done, error)
                if self._signalled or (self._end is None and (want is None or len(self._ids) < want)):
                    return
                self._signalled = True
            loop.call_soon_threadsafe(self._news.set)

        self._handle = service.scheduler.submit(prompt.ids, prompt.params, on_ids, prefix=prompt.prefix)

    def cancel(self) -> None:
        self._handle.cancel()

    async def _next(self) -> tuple[list[int], object, BaseException | None]:
        """The ids sampled since the last call, then the Generation and error once finished."""
        await self._news.wait()
        with self._lock:
            self._news.clear()
            self._signalled = False
            ids, self._ids = self._ids, []
            done, error = self._end or (None, None)
        return ids, done, error

    async def audio(self):
        service = self.service
        layout = service.teacher.layout
        decoder = (open_stream(service.codec, lambda ids: service.decode_ids(ids, self.prompt), service.vocoder)
                   if self.stream else None)
        pending: list[int] = []  # sampled ids not yet given to the decoder (a partial group)
        pieces: list[np.ndarray] = []
        while True:
            ids, done, error = await self._next()
            if error is not None:
                raise GenerationFailed(f"{type(error).__name__}: {error}") from error
            if done is not None and done.finish_reason == FINISH_CANCELLED:
                return
            if decoder is not None and ids:
                pending.extend(i for i in ids if i not in self.prompt.params.stop_token_ids)
                whole = len(pending) - len(pending) % GROUP
                if whole >= 2 * GROUP or (done is not None and whole):
                    chunk = convert_layout(np.asarray(pending[:whole], np.int64), layout, STEP_AUDIO)
                    del pending[:whole]
                    samples = await service.off_loop(decoder.push, chunk)
                    if len(samples):
                        yield self._out(samples, pieces)
            if done is None:
                continue
            if decoder is None:
                self.speech = await service.off_loop(service.decode, done, self.prompt)
                if len(self.speech.wav):
                    yield self._out(self.speech.wav, [])
                return
            ids_out = service.audio_ids(done)  # checks the whole utterance's pattern
            tail = await service.off_loop(decoder.finish)
            if len(tail):
                yield self._out(tail, pieces)
            wav = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
            self.speech = Speech(wav, service.codec.sample_rate, ids_out, len(self.prompt.ids), done.finish_reason)
            return

    def _out(self, samples: np.ndarray, pieces: list) -> np.ndarray:
        if self.first_audio is None:
            self.first_audio = time.perf_counter()
        pieces.append(samples)
        return samples
