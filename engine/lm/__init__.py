"""The LM engine behind teacher and student: one interface (``LMEngine.generate``), shared
sampling rules for audio-constrained decoding, and the PyTorch backend ``TorchEngine``."""
from engine.lm.base import (FINISH_LENGTH, FINISH_STOP, Generation, LMEngine, SamplingParams,
                            check_prompts, per_request)
from engine.lm.sampling import (AudioConstraint, AudioLogitsProcessor, allowed_ids,
                                filter_top_k_top_p, repetition_ban, sample)


def __getattr__(name: str):
    # TorchEngine pulls in the student models; load it only when asked for.
    if name == "TorchEngine":
        from engine.lm.torch_engine import TorchEngine

        return TorchEngine
    raise AttributeError(f"module 'engine.lm' has no attribute {name!r}")


__all__ = ["AudioConstraint", "AudioLogitsProcessor", "FINISH_LENGTH", "FINISH_STOP", "Generation",
           "LMEngine", "SamplingParams", "TorchEngine", "allowed_ids", "check_prompts",
           "filter_top_k_top_p", "per_request", "repetition_ban", "sample"]
