"""The flow-matching estimator of CosyVoice's decoder: a 1-D U-Net with transformer blocks.

What ``cosyvoice.yaml`` calls ``flow.decoder.estimator`` (``ConditionalDecoder``, from Matcha-TTS):
the input is ``[x, mu, spk broadcast over time, cond]`` on channels; a sinusoidal embedding of the
flow time (scale 1000) goes through an MLP into every ResNet block; down stages (ResNet block,
transformer blocks, stride-2 conv; the last stage a plain conv), mid stages, up stages (skip
concat, ResNet block, transformer blocks, transposed conv k4 s2 p1; the last a plain conv), a final
block and a 1x1 projection. Parameter names follow the released ``flow.pt``
(``decoder.estimator.down_blocks.0.1.0.attn1.to_q.weight``...).

    >>> est = ConditionalDecoder.from_config(cfg["flow"]["decoder"]["estimator"], "cosyvoice.yaml")  # doctest: +SKIP
    >>> v = est(x, mask, mu, t, spks, cond)   # [b, 80, T] each (mask [b, 1, T], t [b], spks [b, 80])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from manifests.errors import UserError


def time_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of the flow time ``t [b]`` -> ``[b, dim]`` (sin half, then cos half)."""
    if t.ndim < 1:
        t = t.unsqueeze(0)
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    args = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((args.sin(), args.cos()), dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(in_channels, dim), nn.SiLU(), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class Block1D(nn.Module):
    """Conv1d k3 -> GroupNorm(8) -> Mish, masked before and after."""

    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(dim, dim_out, 3, padding=1), nn.GroupNorm(groups, dim_out), nn.Mish())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.block(x * mask) * mask


class ResnetBlock1D(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_emb_dim: int, groups: int = 8):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_emb_dim, dim_out))
        self.block1 = Block1D(dim, dim_out, groups)
        self.block2 = Block1D(dim_out, dim_out, groups)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        h = self.block1(x, mask) + self.mlp(t_emb).unsqueeze(-1)
        return self.block2(h, mask) + self.res_conv(x * mask)


class Attention(nn.Module):
    """Self-attention as diffusers' ``Attention`` (bias-free q/k/v, ``to_out.0`` with bias)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner, bias=False) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (f(x).view(b, t, self.heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, -1)
        return self.to_out[0](out.to(q.dtype))


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int, approximate: str):
        super().__init__()
        self.proj, self.approximate = nn.Linear(dim, inner), approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate=self.approximate)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn1(norm1(x))``, then ``x + ff(norm3(x))`` (GELU MLP, 4x)."""

    def __init__(self, dim: int, heads: int, head_dim: int, approximate: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = nn.Module()
        self.ff.net = nn.ModuleList([GELUProj(dim, 4 * dim, approximate), nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        h = self.norm3(x)
        for layer in self.ff.net:
            h = layer(h)
        return x + h


class ConditionalDecoder(nn.Module):
    """``flow.decoder.estimator``: predicts the flow velocity ``[b, out_channels, T]``."""

    def __init__(self, in_channels: int, out_channels: int, channels=(256, 256), attention_head_dim: int = 64,
                 n_blocks: int = 1, num_mid_blocks: int = 2, num_heads: int = 4, act_fn: str = "gelu"):
        super().__init__()
        channels = tuple(channels)
        self.in_channels = in_channels
        t_dim = channels[0] * 4
        self.time_mlp = TimestepMLP(in_channels, t_dim)
        approximate = "tanh" if act_fn == "gelu-approximate" else "none"

        def blocks(dim: int) -> nn.ModuleList:
            return nn.ModuleList(TransformerBlock(dim, num_heads, attention_head_dim, approximate)
                                 for _ in range(n_blocks))

        self.down_blocks, self.mid_blocks, self.up_blocks = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        out_ch = in_channels
        for i, ch in enumerate(channels):
            in_ch, out_ch = out_ch, ch
            last = i == len(channels) - 1
            down = nn.Conv1d(out_ch, out_ch, 3, padding=1) if last else _Stride2Conv(out_ch)
            self.down_blocks.append(nn.ModuleList([ResnetBlock1D(in_ch, out_ch, t_dim), blocks(out_ch), down]))
        for _ in range(num_mid_blocks):
            self.mid_blocks.append(nn.ModuleList([ResnetBlock1D(channels[-1], out_ch, t_dim), blocks(out_ch)]))
        ups = channels[::-1] + (channels[0],)
        for i in range(len(ups) - 1):
            out_ch = ups[i + 1]
            last = i == len(ups) - 2
            up = nn.Conv1d(out_ch, out_ch, 3, padding=1) if last else _TransposedConv(out_ch)
            self.up_blocks.append(nn.ModuleList([ResnetBlock1D(ups[i] * 2, out_ch, t_dim), blocks(out_ch), up]))
        self.final_block = Block1D(ups[-1], ups[-1])
        self.final_proj = nn.Conv1d(ups[-1], out_channels, 1)

    @classmethod
    def from_config(cls, cfg: dict, where: str) -> "ConditionalDecoder":
        """Build from the yaml's ``flow.decoder.estimator`` node (upstream's defaults where absent)."""
        act = cfg.get("act_fn", "snake")
        if act not in ("gelu", "gelu-approximate"):
            raise UserError(f"{where}: flow.decoder.estimator act_fn={act!r} is not supported (gelu only)")
        for key in ("in_channels", "out_channels"):
            if key not in cfg:
                raise UserError(f"{where}: flow.decoder.estimator has no {key}")
        return cls(int(cfg["in_channels"]), int(cfg["out_channels"]), [int(c) for c in cfg.get("channels", (256, 256))],
                   int(cfg.get("attention_head_dim", 64)), int(cfg.get("n_blocks", 1)),
                   int(cfg.get("num_mid_blocks", 2)), int(cfg.get("num_heads", 4)), act)

    @staticmethod
    def _transform(x: torch.Tensor, blocks: nn.ModuleList) -> torch.Tensor:
        x = x.transpose(1, 2)
        for block in blocks:
            x = block(x)
        return x.transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                spks: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x, mu, cond [b, c, T]``, ``mask [b, 1, T]``, ``t [b]``, ``spks [b, c_spk]`` -> ``[b, out, T]``."""
        t_emb = self.time_mlp(time_embedding(t, self.in_channels).to(t.dtype))
        x = torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.shape[-1]), cond], dim=1)
        hiddens, masks = [], [mask]
        for resnet, blocks, down in self.down_blocks:
            x = self._transform(resnet(x, masks[-1], t_emb), blocks)
            hiddens.append(x)
            x = down(x * masks[-1])
            masks.append(masks[-1][:, :, ::2])
        masks.pop()
        for resnet, blocks in self.mid_blocks:
            x = self._transform(resnet(x, masks[-1], t_emb), blocks)
        for resnet, blocks, up in self.up_blocks:
            mask_up, skip = masks.pop(), hiddens.pop()
            x = torch.cat([x[:, :, : skip.shape[-1]], skip], dim=1)
            x = self._transform(resnet(x, mask_up, t_emb), blocks)
            x = up(x * mask_up)
        x = self.final_block(x, mask_up)
        return self.final_proj(x * mask_up) * mask


class _Stride2Conv(nn.Module):
    """Downsampling stage end: Conv1d k3 s2 p1 (held as ``.conv`` like the released keys)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _TransposedConv(nn.Module):
    """Upsampling stage end: ConvTranspose1d k4 s2 p1 (held as ``.conv``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
