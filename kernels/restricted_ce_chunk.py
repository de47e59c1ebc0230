"""One chunk of :func:`kernels.restricted_ce.restricted_linear_ce`: per-row loss, accuracy and
d loss / d logits over the allowed candidate columns, as a PyTorch reference and as a launcher of
the Triton kernel (``restricted_ce_triton.py``) that must match it."""
from __future__ import annotations

import torch


def _tail_gradient(z, lse, lse_tail, in_k, allowed, p_cols, p_sum, tail_p):
    """d KL / d logits ``[c, m]``: the student's softmax minus the teacher distribution extended
    to the whole allowed set (top-k mass where the teacher has it, its tail mass spread like the
    student's own tail)."""
    q = torch.exp(z - lse[:, None])
    r = torch.exp(z - lse_tail[:, None])
    r = torch.where(in_k | ~allowed | (tail_p[:, None] <= 0), 0.0, r)
    return (p_sum + tail_p)[:, None] * q - p_cols - tail_p[:, None] * r


def _topk_kl(z, lse, allowed, topk, logp, want_grad):
    """KL(teacher || student) per row over the top-k support plus the tail; and its gradient."""
    c, m = z.shape
    valid = topk >= 0
    col = torch.where(valid, topk.long(), m)  # empty slots land in a spare column
    p = torch.where(valid, logp.to(z.dtype).exp(), 0.0)
    p_cols = z.new_zeros(c, m + 1).scatter_add_(1, col, p)[:, :m]
    in_k = torch.zeros(c, m + 1, dtype=torch.bool, device=z.device).scatter_(1, col, True)[:, :m]
    lse_tail = z.masked_fill(in_k, float("-inf")).logsumexp(1)
    zk = z.gather(1, col.clamp_max(m - 1))
    p_sum = p.sum(1)
    tail_p = (1.0 - p_sum).clamp_min(0.0)
    head = torch.where(p > 0, p * (logp.to(z.dtype) - (zk - lse[:, None])), 0.0).sum(1)
    tail = torch.where(tail_p > 0, tail_p * (tail_p.clamp_min(1e-30).log() - (lse_tail - lse)), 0.0)
    if not want_grad:
        return head + tail, None
    return head + tail, _tail_gradient(z, lse, lse_tail, in_k, allowed, p_cols, p_sum, tail_p)


def chunk_stats_reference(logits, width, target, topk, logp, w_ce, w_kl, want_grad):
    """Loss terms of one chunk; with ``want_grad`` overwrites ``logits`` with d loss / d logits.

    Args:
        logits: ``fp32 | fp64 [c, m]`` candidate logits (contiguous).
        width: ``int [c]``: columns ``[0, width)`` are allowed.
        target: ``int [c]`` target column.
        topk: ``int [c, k]`` teacher candidate columns (-1 empty) or None; logp: ``[c, k]``.
        w_ce, w_kl: ``fp32 [c]`` weights of each row's CE and KL in the loss.
    Returns:
        ``ce [c]``, ``kl [c]`` (0 without top-k), ``correct bool [c]``.
    """
    c, m = logits.shape
    allowed = torch.arange(m, device=logits.device)[None, :] < width[:, None]
    z = logits.masked_fill(~allowed, float("-inf"))
    lse = z.logsumexp(1)
    tgt = target.long()[:, None]
    ce = lse - z.gather(1, tgt)[:, 0]
    correct = z.argmax(1) == tgt[:, 0]
    kl, kl_grad = torch.zeros_like(ce), None
    if topk is not None and topk.shape[1]:
        kl, kl_grad = _topk_kl(z, lse, allowed, topk, logp, want_grad)
    if want_grad:
        g = torch.exp(z - lse[:, None])
        g.scatter_add_(1, tgt, -torch.ones_like(g[:, :1]))
        g *= w_ce.to(g.dtype)[:, None]
        if kl_grad is not None:
            g += w_kl.to(g.dtype)[:, None] * kl_grad
        logits.copy_(g)
    return ce, kl, correct


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _block(k: int, on_gpu: bool) -> int:
    if not on_gpu:
        return 2048  # interpreter: few, large numpy ops
    # the [BLOCK, K] membership test lives in registers: shrink BLOCK as k grows
    return 1024 if k == 0 else max(128, min(1024, 8192 // _pow2(k)))


def chunk_stats_triton(logits, width, target, topk, logp, w_ce, w_kl, want_grad):
    """Triton twin of :func:`chunk_stats_reference` (fp32 logits; other dtypes use the
    reference)."""
    if logits.dtype != torch.float32:
        return chunk_stats_reference(logits, width, target, topk, logp, w_ce, w_kl, want_grad)
    from kernels.jit import triton_kernels

    c, m = logits.shape
    dev = logits.device
    k = 0 if topk is None else topk.shape[1]
    if k == 0:
        topk = torch.full((c, 1), -1, dtype=torch.int32, device=dev)
        logp = torch.zeros((c, 1), dtype=torch.float32, device=dev)
    ce, kl = torch.empty(c, device=dev), torch.empty(c, device=dev)
    correct = torch.empty(c, dtype=torch.int32, device=dev)
    if c:
        triton_kernels("restricted_ce_triton").restricted_ce_rows[(c,)](
            logits, logits.stride(0), m, width.int().contiguous(), target.int().contiguous(),
            topk.int().contiguous(), logp.float().contiguous(), max(k, 1),
            w_ce.float().contiguous(), w_kl.float().contiguous(), ce, kl, correct,
            K=_pow2(max(k, 1)), HAS_TOPK=k > 0, WANT_GRAD=bool(want_grad),
            BLOCK=_block(k, logits.is_cuda), num_warps=8)
    return ce, kl, correct.bool()
