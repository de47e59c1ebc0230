"""The KV cache of the students and the per-call inputs every layer shares.

Slots fill left to right for all rows at once, so batches of unequal prompts are left-padded;
``key_ok`` marks padding slots and ``k_pos`` holds each slot's token position.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .attention import packed_positions


class KVCache:
    """Preallocated keys and values for every layer, ``[batch, groups, capacity, head_dim]``.

    Slots fill left to right for all rows at once (left-padded batches); ``key_ok`` marks padding
    slots, ``k_pos`` holds each slot's position and ``seen`` each row's count of real tokens.
    """

    def __init__(self, n_layers: int, batch: int, groups: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (batch, groups, capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.k_pos = torch.zeros(batch, capacity, dtype=torch.long, device=device)
        self.key_ok = torch.ones(batch, capacity, dtype=torch.bool, device=device)
        self.seen = torch.zeros(batch, dtype=torch.long, device=device)
        self.length = 0
        self.padded = False  # any padding slot so far
        self.aligned = True  # padding only before each row's tokens, positions counted from it

    @classmethod
    def for_model(cls, model: nn.Module, batch: int, capacity: int, dtype=None, device=None):
        cfg, p = model.config, next(model.parameters())
        return cls(cfg.num_hidden_layers, batch, cfg.num_kv_heads, cfg.head_dim, capacity,
                   dtype or p.dtype, device or p.device)

    @property
    def batch(self) -> int:
        return self.seen.shape[0]

    @property
    def capacity(self) -> int:
        return self.k_pos.shape[1]

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more slots (doubling), keeping what is stored."""
        need = self.length + n
        if need <= self.capacity:
            return
        new = max(need, 2 * self.capacity)

        def grow(t: torch.Tensor, dim: int, fill) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = new - shape[dim]
            return torch.cat([t, torch.full(shape, fill, dtype=t.dtype, device=t.device)], dim)

        self.k = [grow(t, 2, 0) for t in self.k]
        self.v = [grow(t, 2, 0) for t in self.v]
        self.k_pos, self.key_ok = grow(self.k_pos, 1, 0), grow(self.key_ok, 1, True)

    def append_meta(self, q_pos: torch.Tensor, new_ok: torch.Tensor | None):
        """Record the new tokens' positions and padding; returns (k_pos, key_ok) of all keys."""
        s, end = q_pos.shape[1], self.length + q_pos.shape[1]
        self.k_pos[:, self.length:end] = q_pos
        if new_ok is not None:
            self.key_ok[:, self.length:end] = new_ok
            self.seen += new_ok.sum(1)
            self.padded = self.padded or not bool(new_ok.all())
        else:
            self.seen += s
        return self.k_pos[:, :end], self.key_ok[:, :end] if self.padded else None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store ``k, v [batch, groups, s, head_dim]`` at the next slots; returns all keys/values."""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (long ``[n]``) of the batch, e.g. the sequences still generating."""
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]
        self.k_pos, self.key_ok = self.k_pos.index_select(0, rows), self.key_ok.index_select(0, rows)
        self.seen = self.seen.index_select(0, rows)

    def trim(self) -> None:
        """Drop the leading slots that are padding in every row (after rows left the batch)."""
        if not self.aligned or not self.batch:
            return
        cut = self.length - int(self.seen.max())
        if cut <= 0:
            return
        self.k = [t[:, :, cut:] for t in self.k]
        self.v = [t[:, :, cut:] for t in self.v]
        self.k_pos, self.key_ok = self.k_pos[:, cut:], self.key_ok[:, cut:]
        self.length -= cut

    def join(self, other: "KVCache") -> None:
        """Append the rows of ``other`` to this batch, both left-padded to the longer length
        (continuous batching: a prefilled request joins the running batch). Needs aligned caches
        (left padding only), which stay aligned."""
        if not (self.aligned and other.aligned):
            raise ValueError("only left-padded (aligned) caches can be joined")
        length = max(self.length, other.length)
        room = max(self.capacity - self.length, other.capacity - other.length, 1)

        def place(cache: "KVCache", t: torch.Tensor, dim: int, fill) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = length + room
            out = torch.full(shape, fill, dtype=t.dtype, device=t.device)
            start = length - cache.length
            out.narrow(dim, start, cache.length).copy_(t.narrow(dim, 0, cache.length))
            return out

        def both(a: torch.Tensor, b: torch.Tensor, dim: int, fill) -> torch.Tensor:
            return torch.cat([place(self, a, dim, fill), place(other, b, dim, fill)])

        self.k = [both(a, b, 2, 0) for a, b in zip(self.k, other.k)]
        self.v = [both(a, b, 2, 0) for a, b in zip(self.v, other.v)]
        self.k_pos = both(self.k_pos, other.k_pos, 1, 0)
        self.key_ok = both(self.key_ok, other.key_ok, 1, False)
        self.key_ok[:, length:] = True
        self.seen = torch.cat([self.seen, other.seen])
        self.padded = self.padded or other.padded or self.length != other.length
        self.length = length

    def copy(self, room: int) -> "KVCache":
        """A copy of what is stored, with ``room`` free slots after it (reuse a cached prefix)."""
        out = object.__new__(KVCache)
        end = self.length

        def grown(t: torch.Tensor, dim: int, fill) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = end + room
            fresh = torch.full(shape, fill, dtype=t.dtype, device=t.device)
            fresh.narrow(dim, 0, end).copy_(t.narrow(dim, 0, end))
            return fresh

        out.k = [grown(t, 2, 0) for t in self.k]
        out.v = [grown(t, 2, 0) for t in self.v]
        out.k_pos, out.key_ok = grown(self.k_pos, 1, 0), grown(self.key_ok, 1, True)
        out.seen, out.length = self.seen.clone(), end
        out.padded, out.aligned = self.padded, self.aligned
        return out

    def rows(self, start: int, end: int) -> "KVCache":
        """A view of rows ``start:end`` sharing storage (prefill a large batch in pieces)."""
        view = object.__new__(KVCache)
        view.k = [t[start:end] for t in self.k]
        view.v = [t[start:end] for t in self.v]
        view.k_pos, view.key_ok = self.k_pos[start:end], self.key_ok[start:end]
        view.seen, view.length, view.padded = self.seen[start:end], self.length, self.padded
        view.aligned = self.aligned
        return view


