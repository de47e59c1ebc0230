"""``Step1ForCausalLM``: the Step-Audio-TTS-3B architecture (sqrt-ALiBi, GQA, SwiGLU, RMSNorm).

    model = Step1ForCausalLM.from_pretrained("Step-Audio-TTS-3B")      # a real checkpoint dir
    model = Step1ForCausalLM(Step1Config.preset("tiny")).init_weights(seed=0)   # a CPU student
    out = model(input_ids, use_cache=True)                              # out.logits [batch, seq, vocab]
    out = model(next_ids, past_key_values=out.past_key_values, use_cache=True)

No rotary embeddings: attention carries the sqrt-ALiBi bias (``attention.py``). This file and the
ones it imports use only torch and safetensors, so exported checkpoints carry them for
``trust_remote_code`` loaders; where stepforge's ``kernels`` package is importable, a forward
without cache history on CUDA runs its fused Triton attention instead of the bias reference.

Packed training batches (several sequences back to back, block-diagonal causal attention,
positions restarting at 0 in each):

    h = model.model(input_ids, cu_seqlens=cu)     # input_ids [1, total], cu int32 [n + 1]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (aligned_sqrt_alibi_bias, alibi_slopes, alibi_sqrt_attention, allowed_keys,
                        packed_attention, sqrt_alibi_bias)
from .cache import KVCache, StepInputs, packed_step_inputs, step_inputs
from .config import Step1Config
from .weights import load_weights, read_weights


_UNSET = object()
_kernels = _UNSET


def fused_kernels():
    """stepforge's ``kernels`` package, or None where it is absent (a checkpoint loaded with
    ``trust_remote_code`` on a machine without stepforge; an unrelated package of that name)."""
    global _kernels
    if _kernels is _UNSET:
        try:
            import kernels
        except ImportError:
            kernels = None
        _kernels = kernels if hasattr(kernels, "alibi_attention") else None
    return _kernels


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        y = F.rms_norm(x.float(), self.weight.shape, None, self.eps)
        return y.to(x.dtype) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Step1Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_groups = cfg.num_attention_heads, cfg.num_kv_heads
        self.head_dim = d = cfg.head_dim
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.n_groups * d, bias=False)
        self.v_proj = nn.Linear(h, self.n_groups * d, bias=False)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=False)

    def position(self, q, k, step: StepInputs):
        return q, k

    def attend(self, q, k, v, step: StepInputs) -> torch.Tensor:
        if step.kernel is not None:
            return step.kernel(q, k, v, step.slopes, cu_seqlens=step.cu_seqlens,
                               max_seqlen=step.max_seqlen or None)
        if step.cu_seqlens is not None:
            return packed_attention(q, k, v, step.offsets, lambda n, t: _packed_bias(step, n, t),
                                    step.shared_prefix)
        return alibi_sqrt_attention(q, k, v, step.slopes, step.q_pos, step.k_pos, step.key_ok,
                                    bias=step.mask)

    def forward(self, x: torch.Tensor, step: StepInputs, layer: int) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_groups, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_groups, self.head_dim).transpose(1, 2)
        q, k = self.position(q, k, step)
        if step.cache is not None:
            k, v = step.cache.update(layer, k, v)
        out = self.attend(q, k, v, step)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, self.n_heads * self.head_dim))


def _packed_bias(step: StepInputs, n: int, t: int) -> torch.Tensor:
    """The causal sqrt-ALiBi bias of ``n`` packed queries at the end of ``t`` keys (``t > n``
    after a shared prefix), shared by all layers."""
    if (n, t) not in step.mask:
        step.mask[n, t] = aligned_sqrt_alibi_bias(step.slopes, t - n, n, t, None, step.mask["dtype"])
    return step.mask[n, t]


class Step1DecoderLayer(nn.Module):
    def __init__(self, cfg, attention_cls=Step1Attention):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = attention_cls(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    dropout = 0.0  # on each residual branch while training (set by Step1Model.set_dropout)

    def forward(self, x: torch.Tensor, step: StepInputs, layer: int) -> torch.Tensor:
        x = x + self._drop(self.self_attn(self.input_layernorm(x), step, layer))
        return x + self._drop(self.mlp(self.post_attention_layernorm(x)))

    def _drop(self, branch: torch.Tensor) -> torch.Tensor:
        if self.training and self.dropout:
            return F.dropout(branch, self.dropout, training=True)
        return branch


class Step1Model(nn.Module):
    """Embeddings, decoder layers and the final norm (``model.*`` weights)."""

    attention_cls = Step1Attention

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Step1DecoderLayer(cfg, self.attention_cls)
                                    for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self._slopes: dict = {}

    def set_dropout(self, p: float) -> None:
        """Residual dropout ``p`` on every layer's attention and MLP outputs, in training mode only
        (a training setting: it is not part of the exported config)."""
        for layer in self.layers:
            layer.dropout = float(p)

    def slopes(self, device) -> torch.Tensor:
        key = str(device)
        if key not in self._slopes:
            self._slopes[key] = alibi_slopes(self.config.num_attention_heads).to(device)
        return self._slopes[key]

    def prepare(self, step: StepInputs, s: int, dtype: torch.dtype) -> None:
        """Build what every layer needs for this call: the fused attention where it applies,
        else the sqrt-ALiBi bias."""
        t = step.past + s
        step.slopes = self.slopes(step.q_pos.device)
        step.kernel = self.fused_attention(step)
        if step.kernel is not None:
            return
        if step.cu_seqlens is not None:
            step.mask = {"dtype": dtype}  # per-length biases, built by the first layer that needs one
            return
        if step.aligned:
            step.mask = aligned_sqrt_alibi_bias(step.slopes, step.past, s, t, step.key_ok, dtype)
            return
        allowed = allowed_keys(step.past, s, t, step.key_ok, step.q_pos.device)
        step.mask = sqrt_alibi_bias(step.slopes, step.q_pos, step.k_pos, allowed, dtype)

    @staticmethod
    def fused_attention(step: StepInputs):
        """``kernels.alibi_attention`` when this call may use it (no cache history, no padding,
        default or packed positions, and the kernels' backend picks Triton), else None."""
        plain = step.past == 0 and step.key_ok is None and not step.shared_prefix and (
            step.aligned or step.cu_seqlens is not None)
        kernels = fused_kernels() if plain else None
        if kernels is None or kernels.pick(step.q_pos) != "triton":
            return None
        return kernels.alibi_attention

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None,
                attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, shared_prefix: int = 0) -> torch.Tensor:
        """Hidden states ``[batch, seq, hidden]``; see :meth:`Step1ForCausalLM.forward`."""
        if cu_seqlens is None:
            step = step_inputs(input_ids, cache, attention_mask, positions)
        elif cache is not None or attention_mask is not None or positions is not None:
            raise ValueError("cu_seqlens packs whole sequences: pass no cache, attention_mask "
                             "or positions with it")
        else:
            step = packed_step_inputs(input_ids, cu_seqlens, shared_prefix)
        x = self.embed_tokens(input_ids)
        self.prepare(step, input_ids.shape[1], x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, step, i)
        if cache is not None:
            cache.length += input_ids.shape[1]
        return self.norm(x)


