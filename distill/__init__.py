"""stepforge distill: KD losses (``DistillLoss``), data, the DeepSpeed recipe. The student models
it trains live in :mod:`engine.models` (the LM engines serve them); their names are re-exported here.

    distill/config.py      the YAML config: defaults, overrides, validation, STUDENT/distill.yaml
    distill/preflight.py   every check that can refuse a run before training starts
    distill/data.py        accepted rows of runs -> packed training sequences
    distill/losses.py      sequence- and token-level KD through the codebook-restricted head
    distill/recipe.py      setup / train / save_checkpoint / cleanup (DeepSpeed)
    distill/checkpoints.py the training state and the checkpoint dir
    distill/exporter.py    best-step and final exports of the student
    distill/metrics.py     metrics.jsonl, TensorBoard, W&B

Names are re-exported lazily so ``import distill.<module>`` does not load torch by itself.
"""
from importlib import import_module

_MODELS = ("COMPACT_LAYOUT", "COMPACT_VOCAB", "CausalLMOutput", "KVCache", "LlamaStudent",
           "LlamaStudentConfig", "Step1Config", "Step1ForCausalLM", "StudentRoPE", "alibi_slopes",
           "alibi_sqrt_attention", "build_student", "export", "load_student", "sqrt_alibi_bias",
           "token_layout")

# name -> the distill module that defines it
_OWN = {
    "DistillLoss": "losses", "allowed_mask": "losses", "full_vocab_loss": "losses",
    "ConfigError": "config", "load_config": "config",
    "Corpus": "data", "DataError": "data", "PackPlan": "data", "SequenceBuilder": "data",
    "DistillRecipe": "recipe",
    "CheckpointDir": "checkpoints", "TrainState": "checkpoints",
    "BestTracker": "exporter", "StudentExporter": "exporter",
    "MetricsLog": "metrics", "MetricWindow": "metrics",
}

__all__ = list(_MODELS) + list(_OWN)


def __getattr__(name: str):
    if name in _MODELS:
        return getattr(import_module("engine.models"), name)
    if name in _OWN:
        return getattr(import_module(f"distill.{_OWN[name]}"), name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
