"""stepforge distill: KD losses (``DistillLoss``), data, the DeepSpeed recipe. The student models
it trains live in :mod:`engine.models` (the LM engines serve them); their names are re-exported here.

Names are re-exported lazily so ``import distill.<module>`` does not load torch by itself.
"""
from importlib import import_module

_MODELS = ("COMPACT_LAYOUT", "COMPACT_VOCAB", "CausalLMOutput", "KVCache", "LlamaStudent",
           "LlamaStudentConfig", "Step1Config", "Step1ForCausalLM", "StudentRoPE", "alibi_slopes",
           "alibi_sqrt_attention", "build_student", "export", "load_student", "sqrt_alibi_bias",
           "token_layout")

_LOSSES = ("DistillLoss", "allowed_mask", "full_vocab_loss")

__all__ = list(_MODELS) + list(_LOSSES)


def __getattr__(name: str):
    if name in _MODELS:
        return getattr(import_module("engine.models"), name)
    if name in _LOSSES:
        return getattr(import_module("distill.losses"), name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
