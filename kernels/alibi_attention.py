"""Causal attention with the sqrt-ALiBi bias and grouped K/V: a FlashAttention-2 Triton kernel
(forward and backward) beside the PyTorch reference it must match.

    from kernels import alibi_attention
    out = alibi_attention(q, k, v, slopes)                      # [batch, heads, seq, head_dim]
    out = alibi_attention(q, k, v, slopes, cu_seqlens=cu)       # packed: batch 1, seq = total

Head ``h`` adds ``-sqrt(i - j) * slope_h`` to the score of query ``i`` on key ``j <= i`` and reads
K/V group ``h // (heads // groups)``. With ``cu_seqlens`` several sequences lie back to back in one
row; positions restart at 0 in each and no query sees another sequence. The Triton path never
builds the ``[seq, seq]`` bias: it keeps fp32 running softmax statistics, stores the log-sum-exp
and recomputes the scores in the backward pass (dq in one kernel, dk/dv in another).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kernels.backend import pick


def alibi_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor, *,
                    cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                    softmax_scale: float | None = None) -> torch.Tensor:
    """Causal sqrt-ALiBi attention; Triton on CUDA, the PyTorch reference elsewhere.

    Args:
        q: ``[batch, heads, seq, head_dim]`` (any strides with a contiguous last dim, e.g. the
            ``[batch, seq, heads, head_dim]`` projection transposed); fp32, bf16 or fp16.
        k, v: ``[batch, groups, seq, head_dim]``, ``heads % groups == 0``, dtype of ``q``.
        slopes: ``[heads]`` (e.g. ``engine.models.alibi_slopes``).
        cu_seqlens: ``int32 [n_seqs + 1]`` offsets of packed sequences (0 first, ``seq`` last);
            then ``batch`` must be 1.
        max_seqlen: longest packed sequence (saves a device sync); default: from ``cu_seqlens``.
        softmax_scale: default ``1 / sqrt(head_dim)``.
    Returns:
        ``[batch, heads, seq, head_dim]`` in the dtype (and, on the Triton path, the strides) of
        ``q``; differentiable in ``q``, ``k`` and ``v``.
    """
    _check(q, k, v, slopes, cu_seqlens)
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if pick(q, k, v) == "triton":
        if cu_seqlens is not None and max_seqlen is None:
            max_seqlen = int(cu_seqlens.diff().max())
        return _TritonAlibiAttention.apply(q, k, v, slopes, cu_seqlens, max_seqlen, scale)
    return alibi_attention_reference(q, k, v, slopes, cu_seqlens=cu_seqlens, softmax_scale=scale)


def alibi_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              slopes: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None,
                              softmax_scale: float | None = None) -> torch.Tensor:
    """:func:`alibi_attention` in PyTorch: SDPA with an explicit ``[1, heads, seq, seq]`` bias in
    ``q``'s dtype (block-diagonal with ``cu_seqlens``). Memory grows with ``seq^2``."""
    bias = reference_bias(slopes.to(q.device), q.shape[2], cu_seqlens, q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=softmax_scale,
                                          enable_gqa=k.shape[1] != q.shape[1])


