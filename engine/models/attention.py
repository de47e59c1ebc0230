"""Attention for the students: sqrt-ALiBi (Step1) and plain masked attention with grouped K/V.

    out = alibi_sqrt_attention(q, k, v, alibi_slopes(heads))    # causal, [b, heads, s, head_dim]

Head ``h`` adds ``-sqrt(i - j) * slope_h`` to the score of query position ``i`` on key ``j <= i``.
:func:`alibi_sqrt_attention` is the PyTorch reference, the one place a fused kernel
(``kernels.alibi_attention``) replaces. Packed sequences (``cu_seqlens``) get their positions and
block-diagonal mask from :func:`packed_positions` and :func:`packed_allowed`. Imports only torch
(exported Step1 checkpoints carry this file for ``trust_remote_code``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi head slopes ``float32 [n_heads]``: ``2^(-8/n)`` powers for ``n`` a power of two, else
    the slopes of the closest lower power of two plus every other slope of twice that."""
    def powers(n: int) -> list[float]:
        ratio = 2.0 ** (-8.0 / n)
        return [ratio ** (i + 1) for i in range(n)]

    if n_heads < 1:
        raise ValueError(f"need at least one head, got {n_heads}")
    closest = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = powers(closest)
    if closest != n_heads:
        slopes += powers(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def allowed_keys(q_slot0: int, q_len: int, k_len: int, key_ok: torch.Tensor | None,
                 device=None) -> torch.Tensor:
    """Which keys each query may attend to: causal by cache slot, padding keys excluded, and a
    query always sees itself (so padded rows stay finite). ``bool [batch or 1, q_len, k_len]``."""
    q_slot = torch.arange(q_slot0, q_slot0 + q_len, device=device)[:, None]
    k_slot = torch.arange(k_len, device=device)[None, :]
    ok = (k_slot <= q_slot)[None]
    if key_ok is not None:
        ok = (ok & key_ok[:, None, :]) | (k_slot == q_slot)[None]
    return ok


def packed_positions(cu_seqlens: torch.Tensor, total: int, shared_prefix: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and sequence ids of sequences packed back to back.

    Args:
        cu_seqlens: ``int [n_seqs + 1]`` offsets, 0 first and ``total`` last.
        shared_prefix: when > 0, the first segment is a prefix that every later segment continues
            (:func:`packed_attention`), so their positions start at ``shared_prefix``.
    Returns:
        ``(positions, seq_id)``, both ``long [total]``; positions restart at 0 in each sequence.
    """
    cu = cu_seqlens.to(torch.long)
    seq_id = torch.repeat_interleave(torch.arange(len(cu) - 1, device=cu.device), cu.diff(),
                                     output_size=total)
    pos = torch.arange(total, device=cu.device) - cu[seq_id]
    if shared_prefix:
        pos[shared_prefix:] += shared_prefix
    return pos, seq_id


def packed_allowed(seq_id: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask of packed sequences: ``bool [1, total, total]`` from
    ``seq_id [total]`` (:func:`packed_positions`)."""
    i = torch.arange(len(seq_id), device=seq_id.device)
    return ((seq_id[:, None] == seq_id[None, :]) & (i[None, :] <= i[:, None]))[None]


def packed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, offsets: tuple[int, ...],
                     mask_for=None, shared_prefix: int = 0) -> torch.Tensor:
    """Attention over sequences packed in one row, one sequence at a time, so the reference
    never builds a ``total x total`` mask (11 sequences of 700 tokens: 49x less).

    With ``shared_prefix`` P > 0 the first segment (``offsets[1] == P``) is a prefix that every
    later segment continues: segment ``[a, b)`` attends to keys ``[0, P)`` then ``[a, b)``, exactly
    as if each sequence carried its own copy of the prefix (training computes a shared system
    prompt once per pack).

    Args:
        q: ``[1, heads, total, head_dim]``; k, v: ``[1, groups, total, head_dim]``.
        offsets: the sequence boundaries (``cu_seqlens`` as ints).
        mask_for: ``(q_len, k_len) -> additive mask [1, heads, q_len, k_len]`` for queries at the
            last ``q_len`` of ``k_len`` consecutive positions; None: plain causal attention.
    """
    outs = []
    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        if b == a:
            continue
        sl = slice(a, b)
        pre = shared_prefix if i > 0 else 0
        qs, ks, vs = q[:, :, sl], k[:, :, sl], v[:, :, sl]
        if pre:
            ks = torch.cat([k[:, :, :pre], ks], dim=2)
            vs = torch.cat([v[:, :, :pre], vs], dim=2)
        if mask_for is not None:
            outs.append(attention(qs, ks, vs, mask_for(b - a, pre + b - a)))
        elif pre:
            outs.append(attention(qs, ks, vs, allowed_keys(pre, b - a, pre + b - a, None, q.device)[:, None]))
        else:
            outs.append(attention(qs, ks, vs, None, causal=True))
    return torch.cat(outs, dim=2)


def sqrt_alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor,
                    allowed: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive attention bias ``-sqrt(q_pos - k_pos) * slope``, ``-inf`` where not allowed.

    Args:
        slopes: ``[heads]``.
        q_pos: query positions ``[b, q_len]``; k_pos: key positions ``[b, k_len]`` (``b`` 1 or batch).
        allowed: ``bool [b, q_len, k_len]`` from :func:`allowed_keys`.
    Returns:
        ``[b, heads, q_len, k_len]``.
    """
    dist = (q_pos[:, :, None] - k_pos[:, None, :]).clamp(min=0).to(torch.float32)
    bias = dist.sqrt()[:, None] * -slopes.to(dist.device)[None, :, None, None]
    return bias.masked_fill(~allowed[:, None], float("-inf")).to(dtype)


def aligned_sqrt_alibi_bias(slopes: torch.Tensor, q_slot0: int, q_len: int, k_len: int,
                            key_ok: torch.Tensor | None, dtype: torch.dtype = torch.float32
                            ) -> torch.Tensor:
    """:func:`sqrt_alibi_bias` for left-padded rows, where position differences equal slot
    differences: one ``[1, heads, q_len, k_len]`` bias shared by all rows, plus a large negative
    value at padding keys (``[batch, heads, q_len, k_len]`` then). Finite, so a padding query
    that sees only padding keys stays finite."""
    q_slot = torch.arange(q_slot0, q_slot0 + q_len, device=slopes.device)[:, None]
    dist = (q_slot - torch.arange(k_len, device=slopes.device)[None, :]).to(torch.float32)
    bias = dist.clamp(min=0).sqrt()[None, None] * -slopes[None, :, None, None]
    bias = bias.masked_fill(dist[None, None] < 0, float("-inf")).to(dtype)
    if key_ok is not None:
        pad = torch.zeros(key_ok.shape, dtype=dtype, device=key_ok.device)
        bias = bias + pad.masked_fill(~key_ok, torch.finfo(dtype).min)[:, None, None, :]
    return bias


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              mask: torch.Tensor | None, causal: bool = False) -> torch.Tensor:
    """Scaled dot-product attention with grouped key/value heads.

    Args:
        q: ``[batch, heads, q_len, head_dim]``; k, v: ``[batch, groups, k_len, head_dim]``; query
            head ``h`` reads group ``h // (heads // groups)``.
        mask: additive float or boolean mask broadcastable to ``[batch, heads, q_len, k_len]``.
    """
    b, h, s, d = q.shape
    g = k.shape[1]
    if s == 1 and g != h and not causal:
        # One query per head: fold each group's heads into its query axis, no K/V copies.
        if mask is not None and mask.shape[1] == h:
            mask = mask.reshape(mask.shape[0], g, h // g, mask.shape[-1])
        elif mask is not None:
            mask = mask.reshape(mask.shape[0], 1, 1, mask.shape[-1])
        out = F.scaled_dot_product_attention(q.reshape(b, g, h // g, d), k, v, attn_mask=mask)
        return out.reshape(b, h, 1, d)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                          enable_gqa=g != h)


def alibi_sqrt_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slopes: torch.Tensor,
                         q_pos: torch.Tensor | None = None, k_pos: torch.Tensor | None = None,
                         key_ok: torch.Tensor | None = None, bias: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Causal attention with the sqrt-ALiBi bias (PyTorch reference; kernels may replace it).

    Args:
        q: ``[batch, heads, q_len, head_dim]``; k, v: ``[batch, groups, k_len, head_dim]``.
        slopes: ``[heads]`` from :func:`alibi_slopes`.
        q_pos, k_pos: positions ``[batch or 1, len]``; default: the queries are the last ``q_len``
            of ``k_len`` consecutive positions.
        key_ok: ``bool [batch, k_len]``, False for padding keys.
        bias: the bias :func:`sqrt_alibi_bias` would build from these; the model builds it once
            per forward and shares it across layers.
    Returns:
        ``[batch, heads, q_len, head_dim]``.
    """
    s, t = q.shape[2], k.shape[2]
    if bias is None:
        if k_pos is None:
            k_pos = torch.arange(t, device=q.device)[None]
        if q_pos is None:
            q_pos = k_pos[:, t - s:]
        allowed = allowed_keys(t - s, s, t, key_ok, q.device)
        bias = sqrt_alibi_bias(slopes, q_pos, k_pos, allowed, q.dtype)
    return attention(q, k, v, bias)