@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # [batch, seq, vocab]
    past_key_values: KVCache | None = None


class Step1ForCausalLM(nn.Module):
    """The Step-Audio-TTS-3B LM. ``config``: :class:`Step1Config`."""

    config_class = Step1Config
    model_class = Step1Model

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.model = self.model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def init_weights(self, seed: int = 0, std: float = 0.02) -> "Step1ForCausalLM":
        """Random init for a fresh student: normal(0, std) matrices, unit norms."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        return self

    def forward(self, input_ids: torch.Tensor, past_key_values: KVCache | None = None,
                use_cache: bool = False, attention_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None, logits_to_keep: int = 0,
                cu_seqlens: torch.Tensor | None = None, shared_prefix: int = 0) -> CausalLMOutput:
        """Next-token logits.

        Args:
            input_ids: ``long [batch, seq]``; left-pad rows of unequal length.
            past_key_values: a :class:`KVCache` from an earlier call (or :meth:`new_cache`); it is
                extended in place.
            use_cache: return the cache (a new one when none was passed).
            attention_mask: ``[batch, seq]`` or ``[batch, past + seq]``, 0 at padding.
            positions: ``long [batch, seq]`` token positions; default: counted from the mask.
            logits_to_keep: compute logits for only the last N positions (0: all).
            cu_seqlens: ``int32 [n + 1]`` offsets of sequences packed in ``input_ids [1, total]``
                (training): positions restart at 0 in each, attention stays within each; no
                cache, mask or positions then.
            shared_prefix: with ``cu_seqlens``, the first segment's length when every later
                segment continues it (a system prompt computed once per pack); 0: none.
        Returns:
            ``logits [batch, seq or N, vocab]`` and the cache when ``use_cache``.
        """
        cache = past_key_values
        if cache is None and use_cache:
            cache = self.new_cache(input_ids.shape[0], input_ids.shape[1])
        h = self.model(input_ids, cache, attention_mask, positions, cu_seqlens, shared_prefix)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return CausalLMOutput(self.lm_head(h), cache if use_cache else None)

    def new_cache(self, batch: int, capacity: int, dtype=None, device=None) -> KVCache:
        return KVCache.for_model(self, batch, capacity, dtype, device)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | str | None = None,
                        device: torch.device | str = "cpu"):
        """Load an HF checkpoint dir (``config.json`` + ``*.safetensors``, sharded or not).

        Args:
            dtype: default: the config's ``torch_dtype``.
        Raises:
            ValueError: config or weights missing, a wrong model type, a missing or unexpected
                tensor, or a tensor whose shape differs from the config's.
        """
        cfg = cls.config_class.from_pretrained(path)
        state = read_weights(path)
        with torch.device("meta"):
            model = cls(cfg)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        load_weights(model, state, dtype or getattr(torch, cfg.torch_dtype), device, str(path))
        return model.eval()

    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write an HF dir; same as ``engine.models.export(self, out_dir)``."""
        from engine.models.export import export

        export(self, out_dir)
