"""The token encoder of CosyVoice's flow decoder: a Conformer with relative-position attention.

What ``cosyvoice.yaml`` calls ``flow.encoder`` (``ConformerEncoder``): a linear input layer
(Linear, LayerNorm, x sqrt(d)), ESPnet-style relative positional encoding, ``num_blocks`` layers of
pre-norm self-attention with learned position biases (Transformer-XL) and a SiLU feed-forward
(optionally a macaron feed-forward first), then ``after_norm``. Parameter names follow the
released ``flow.pt`` (``encoder.embed.out.0.weight``, ``encoder.encoders.0.self_attn.linear_q``...).

    >>> enc = ConformerEncoder.from_config(cfg["flow"]["encoder"], "cosyvoice.yaml")   # doctest: +SKIP
    >>> h = enc(x)                                   # x [batch, T, input_size] -> [batch, T, output_size]
"""
from __future__ import annotations

import math

import torch
from torch import nn

from manifests.errors import UserError

_ACTIVATIONS = {"swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def relative_positions(size: int, d_model: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """ESPnet relative position table ``[1, 2*size - 1, d_model]`` for relative offsets
    ``size-1 .. -(size-1)`` (sin on even, cos on odd channels)."""
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    offsets = torch.arange(size - 1, -size, -1, dtype=torch.float32).unsqueeze(1)
    pe = torch.zeros(2 * size - 1, d_model)
    pe[:, 0::2] = torch.sin(offsets * div)
    pe[:, 1::2] = torch.cos(offsets * div)
    return pe.unsqueeze(0).to(device=device, dtype=dtype)


class LinearInput(nn.Module):
    """``input_layer: linear``: Linear -> LayerNorm, then scaled by sqrt(d) for the position code."""

    def __init__(self, idim: int, odim: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, odim), nn.LayerNorm(odim, eps=1e-5), nn.Dropout(0.0))
        self.xscale = math.sqrt(odim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.out(x) * self.xscale
        return x, relative_positions(x.shape[1], x.shape[2], x.dtype, x.device)


class RelPositionAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL position terms (biases u and v)."""

    def __init__(self, n_head: int, n_feat: int, key_bias: bool = True):
        super().__init__()
        if n_feat % n_head:
            raise UserError(f"encoder output_size {n_feat} is not divisible by attention_heads {n_head}")
        self.h, self.d_k = n_head, n_feat // n_head
        self.linear_q = nn.Linear(n_feat, n_feat)
        self.linear_k = nn.Linear(n_feat, n_feat, bias=key_bias)
        self.linear_v = nn.Linear(n_feat, n_feat)
        self.linear_out = nn.Linear(n_feat, n_feat)
        self.linear_pos = nn.Linear(n_feat, n_feat, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(self.h, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(self.h, self.d_k))

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)
        p = self.linear_pos(pos).view(pos.shape[0], -1, self.h, self.d_k).transpose(1, 2)
        content = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        position = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))
        # column k of the table is the offset (t-1) - k; query i and key j sit at offset i - j
        index = (t - 1) - torch.arange(t, device=x.device).unsqueeze(1) + torch.arange(t, device=x.device)
        position = position.gather(-1, index.expand(b, self.h, t, t))
        attn = torch.softmax((content + position) / math.sqrt(self.d_k), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, t, self.h * self.d_k)
        return self.linear_out(out)


class FeedForward(nn.Module):
    """Position-wise feed-forward ``w_2(act(w_1(x)))``."""

    def __init__(self, dim: int, hidden: int, activation: str):
        super().__init__()
        self.w_1, self.activation, self.w_2 = nn.Linear(dim, hidden), _ACTIVATIONS[activation](), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.activation(self.w_1(x)))


class ConformerLayer(nn.Module):
    """One encoder layer without the convolution module (``use_cnn_module: False``)."""

    def __init__(self, size: int, heads: int, units: int, activation: str, macaron: bool,
                 normalize_before: bool, key_bias: bool):
        super().__init__()
        self.self_attn = RelPositionAttention(heads, size, key_bias)
        self.feed_forward = FeedForward(size, units, activation)
        self.feed_forward_macaron = FeedForward(size, units, activation) if macaron else None
        self.norm_ff = nn.LayerNorm(size, eps=1e-5)
        self.norm_mha = nn.LayerNorm(size, eps=1e-5)
        if macaron:
            self.norm_ff_macaron = nn.LayerNorm(size, eps=1e-5)
        self.ff_scale = 0.5 if macaron else 1.0
        self.normalize_before = normalize_before

    def _sublayer(self, x: torch.Tensor, norm: nn.Module, fn, scale: float = 1.0) -> torch.Tensor:
        y = fn(norm(x) if self.normalize_before else x)
        x = x + scale * y
        return x if self.normalize_before else norm(x)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.feed_forward_macaron is not None:
            x = self._sublayer(x, self.norm_ff_macaron, self.feed_forward_macaron, self.ff_scale)
        x = self._sublayer(x, self.norm_mha, lambda h: self.self_attn(h, pos))
        return self._sublayer(x, self.norm_ff, self.feed_forward, self.ff_scale)


class ConformerEncoder(nn.Module):
    """``flow.encoder``: ``x [batch, T, input_size] -> [batch, T, output_size]`` (no subsampling)."""

    def __init__(self, input_size: int, output_size: int = 256, attention_heads: int = 4,
                 linear_units: int = 2048, num_blocks: int = 6, normalize_before: bool = True,
                 macaron_style: bool = True, activation_type: str = "swish", key_bias: bool = True):
        super().__init__()
        self._output_size = output_size
        self.embed = LinearInput(input_size, output_size)
        self.after_norm = nn.LayerNorm(output_size, eps=1e-5)
        self.normalize_before = normalize_before
        self.encoders = nn.ModuleList(
            ConformerLayer(output_size, attention_heads, linear_units, activation_type, macaron_style,
                           normalize_before, key_bias)
            for _ in range(num_blocks))

    def output_size(self) -> int:
        return self._output_size

    @classmethod
    def from_config(cls, cfg: dict, where: str) -> "ConformerEncoder":
        """Build from the yaml's ``flow.encoder`` node (upstream's defaults where a key is absent);
        a layout this loader does not implement is a ``UserError`` naming the key."""
        upstream_default = {"input_layer": "conv2d", "pos_enc_layer_type": "rel_pos",
                            "selfattention_layer_type": "rel_selfattn", "use_cnn_module": True,
                            "activation_type": "swish"}
        supported = {"input_layer": ("linear",), "pos_enc_layer_type": ("rel_pos_espnet",),
                     "selfattention_layer_type": ("rel_selfattn",), "use_cnn_module": (False,),
                     "activation_type": tuple(_ACTIVATIONS)}
        for key, default in upstream_default.items():
            value = cfg.get(key, default)
            if value not in supported[key]:
                raise UserError(f"{where}: flow.encoder {key}={value!r} is not supported "
                                f"(this loader implements {' or '.join(map(repr, supported[key]))})")
        if "input_size" not in cfg:
            raise UserError(f"{where}: flow.encoder has no input_size")
        return cls(int(cfg["input_size"]), int(cfg.get("output_size", 256)), int(cfg.get("attention_heads", 4)),
                   int(cfg.get("linear_units", 2048)), int(cfg.get("num_blocks", 6)),
                   bool(cfg.get("normalize_before", True)), bool(cfg.get("macaron_style", True)),
                   cfg.get("activation_type", "swish"), bool(cfg.get("key_bias", True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pos = self.embed(x)
        for layer in self.encoders:
            x = layer(x, pos)
        return self.after_norm(x) if self.normalize_before else x
