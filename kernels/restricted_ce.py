"""Fused linear + cross-entropy (and top-k KL) over the codebook rows of an LM head.

A TTS student only ever predicts audio codes (and EOT at a group boundary), so its loss needs the
1025 or 4096 head rows allowed at each position, never the full vocabulary:

    out = restricted_linear_ce(hidden, lm_head.weight, targets, streams,
                               HeadRanges.from_layout(layout, eot_id=3), reduction="mean")
    out.loss.backward()

Rows are processed in chunks; each chunk's logits ``[chunk, 1025 | 4096]`` are computed, turned
into their gradient in place and multiplied back into ``d hidden`` and ``d weight`` right away (the
Liger fused-linear-CE scheme), so neither the ``[N, V]`` nor the ``[N, 4096]`` logits ever exist.
The per-chunk softmax / loss / gradient runs in Triton on CUDA (``restricted_ce_triton.py``) and
in plain torch elsewhere; :func:`kernels.use_backend` forces either.

Allowed sets per ``streams`` value: 0 (group start) = vq02 rows + EOT; 1 = vq02 rows; 2 = vq06
rows; -1 = no loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.backend import pick

IGNORE_INDEX = -100
DEFAULT_CHUNK_ELEMENTS = 1 << 21  # logits per chunk: 8 MiB fp32, 512 rows of the 4096-code slice


@dataclass(frozen=True)
class HeadRanges:
    """Where the two codebooks and EOT sit in the LM head (student id space)."""

    vq02_start: int
    vq02_size: int
    vq06_start: int
    vq06_size: int
    eot_id: int = 3

    @classmethod
    def from_layout(cls, layout, eot_id: int = 3) -> "HeadRanges":
        """From an ``engine.tokens.TokenLayout`` (anything with ``vq02_offset`` etc.)."""
        return cls(layout.vq02_offset, layout.vq02_size, layout.vq06_offset, layout.vq06_size,
                   eot_id)


@dataclass
class RestrictedCE:
    """Result of :func:`restricted_linear_ce`; per-row tensors are ``[N]`` and detached.

    ``loss`` is the differentiable sum (or mean, see ``reduction``) over loss rows of
    ``(1 - kd) * ce + kd * kl`` at rows with top-k and ``ce`` elsewhere.
    """

    loss: torch.Tensor      # scalar fp32 (fp64 for fp64 inputs)
    ce: torch.Tensor        # [N] fp32 (fp64), 0 off the loss rows
    kl: torch.Tensor        # [N] fp32 (fp64), 0 where a row has no top-k
    correct: torch.Tensor   # [N] bool: argmax over the allowed set == target
    mask: torch.Tensor      # [N] bool: loss rows
    has_topk: torch.Tensor  # [N] bool: loss rows with at least one usable teacher candidate
    streams: torch.Tensor   # [N] int8, as given

    @property
    def n_tokens(self) -> int:
        return int(self.mask.sum())

    def stats(self) -> torch.Tensor:
        """``float64 [9]``: ce_sum, kl_sum, n_kd, tokens per stream 0..2, correct per stream 0..2
        (one tensor so a caller syncs once)."""
        s = self.streams.long().clamp_min(0)
        per = torch.zeros(2, 3, dtype=torch.float64, device=self.ce.device)
        per[0].index_add_(0, s, self.mask.double())
        per[1].index_add_(0, s, (self.correct & self.mask).double())
        head = torch.stack([self.ce.double().sum(), self.kl.double().sum(),
                            self.has_topk.double().sum()])
        return torch.cat([head, per.reshape(-1)])


@dataclass
class _Group:
    """Loss rows that share one candidate matrix: the vq02 slice (+ EOT) or the vq06 slice."""

    rows: torch.Tensor      # [n] long, indices into the flattened rows
    cols: list              # [(start, size)] head-row ranges concatenated into the candidates
    width: torch.Tensor     # [n] int32: allowed candidates are columns [0, width)
    target: torch.Tensor    # [n] int32 column of the target
    topk: torch.Tensor | None  # [n, k] int32 columns, -1 for empty / not allowed
    logp: torch.Tensor | None  # [n, k] fp32 teacher log-probabilities
    w_ce: torch.Tensor      # [n] fp32 weight of the row's CE in the loss
    w_kl: torch.Tensor      # [n] fp32 weight of the row's KL


def _local(ids: torch.Tensor, start: int, size: int, eot_col: torch.Tensor | None,
           eot_id: int) -> torch.Tensor:
    """Global head ids -> candidate columns (``-1`` where not allowed); ``eot_col`` ``[n, 1]``
    holds the EOT column for rows that may end (-1 for rows that may not)."""
    col = torch.where((ids >= start) & (ids < start + size), ids - start, -1)
    if eot_col is not None:
        col = torch.where(ids == eot_id, eot_col, col)
    return col


def _group(rows, streams, targets, topk_ids, topk_logprobs, kd_ratio, r: HeadRanges, vq02: bool):
    start, size = (r.vq02_start, r.vq02_size) if vq02 else (r.vq06_start, r.vq06_size)
    can_end = streams[rows] == 0 if vq02 else torch.zeros_like(rows, dtype=torch.bool)
    width = (size + can_end.int()).int()
    eot_col = torch.where(can_end, size, -1)[:, None] if vq02 else None
    target = _local(targets[rows][:, None], start, size, eot_col, r.eot_id)[:, 0]
    bad = target < 0
    if bool(bad.any()):
        i = int(rows[bad.nonzero()[0, 0]])
        raise ValueError(f"target id {int(targets[i])} at row {i} is outside the set allowed by "
                         f"stream {int(streams[i])}")
    topk = logp = None
    w_kl = torch.zeros(len(rows), dtype=torch.float32, device=rows.device)
    if topk_ids is not None:
        topk = _local(topk_ids[rows], start, size, eot_col, r.eot_id).int()
        logp = topk_logprobs[rows].float()
        w_kl = (topk >= 0).any(1).float() * kd_ratio
    cols = [(start, size)] + ([(r.eot_id, 1)] if vq02 else [])
    return _Group(rows, cols, width, target.int(), topk, logp, 1.0 - w_kl, w_kl)


def _plan(targets, streams, topk_ids, topk_logprobs, kd_ratio, r: HeadRanges):
    """Loss rows split into the vq02 and vq06 groups, with targets / top-k as local columns."""
    if bool((streams > 2).any()):
        raise ValueError(f"stream code {int(streams.max())} is not one of -1, 0, 1, 2")
    loss_rows = (streams >= 0) & (targets != IGNORE_INDEX)
    out = []
    for vq02, member in ((True, (streams == 0) | (streams == 1)), (False, streams == 2)):
        rows = (loss_rows & member).nonzero()[:, 0]
        if len(rows):
            out.append(_group(rows, streams, targets, topk_ids, topk_logprobs, kd_ratio, r, vq02))
    return out, loss_rows


def _candidates(weight: torch.Tensor, cols: list) -> torch.Tensor:
    """``[m, H]`` head rows of the candidate set (a view when it is one slice)."""
    parts = [weight[a:a + n] for a, n in cols]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _scatter_weight_grad(grad_w: torch.Tensor, g: torch.Tensor, cols: list) -> None:
    at = 0
    for a, n in cols:
        grad_w[a:a + n] += g[at:at + n].to(grad_w.dtype)
        at += n


def _chunk_stats(impl: str):
    from kernels import restricted_ce_chunk

    if impl == "triton":
        return restricted_ce_chunk.chunk_stats_triton
    return restricted_ce_chunk.chunk_stats_reference


def _run_group(g: _Group, hidden, weight, chunk, stats_fn, grads, row_out) -> torch.Tensor:
    """Loss sum of one group; fills the per-row outputs and the wanted gradients ``grads``
    (``[d hidden or None, d weight or None]``)."""
    w = _candidates(weight, g.cols)
    acc = row_out[0].dtype
    step = chunk or max(1, DEFAULT_CHUNK_ELEMENTS // w.shape[0])
    gw = torch.zeros(w.shape, dtype=acc, device=w.device) if grads[1] is not None else None
    want = grads[0] is not None or gw is not None
    total = torch.zeros((), dtype=acc, device=hidden.device)
    for a in range(0, len(g.rows), step):
        sl = slice(a, a + step)
        rows = g.rows[sl]
        h = hidden.index_select(0, rows)
        logits = (h @ w.t()).to(acc)
        topk = None if g.topk is None else g.topk[sl]
        logp = None if g.logp is None else g.logp[sl]
        ce, kl, ok = stats_fn(logits, g.width[sl], g.target[sl], topk, logp, g.w_ce[sl],
                              g.w_kl[sl], want)
        total += (g.w_ce[sl] * ce + g.w_kl[sl] * kl).sum()
        row_out[0][rows], row_out[1][rows], row_out[2][rows] = ce, kl, ok
        if want:  # logits now hold d loss / d logits
            d = logits.to(h.dtype)
            if grads[0] is not None:
                grads[0].index_copy_(0, rows, d @ w)
            if gw is not None:
                gw += (d.t() @ h).to(acc)
    if gw is not None:
        _scatter_weight_grad(grads[1], gw, g.cols)
    return total


class _RestrictedLinearCE(torch.autograd.Function):
    """Gradients are computed in forward, chunk by chunk, and only scaled in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, groups, n_rows, chunk, impl, scale, need):
        # ``need``: which of (hidden, weight) want gradients; ctx.needs_input_grad says True under
        # no_grad too. d weight is [V, H] in the weight's dtype; groups accumulate in fp32 first.
        grads = [torch.zeros_like(hidden) if need[0] else None,
                 torch.zeros_like(weight) if need[1] else None]
        dev = hidden.device
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        row_out = (torch.zeros(n_rows, dtype=acc, device=dev),
                   torch.zeros(n_rows, dtype=acc, device=dev),
                   torch.zeros(n_rows, dtype=torch.bool, device=dev))
        stats_fn = _chunk_stats(impl)
        loss = torch.zeros((), dtype=acc, device=dev)
        for g in groups:
            loss += _run_group(g, hidden, weight, chunk, stats_fn, grads, row_out)
        if scale != 1.0:
            loss *= scale
            for t in grads:
                if t is not None:
                    t.mul_(scale)
        ctx.grads = grads
        ctx.mark_non_differentiable(*row_out)
        return (loss, *row_out)

    @staticmethod
    def backward(ctx, grad_loss, *_):
        gh, gw = ctx.grads
        if torch.equal(grad_loss, torch.ones_like(grad_loss)):  # usual: no second [V, H] buffer
            return gh, gw, None, None, None, None, None, None
        gh = None if gh is None else gh * grad_loss.to(gh.dtype)
        gw = None if gw is None else gw * grad_loss.to(gw.dtype)
        return gh, gw, None, None, None, None, None, None


