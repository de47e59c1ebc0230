"""Triton kernel of :mod:`kernels.restricted_ce` (one chunk's softmax, loss and gradient). Loaded
through :func:`kernels.jit.triton_kernels`, never imported directly; launched by
``restricted_ce_chunk.chunk_stats_triton``.

One program per row streams the row's candidate logits twice: online logsumexp / argmax / tail
logsumexp, then d loss / d logits written over the logits in place. The matmuls stay in torch.
"""
import triton
import triton.language as tl

NEG_INF = tl.constexpr(float("-inf"))


@triton.jit
def _online_lse(m_run, s_run, z):
    """Fold a block ``z`` into a running (max, sum exp); safe when everything so far is -inf."""
    new_m = tl.maximum(m_run, tl.max(z, 0))
    safe = tl.where(new_m == NEG_INF, 0.0, new_m)
    return new_m, s_run * tl.exp(m_run - safe) + tl.sum(tl.exp(z - safe), 0)


@triton.jit
def restricted_ce_rows(logits_ptr, stride, m, width_ptr, target_ptr, topk_ptr, logp_ptr, k,
                          w_ce_ptr, w_kl_ptr, ce_ptr, kl_ptr, correct_ptr, K: tl.constexpr,
                          HAS_TOPK: tl.constexpr, WANT_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride
    width = tl.load(width_ptr + row)
    target = tl.load(target_ptr + row)
    kk = tl.arange(0, K)
    topk = tl.load(topk_ptr + row * k + kk, mask=kk < k, other=-1)
    valid = topk >= 0
    lp = tl.load(logp_ptr + row * k + kk, mask=valid, other=0.0)
    p = tl.where(valid, tl.exp(lp), 0.0)

    m_run = tl.full([], NEG_INF, tl.float32)
    s_run = tl.zeros([], tl.float32)
    m_tail = tl.full([], NEG_INF, tl.float32)
    s_tail = tl.zeros([], tl.float32)
    best = tl.zeros([], tl.int32)
    for start in range(0, m, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        z = tl.load(base + cols, mask=cols < width, other=NEG_INF)
        # strict '>' keeps the first maximum, as torch.argmax does
        best = tl.where(tl.max(z, 0) > m_run, start + tl.argmax(z, 0).to(tl.int32), best)
        m_run, s_run = _online_lse(m_run, s_run, z)
        if HAS_TOPK:
            in_k = tl.sum((cols[:, None] == topk[None, :]).to(tl.int32), 1) > 0
            m_tail, s_tail = _online_lse(m_tail, s_tail, tl.where(in_k, NEG_INF, z))
    lse = m_run + tl.log(s_run)
    lse_tail = m_tail
    if HAS_TOPK:
        lse_tail = m_tail + tl.log(s_tail)
    tl.store(ce_ptr + row, lse - tl.load(base + target))
    tl.store(correct_ptr + row, (best == target).to(tl.int32))

    p_sum = tl.sum(p, 0)
    tail_p = tl.maximum(1.0 - p_sum, 0.0)
    if HAS_TOPK:
        zk = tl.load(base + topk, mask=valid, other=0.0)
        head = tl.sum(tl.where(p > 0, p * (lp - (zk - lse)), 0.0), 0)
        tail = tl.where(tail_p > 0,
                        tail_p * (tl.log(tl.maximum(tail_p, 1e-30)) - (lse_tail - lse)), 0.0)
        tl.store(kl_ptr + row, head + tail)
    else:
        tl.store(kl_ptr + row, 0.0)

    if WANT_GRAD:
        w_ce = tl.load(w_ce_ptr + row)
        w_kl = tl.load(w_kl_ptr + row)
        for start in range(0, m, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            z = tl.load(base + cols, mask=cols < width, other=NEG_INF)
            q = tl.exp(z - lse)
            g = w_ce * (q - tl.where(cols == target, 1.0, 0.0))
            if HAS_TOPK:
                eq = cols[:, None] == topk[None, :]
                p_cols = tl.sum(tl.where(eq, p[None, :], 0.0), 1)
                outside = (tl.sum(eq.to(tl.int32), 1) > 0) | (cols >= width)
                r = tl.where(outside, 0.0, tl.exp(z - lse_tail))
                r = tl.where(tail_p > 0, tail_p * r, 0.0)  # no tail: lse_tail is -inf
                g += w_kl * ((p_sum + tail_p) * q - p_cols - r)
            tl.store(base + cols, g, mask=cols < m)
