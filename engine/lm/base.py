"""The LM engine interface shared by every backend (PyTorch, vLLM in-process, HTTP).

    engine = TorchEngine("student/")
    params = SamplingParams(max_tokens=400, seed=7, logprobs=5,
                            audio_constraint=AudioConstraint(layout, max_seconds=20))
    [gen] = engine.generate([prompt_ids], params)
    gen.token_ids, gen.finish_reason, gen.topk_ids, gen.topk_logprobs

A backend turns prompts into continuations; it knows nothing of tasks or run directories. The
rules of audio-constrained decoding live in :mod:`engine.lm.sampling` so all backends agree.

What every backend must do (TorchEngine is the reference):
- generate at most ``params.token_budget()`` ids (the audio length cap folded in);
- keep a sampled stop id as the last of ``token_ids`` with finish_reason "stop", else "length";
- apply ``audio_constraint`` to every generated step, e.g. ``AudioLogitsProcessor(c, vocab)
  (logits[rows], generated_ids_per_row)`` inside a vLLM logits processor, or
  ``allowed_ids(generated, ...)`` per step where a server takes allowed-id lists;
- return top-k logprobs ``[n, k]`` per the ``logprobs_mode`` ("raw" = before any processing);
- give a seeded request the same output whatever else shares its batch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from engine.lm.sampling import AudioConstraint
from engine.prompts import EOT
from manifests.errors import UserError

FINISH_STOP = "stop"      # a stop id was sampled (it is the last of token_ids)
FINISH_LENGTH = "length"  # max_tokens, the audio length limit or the model's context ran out


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request.

    temperature: 0 means greedy; upstream Step-Audio samples at 0.7.
    top_p: nucleus mass in (0, 1]; 1 disables. top_k: 0 disables.
    max_tokens: cap on generated ids (the stop id included).
    seed: a request's own random stream; the same seed and prompt give the same output whatever
        else is in the batch. None: fresh randomness.
    stop_token_ids: ids that end the request (kept as its last token).
    logprobs: k > 0 returns the top-k ids and log-probabilities of every generated step.
    logprobs_mode: "raw" = log-softmax of the model's logits (what distillation wants);
        "processed" = after the audio constraint, bans and temperature.
    audio_constraint: restrict sampling to 2:3-interleaved audio ids (see AudioConstraint).
    """

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 8192
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = (EOT,)
    logprobs: int = 0
    logprobs_mode: str = "raw"
    audio_constraint: AudioConstraint | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.logprobs < 0:
            raise UserError(f"top_k and logprobs must be >= 0, got {self.top_k} and {self.logprobs}")
        if self.max_tokens < 1:
            raise UserError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.logprobs_mode not in ("raw", "processed"):
            raise UserError(f"logprobs_mode must be raw or processed, got {self.logprobs_mode!r}")
        object.__setattr__(self, "stop_token_ids", tuple(int(i) for i in self.stop_token_ids))

    def token_budget(self) -> int:
        """Generated ids allowed, the audio constraint's length limit included."""
        if self.audio_constraint is None:
            return self.max_tokens
        return self.audio_constraint.max_new_tokens(self.max_tokens)

    def with_seed(self, seed: int | None) -> "SamplingParams":
        return replace(self, seed=seed)


@dataclass
class Generation:
    """One request's continuation.

    token_ids: generated ids; ends with the stop id when ``finish_reason == "stop"``.
    topk_ids: ``int32 [n, k]`` and topk_logprobs ``float32 [n, k]`` (n = len(token_ids)), when
        logprobs were asked for.
    """

    token_ids: list[int]
    finish_reason: str
    topk_ids: np.ndarray | None = None
    topk_logprobs: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def content_ids(self, stop_token_ids: Sequence[int] = (EOT,)) -> list[int]:
        """``token_ids`` without a final stop id (e.g. the audio ids before EOT)."""
        if self.token_ids and self.token_ids[-1] in stop_token_ids:
            return self.token_ids[:-1]
        return list(self.token_ids)


def per_request(params: SamplingParams | Sequence[SamplingParams], n: int) -> list[SamplingParams]:
    """One SamplingParams per prompt (a single one applies to all)."""
    if isinstance(params, SamplingParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"{len(params)} SamplingParams for {n} prompts")
    return params


def check_prompts(prompts: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    """Prompts as lists of ints; ValueError naming the first empty prompt or out-of-vocab id."""
    out = []
    for i, p in enumerate(prompts):
        ids = [int(t) for t in p]
        if not ids:
            raise ValueError(f"prompt {i} is empty")
        bad = [t for t in ids if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has id {bad[0]} outside the vocabulary 0..{vocab_size - 1}")
        out.append(ids)
    return out


class LMEngine(ABC):
    """Generates continuations for batches of prompt ids. Backends: ``TorchEngine`` (here), vLLM
    in-process and OpenAI-compatible HTTP (elsewhere), all with these semantics."""

    name: str = "lm"

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Size of the model's output vocabulary."""

    @abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams]) -> list[Generation]:
        """One :class:`Generation` per prompt, in order.

        Args:
            prompts: token ids per request (e.g. from ``engine.prompts.build_tts_prompt``).
            params: one SamplingParams for all, or one per prompt.
        Raises:
            ValueError: an empty prompt or an id outside the vocabulary.
        """

    def close(self) -> None:
        """Release the model and any server or worker."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