def restricted_linear_ce(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         streams: torch.Tensor, ranges: HeadRanges | tuple, *,
                         topk_ids: torch.Tensor | None = None,
                         topk_logprobs: torch.Tensor | None = None, kd_ratio: float = 0.0,
                         reduction: str = "sum", chunk: int | None = None) -> RestrictedCE:
    """Cross-entropy (and top-k KL) of ``hidden @ weight.T`` over each row's allowed head rows.

    Args:
        hidden: ``[N, H]`` or ``[B, S, H]`` final hidden states (after the final norm).
        weight: ``[V, H]`` the LM head.
        targets: ``long [N]`` or ``[B, S]`` target ids (already shifted), -100 where no loss.
        streams: ``int8 [N]`` or ``[B, S]``: -1 no loss, 0 group start (vq02 + EOT), 1 second
            vq02, 2 vq06.
        ranges: :class:`HeadRanges` or ``(vq02_start, vq02_size, vq06_start, vq06_size, eot_id)``.
        topk_ids: ``long [N, k]`` / ``[B, S, k]`` distinct teacher candidates in student ids, -1
            empty; candidates outside a row's allowed set count as empty (their mass joins the
            tail).
        topk_logprobs: ``float [N, k]`` / ``[B, S, k]`` the teacher's log-probabilities.
        kd_ratio: weight of the KL at rows with top-k: ``(1 - kd) * ce + kd * kl``.
        reduction: ``"sum"`` over loss rows or ``"mean"`` (divided by :attr:`RestrictedCE.n_tokens`
            inside, so a plain ``loss.backward()`` reuses the gradients without a copy).
        chunk: rows per chunk (default: about 2M logits per chunk).
    Returns:
        :class:`RestrictedCE`. KL is ``sum_k p (log p - log q) + p_tail (log p_tail - log
        q_tail)`` with ``p_tail = max(0, 1 - sum_k p)`` and the student's tail mass taken exactly
        as the softmax mass of the allowed rows outside the top-k.
    Raises:
        ValueError: a loss row's target is outside its allowed set; an unknown stream code.
    """
    r = ranges if isinstance(ranges, HeadRanges) else HeadRanges(*ranges)
    h = hidden.reshape(-1, hidden.shape[-1])
    t, s = targets.reshape(-1), streams.reshape(-1)
    if topk_ids is not None:
        topk_ids = topk_ids.reshape(len(t), -1)
        topk_logprobs = topk_logprobs.reshape(len(t), -1)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction {reduction!r} is not 'sum' or 'mean'")
    groups, mask = _plan(t, s, topk_ids, topk_logprobs, float(kd_ratio), r)
    scale = 1.0 / max(sum(len(g.rows) for g in groups), 1) if reduction == "mean" else 1.0
    need = tuple(torch.is_grad_enabled() and x.requires_grad for x in (h, weight))
    loss, ce, kl, ok = _RestrictedLinearCE.apply(h, weight, groups, len(t), chunk,
                                                 pick(hidden, weight), scale, need)
    has_topk = torch.zeros_like(mask)
    for g in groups:
        if g.topk is not None:
            has_topk[g.rows] = (g.topk >= 0).any(1)
    return RestrictedCE(loss, ce, torch.where(has_topk, kl, 0.0), ok, mask, has_topk, s)
