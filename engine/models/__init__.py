"""Student models: ``Step1ForCausalLM`` (sqrt-ALiBi, the Step-Audio-TTS-3B layout) and the RoPE
``LlamaStudent`` that vLLM serves on CPU; presets ``tts-3b``, ``small``, ``tiny``; HF export."""
from .config import COMPACT_LAYOUT, COMPACT_VOCAB, LlamaStudentConfig, Step1Config
from .export import export, load_student, token_layout
from .rope import LlamaStudent, StudentRoPE
from .attention import alibi_slopes, alibi_sqrt_attention, sqrt_alibi_bias
from .cache import KVCache
from .step1 import CausalLMOutput, Step1ForCausalLM


def build_student(kind: str = "step1", preset: str = "tiny", seed: int = 0, **overrides):
    """A freshly initialised student: ``kind`` ``step1`` or ``llama`` (RoPE), a preset name."""
    if kind == "step1":
        return Step1ForCausalLM(Step1Config.preset(preset, **overrides)).init_weights(seed)
    if kind in ("llama", "rope"):
        return LlamaStudent(LlamaStudentConfig.preset(preset, **overrides)).init_weights(seed)
    raise ValueError(f"unknown student kind {kind!r}; choose step1 or llama")


__all__ = ["COMPACT_LAYOUT", "COMPACT_VOCAB", "CausalLMOutput", "KVCache", "LlamaStudent",
           "LlamaStudentConfig", "Step1Config", "Step1ForCausalLM", "StudentRoPE", "alibi_slopes",
           "alibi_sqrt_attention", "build_student", "export", "load_student", "sqrt_alibi_bias",
           "token_layout"]