def reference_bias(slopes: torch.Tensor, seq_len: int, cu_seqlens: torch.Tensor | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive causal sqrt-ALiBi bias ``[1, heads, seq_len, seq_len]``: ``-sqrt(i - j) *
    slope`` for key ``j <= i`` of the same packed sequence, ``-inf`` elsewhere. Within a sequence
    the distance is the same whether positions restart or not, so only sequence ids are needed."""
    i = torch.arange(seq_len, device=slopes.device)
    dist = (i[:, None] - i[None, :]).to(torch.float32)
    allowed = dist >= 0
    if cu_seqlens is not None:
        seq = torch.searchsorted(cu_seqlens[1:].to(i.device, torch.long), i, right=True)
        allowed &= seq[:, None] == seq[None, :]
    bias = dist.clamp(min=0).sqrt()[None] * -slopes.to(torch.float32)[:, None, None]
    return bias.masked_fill(~allowed[None], float("-inf")).to(dtype)[None]


def _check(q, k, v, slopes, cu_seqlens) -> None:
    b, h, s, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[2:] != (s, d) or h % k.shape[1]:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must be [batch, groups, seq, "
                         f"head_dim] with heads % groups == 0 for q {tuple(q.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if slopes.shape != (h,):
        raise ValueError(f"slopes {tuple(slopes.shape)} must be [heads] = [{h}]")
    if cu_seqlens is not None and (b != 1 or cu_seqlens.ndim != 1 or len(cu_seqlens) < 2):
        raise ValueError(f"packed attention needs batch 1 and cu_seqlens [n_seqs + 1], got q "
                         f"{tuple(q.shape)} and cu_seqlens {tuple(cu_seqlens.shape)}")


def _blocks(q: torch.Tensor) -> dict:
    """``(BLOCK_M, BLOCK_N, num_warps)`` per kernel and ``num_stages``. GPU tiles: the largest
    that ptxas (sm_90, head_dim 64) fits in registers without spilling; fp32 runs IEEE FMA dots,
    which hold their operands in registers, hence smaller tiles. Small tiles on CPU: the
    interpreter's cost grows with the tile area, not with the number of programs."""
    if not q.is_cuda:
        return dict(fwd=(32, 16, 4), dkdv=(16, 32, 4), dq=(32, 16, 4), num_stages=1)
    if q.element_size() == 4 or q.shape[-1] > 64:
        return dict(fwd=(64, 32, 8), dkdv=(32, 64, 8), dq=(64, 32, 8), num_stages=2)
    return dict(fwd=(128, 64, 8), dkdv=(32, 128, 8), dq=(128, 32, 8), num_stages=3)


def _strides(*tensors: torch.Tensor) -> list[int]:
    """(batch, head, seq) strides of each ``[batch, heads, seq, head_dim]`` tensor."""
    return [st for t in tensors for st in t.stride()[:3]]


def _layout(q, cu_seqlens, max_seqlen):
    """Grid extent along the sequence, number of sequences, dense length and a cu_seqlens
    pointer (a dummy int32 tensor when dense)."""
    if cu_seqlens is None:
        dummy = torch.zeros(2, dtype=torch.int32, device=q.device)
        return q.shape[2], q.shape[0], q.shape[2], dummy
    cu = cu_seqlens.to(device=q.device, dtype=torch.int32)
    return max_seqlen, len(cu) - 1, 0, cu


def _common(q, k):
    b, h, s, d = q.shape
    return dict(n_heads=h, group_size=h // k.shape[1], lse_len=s, head_dim=d)


def _constexprs(q, cu_seqlens) -> dict:
    from kernels.jit import interpreting

    return dict(VARLEN=cu_seqlens is not None, BLOCK_D=max(16, _next_pow2(q.shape[-1])),
                PREC="ieee" if q.dtype == torch.float32 else "tf32",
                WIDEN=interpreting() and q.dtype == torch.bfloat16)


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _contiguous_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _forward(q, k, v, slopes, cu_seqlens, max_seqlen, scale):
    """Output ``[batch, heads, seq, head_dim]`` (strides of ``q``) and log2-sum-exp
    ``float32 [batch, heads, seq]``."""
    from kernels.jit import triton_kernels

    tk = triton_kernels("alibi_attention_triton")
    extent, n_seqs, dense_len, cu = _layout(q, cu_seqlens, max_seqlen)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    cfg = _blocks(q)
    bm, bn, warps = cfg["fwd"]
    grid = (_cdiv(extent, bm), n_seqs * q.shape[1])
    tk.attention_fwd[grid](q, k, v, out, lse, slopes, cu, *_strides(q, k, v, out),
                           seq_len_dense=dense_len, qk_scale=scale * tk.LOG2E, **_common(q, k),
                           **_constexprs(q, cu_seqlens), BLOCK_M=bm, BLOCK_N=bn,
                           num_warps=warps, num_stages=cfg["num_stages"])
    return out, lse


def _backward(do, q, k, v, out, lse, slopes, cu_seqlens, max_seqlen, scale):
    """``(dq, dk, dv)`` shaped (and strided) like ``q, k, v``."""
    from kernels.jit import triton_kernels

    tk = triton_kernels("alibi_attention_triton")
    extent, n_seqs, dense_len, cu = _layout(q, cu_seqlens, max_seqlen)
    delta = (do.float() * out.float()).sum(-1)  # rowsum(dO * O) [batch, heads, seq]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    cfg, common, consts = _blocks(q), _common(q, k), _constexprs(q, cu_seqlens)
    scales = dict(sm_scale=scale, qk_scale=scale * tk.LOG2E, seq_len_dense=dense_len)
    bm, bn, warps = cfg["dkdv"]
    grid = (_cdiv(extent, bn), n_seqs * k.shape[1])
    tk.attention_bwd_dkdv[grid](q, k, v, do, dk, dv, lse, delta, slopes, cu,
                                *_strides(q, k, v, do, dk, dv), n_groups=k.shape[1], **scales,
                                **common, **consts, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
                                num_stages=cfg["num_stages"])
    bm, bn, warps = cfg["dq"]
    grid = (_cdiv(extent, bm), n_seqs * q.shape[1])
    tk.attention_bwd_dq[grid](q, k, v, do, dq, lse, delta, slopes, cu,
                              *_strides(q, k, v, do, dq), **scales, **common, **consts,
                              BLOCK_M=bm, BLOCK_N=bn, num_warps=warps,
                              num_stages=cfg["num_stages"])
    return dq, dk, dv


class _TritonAlibiAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, slopes, cu_seqlens, max_seqlen, scale):
        q, k, v = (_contiguous_last(t) for t in (q, k, v))
        slopes = slopes.to(q.device, torch.float32).contiguous()
        out, lse = _forward(q, k, v, slopes, cu_seqlens, max_seqlen, scale)
        ctx.save_for_backward(q, k, v, out, lse, slopes, cu_seqlens)
        ctx.max_seqlen, ctx.scale = max_seqlen, scale
        return out

    @staticmethod
    def backward(ctx, do):
        q, k, v, out, lse, slopes, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = _backward(_contiguous_last(do), q, k, v, out, lse, slopes, cu_seqlens,
                               ctx.max_seqlen, ctx.scale)
        return dq, dk, dv, None, None, None, None
