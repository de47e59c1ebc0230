"""Build an LM engine from a spec string: ``KIND:LOCATION[?key=value&...]``.

    make_engine("vllm:student/?kv_cache_gib=0.5")     # VLLMEngine (in-process vLLM)
    make_engine("http://127.0.0.1:8000")              # HTTPEngine ("http:" prefix optional)
    make_engine("torch:student/?max_batch=16")        # TorchEngine

Options per kind (values are parsed to the types shown):

| kind | option | meaning |
|---|---|---|
| vllm | tp (int), dtype, max_model_len (int), kv_cache_gib (float), seed (int), max_num_seqs (int), gpu_memory_utilization (float), logprobs_mode | ``VLLMEngine`` arguments |
| http | model, concurrency (int), timeout (float, s), retries (int), backoff (float, s), backoff_max (float, s), jitter (float, 0-1), max_model_len (int), vocab_size (int), allowed_ids (bool) | ``HTTPEngine`` arguments; the bearer token comes from ``$STEPFORGE_API_KEY`` or ``$OPENAI_API_KEY``, never the spec |
| torch | device, dtype, max_batch (int), threads (int) | ``TorchEngine`` arguments |
"""
from __future__ import annotations

import os
from urllib.parse import parse_qsl

from engine.lm.base import LMEngine
from manifests.errors import UserError


def _bool(v: str) -> bool:
    if str(v).lower() in ("1", "true", "yes", "on"):
        return True
    if str(v).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {v!r}")  # engine_kwargs names the option


# kind -> option -> (constructor argument, type)
OPTIONS = {
    "vllm": {"tp": ("tensor_parallel_size", int), "dtype": ("dtype", str),
             "max_model_len": ("max_model_len", int), "kv_cache_gib": ("kv_cache_gib", float),
             "seed": ("seed", int), "max_num_seqs": ("max_num_seqs", int),
             "gpu_memory_utilization": ("gpu_memory_utilization", float),
             "logprobs_mode": ("logprobs_mode", str)},
    "http": {"model": ("model", str), "concurrency": ("concurrency", int),
             "timeout": ("timeout_s", float), "retries": ("retries", int),
             "backoff": ("backoff_s", float), "backoff_max": ("backoff_max_s", float),
             "jitter": ("jitter", float),
             "max_model_len": ("max_model_len", int), "vocab_size": ("vocab_size", int),
             "allowed_ids": ("allowed_ids", _bool)},
    "torch": {"device": ("device", str), "dtype": ("dtype", str), "max_batch": ("max_batch", int),
              "threads": ("num_threads", int)},
}
KINDS = tuple(OPTIONS)


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``"vllm:DIR?topk=5"`` -> ``("vllm", "DIR", {"topk": "5"})``. An ``http(s)://`` URL
    without a kind is ``http``. Raises UserError on an unknown kind or an empty location."""
    spec = spec.strip()
    if spec.startswith(("http://", "https://")):
        spec = "http:" + spec
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS:
        raise UserError(f"unknown LM engine {spec!r}: expected vllm:DIR, http:URL or torch:DIR")
    location, _, query = rest.partition("?")
    if not location:
        raise UserError(f"{kind}: needs a location, e.g. {kind}:{'URL' if kind == 'http' else 'DIR'}")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError:
        raise UserError(f"bad options {query!r} in {spec!r}: expected key=value&key=value") from None
    return kind, location, options


def engine_kwargs(kind: str, options: dict) -> dict:
    """Spec options as constructor arguments (UserError naming an unknown or bad option)."""
    known = OPTIONS[kind]
    kwargs = {}
    for key, value in options.items():
        if key not in known:
            raise UserError(f"unknown {kind} option {key!r}; known: {', '.join(sorted(known))}")
        name, typ = known[key]
        try:
            kwargs[name] = typ(value)
        except ValueError:
            raise UserError(f"{kind} option {key}={value!r} is not a valid {typ.__name__}") from None
    return kwargs


def make_engine(spec: str, **options) -> LMEngine:
    """An engine for ``spec`` (see the module docstring); ``options`` add to or override the
    spec's own ``?key=value`` options, by the same names."""
    kind, location, opts = parse_spec(spec)
    kwargs = engine_kwargs(kind, {**opts, **{k: str(v) for k, v in options.items()}})
    if kind == "vllm":
        from engine.lm.vllm_engine import VLLMEngine

        return VLLMEngine(location, **kwargs)
    if kind == "http":
        from engine.lm.http_engine import HTTPEngine

        key = os.environ.get("STEPFORGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        return HTTPEngine(location, api_key=key, **kwargs)
    from engine.lm.torch_engine import TorchEngine

    if "dtype" in kwargs:
        import torch

        kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    return TorchEngine(location, **kwargs)