@dataclass
class StepInputs:
    """What one forward call shares across layers."""

    q_pos: torch.Tensor  # [b, s] positions of the new tokens (b is 1 when every row agrees)
    k_pos: torch.Tensor  # [b, past + s]
    key_ok: torch.Tensor | None  # [batch, past + s] or None without padding
    past: int
    cache: KVCache | None
    aligned: bool  # left padding only: position differences equal slot differences
    mask: torch.Tensor | None = None  # model-specific, built once per forward
    slopes: torch.Tensor | None = None
    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    cu_seqlens: torch.Tensor | None = None  # int32 [n_seqs + 1] when sequences are packed
    seq_id: torch.Tensor | None = None  # long [total]: which packed sequence each token is in
    max_seqlen: int = 0
    offsets: tuple[int, ...] = ()  # cu_seqlens on the host
    shared_prefix: int = 0  # packed: the first segment is a prefix every later one continues
    kernel: Callable | None = None  # fused attention replacing the model's reference, if any


def step_inputs(input_ids, cache, attention_mask, positions) -> StepInputs:
    b, s = input_ids.shape
    past = cache.length if cache is not None else 0
    new_ok = None
    if attention_mask is not None:
        if attention_mask.shape not in ((b, s), (b, past + s)):
            raise ValueError(f"attention_mask {tuple(attention_mask.shape)} fits neither "
                             f"[batch, seq] {(b, s)} nor [batch, past + seq] {(b, past + s)}")
        new_ok = attention_mask[:, -s:].to(torch.bool)
        if bool(new_ok.all()):
            new_ok = None
    if positions is None:
        if new_ok is None:
            positions = torch.arange(s, device=input_ids.device)[None]
            if cache is not None:
                positions = cache.seen[:, None] + positions
        else:
            positions = (new_ok.long().cumsum(1) - 1).clamp(min=0)
            if cache is not None:
                positions = positions + cache.seen[:, None]
        aligned = new_ok is None or (past == 0 and bool((new_ok[:, 1:] >= new_ok[:, :-1]).all()))
    else:
        aligned = False
    if cache is None:
        return StepInputs(positions, positions, new_ok, 0, None, aligned)
    cache.aligned = aligned = cache.aligned and aligned
    cache.reserve(s)
    k_pos, key_ok = cache.append_meta(positions.expand(b, s), new_ok)
    return StepInputs(positions, k_pos, key_ok, past, cache, aligned)


def packed_step_inputs(input_ids: torch.Tensor, cu_seqlens: torch.Tensor,
                       shared_prefix: int = 0) -> StepInputs:
    """Inputs for sequences packed back to back in one row (training; no cache, no padding).

    Args:
        input_ids: ``long [1, total]``.
        cu_seqlens: ``int [n_seqs + 1]`` offsets: 0 first, ``total`` last, non-decreasing.
        shared_prefix: 0, or the length of the first segment when it is a prefix shared by all
            later segments (``attention.packed_attention``).
    """
    total = input_ids.shape[1]
    offsets = cu_seqlens.tolist()  # the one host sync of a packed forward
    if input_ids.shape[0] != 1 or cu_seqlens.ndim != 1 or len(offsets) < 2:
        raise ValueError(f"packed sequences need input_ids [1, total] and cu_seqlens [n + 1], got "
                         f"{tuple(input_ids.shape)} and {tuple(cu_seqlens.shape)}")
    if offsets[0] != 0 or offsets[-1] != total or any(a > b for a, b in zip(offsets, offsets[1:])):
        raise ValueError(f"cu_seqlens must rise from 0 to total={total}, got {offsets}")
    if shared_prefix and shared_prefix != offsets[1]:
        raise ValueError(f"shared_prefix={shared_prefix} must be the first segment's length ({offsets[1]})")
    cu = cu_seqlens.to(device=input_ids.device, dtype=torch.int32)
    pos, seq_id = packed_positions(cu, total, shared_prefix)
    step = StepInputs(pos[None], pos[None], None, 0, None, aligned=False, cu_seqlens=cu,
                      seq_id=seq_id, offsets=tuple(offsets), shared_prefix=shared_prefix)
    step.max_seqlen = max(b - a for a, b in zip(offsets, offsets[1:]))
    return step
