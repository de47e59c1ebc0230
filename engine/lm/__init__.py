"""The LM engine behind teacher and student: one interface (``LMEngine.generate``), shared
sampling rules for audio-constrained decoding, and three backends behind it:
``TorchEngine`` (PyTorch, KV-cached), ``VLLMEngine`` (vLLM in-process) and ``HTTPEngine`` (any
OpenAI-compatible completions server). ``make_engine("vllm:DIR" | "http:URL" | "torch:DIR")``
builds one from a spec string."""
from engine.lm.base import (FINISH_LENGTH, FINISH_STOP, Generation, LMEngine, SamplingParams,
                            check_prompts, per_request)
from engine.lm.constraint_args import audio_prefix, constraint_args, constraint_from_args
from engine.lm.errors import RequestError
from engine.lm.factory import make_engine, parse_spec
from engine.lm.sampling import (AudioConstraint, AudioLogitsProcessor, allowed_ids,
                                filter_top_k_top_p, repetition_ban, sample)

# Backends pull in the student models, vLLM or the HTTP client: load them only when asked for.
_LAZY = {"TorchEngine": "engine.lm.torch_engine", "VLLMEngine": "engine.lm.vllm_engine",
         "HTTPEngine": "engine.lm.http_engine"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.lm' has no attribute {name!r}")


__all__ = ["AudioConstraint", "AudioLogitsProcessor", "FINISH_LENGTH", "FINISH_STOP", "Generation",
           "HTTPEngine", "LMEngine", "RequestError", "SamplingParams", "TorchEngine", "VLLMEngine",
           "allowed_ids", "audio_prefix", "check_prompts", "constraint_args", "constraint_from_args",
           "filter_top_k_top_p", "make_engine", "parse_spec", "per_request", "repetition_ban",
           "sample"]
