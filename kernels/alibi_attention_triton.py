"""Triton kernels of :mod:`kernels.alibi_attention` (FlashAttention-2 with the sqrt-ALiBi bias).

Loaded through :func:`kernels.jit.triton_kernels`, never imported directly. Scores live in the
log2 domain (``exp2`` is the fast path): ``s2 = log2(e) * (scale * q.k - sqrt(i - j) * slope)``,
and the forward pass stores ``lse2 = log2(sum_j exp2(s2))`` per query for the backward pass.

A program works on one (sequence, head) pair: ``seq`` is the batch row (dense) or the index into
``cu_seqlens`` (packed, batch row 0). Key blocks strictly below the query block's diagonal need no
mask; only the diagonal blocks apply ``j <= i``. Rows or keys past the sequence end load as zeros,
which keeps them finite; they are never stored.
"""
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@triton.jit
def _sequence(cu_seqlens, seq, seq_len_dense, VARLEN: tl.constexpr):
    """(batch row, first token, length) of sequence ``seq``."""
    if VARLEN:
        start = tl.load(cu_seqlens + seq)
        end = tl.load(cu_seqlens + seq + 1)
        return seq * 0, start, end - start
    else:
        return seq, 0, seq_len_dense


@triton.jit
def _dot(a, b, PREC: tl.constexpr, WIDEN: tl.constexpr):
    """``a @ b`` accumulated in fp32. WIDEN: fp32 operands (the interpreter's ``tl.dot`` multiplies
    bf16 bit patterns as integers; the products of widened bf16 values are exact, as on GPUs)."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _alibi_scores(qk, dist, qk_scale, slope2, MASKED: tl.constexpr):
    """log2-domain scores from raw ``q.k`` and ``dist = i - j`` (same shape); -inf where the key
    lies after the query."""
    dist = dist.to(tl.float32)
    s = qk * qk_scale - tl.sqrt(tl.maximum(dist, 0.0)) * slope2
    if MASKED:
        s = tl.where(dist >= 0, s, float("-inf"))
    return s


@triton.jit
def _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, stride_ks, stride_vs, offs_m, offs_d, seq_len,
               lo, hi, qk_scale, slope2, head_dim,
               BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
               PREC: tl.constexpr, WIDEN: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[None, :] < seq_len) & (offs_d[:, None] < head_dim)
        k_t = tl.load(k_ptr + offs_n[None, :] * stride_ks + offs_d[:, None], mask=kv_mask,
                      other=0.0)
        s = _alibi_scores(_dot(q, k_t, PREC, WIDEN), offs_m[:, None] - offs_n[None, :],
                          qk_scale, slope2, MASKED)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + offs_n[:, None] * stride_vs + offs_d[None, :], mask=tl.trans(kv_mask),
                    other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, WIDEN)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def attention_fwd(Q, K, V, Out, Lse, Slopes, CuSeqlens,
                  stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                  stride_vb, stride_vh, stride_vs, stride_ob, stride_oh, stride_os,
                  n_heads, group_size, seq_len_dense, lse_len, head_dim, qk_scale,
                  VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr, PREC: tl.constexpr, WIDEN: tl.constexpr):
    """Grid ``(cdiv(max_seqlen, BLOCK_M), n_seqs * heads)``; ``BLOCK_M % BLOCK_N == 0``."""
    pid_m, pid_sh = tl.program_id(0), tl.program_id(1)
    seq, h = pid_sh // n_heads, pid_sh % n_heads
    b, start, seq_len = _sequence(CuSeqlens, seq, seq_len_dense, VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m >= seq_len:
        return
    b = b.to(tl.int64)
    g = h // group_size
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ptr = Q + b * stride_qb + h * stride_qh + start * stride_qs
    k_ptr = K + b * stride_kb + g * stride_kh + start * stride_ks
    v_ptr = V + b * stride_vb + g * stride_vh + start * stride_vs
    row_mask = (offs_m[:, None] < seq_len) & (offs_d[None, :] < head_dim)
    q = tl.load(q_ptr + offs_m[:, None] * stride_qs + offs_d[None, :], mask=row_mask, other=0.0)
    slope2 = tl.load(Slopes + h) * 1.4426950408889634

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, stride_ks, stride_vs, offs_m, offs_d,
                               seq_len, 0, start_m, qk_scale, slope2, head_dim,
                               BLOCK_N, False, PREC, WIDEN)
    acc, l_i, m_i = _fwd_inner(acc, l_i, m_i, q, k_ptr, v_ptr, stride_ks, stride_vs, offs_m, offs_d,
                               seq_len, start_m, tl.minimum(start_m + BLOCK_M, seq_len), qk_scale,
                               slope2, head_dim, BLOCK_N, True, PREC, WIDEN)
    out = acc / l_i[:, None]
    o_ptr = Out + b * stride_ob + h * stride_oh + start * stride_os
    tl.store(o_ptr + offs_m[:, None] * stride_os + offs_d[None, :], out.to(Out.dtype.element_ty),
             mask=row_mask)
    lse_ptr = Lse + (b * n_heads + h) * lse_len + start
    tl.store(lse_ptr + offs_m, m_i + tl.math.log2(l_i), mask=offs_m < seq_len)


@triton.jit
def _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, stride_qs, stride_dos, offs_n,
                offs_d, seq_len, lo, hi, qk_scale, slope2, head_dim,
                BLOCK_M: tl.constexpr, MASKED: tl.constexpr,
               PREC: tl.constexpr, WIDEN: tl.constexpr):
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < seq_len
        q_t = tl.load(q_ptr + offs_m[None, :] * stride_qs + offs_d[:, None],
                      mask=row_ok[None, :] & (offs_d[:, None] < head_dim), other=0.0)
        lse = tl.load(lse_ptr + offs_m, mask=row_ok, other=0.0)
        # Transposed scores [keys, queries]: dk and dv accumulate along the query axis.
        s_t = _alibi_scores(_dot(k, q_t, PREC, WIDEN), offs_m[None, :] - offs_n[:, None],
                            qk_scale, slope2, MASKED)
        p_t = tl.math.exp2(s_t - lse[None, :])
        do = tl.load(do_ptr + offs_m[:, None] * stride_dos + offs_d[None, :],
                     mask=row_ok[:, None] & (offs_d[None, :] < head_dim), other=0.0)
        dv += _dot(p_t.to(do.dtype), do, PREC, WIDEN)
        delta = tl.load(delta_ptr + offs_m, mask=row_ok, other=0.0)
        dp_t = _dot(v, tl.trans(do), PREC, WIDEN)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _dot(ds_t.to(q_t.dtype), tl.trans(q_t), PREC, WIDEN)
    return dk, dv


@triton.jit
def attention_bwd_dkdv(Q, K, V, DO, DK, DV, Lse, Delta, Slopes, CuSeqlens,
                       stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                       stride_vb, stride_vh, stride_vs, stride_dob, stride_doh, stride_dos,
                       stride_dkb, stride_dkh, stride_dks, stride_dvb, stride_dvh, stride_dvs,
                       n_heads, n_groups, group_size, seq_len_dense, lse_len, head_dim, sm_scale,
                       qk_scale,
                       VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_D: tl.constexpr, PREC: tl.constexpr, WIDEN: tl.constexpr):
    """Grid ``(cdiv(max_seqlen, BLOCK_N), n_seqs * groups)``; ``BLOCK_N % BLOCK_M == 0``. One
    program sums the group's heads itself, so GQA needs no atomics and no per-head buffers."""
    pid_n, pid_sg = tl.program_id(0), tl.program_id(1)
    seq, g = pid_sg // n_groups, pid_sg % n_groups
    b, start, seq_len = _sequence(CuSeqlens, seq, seq_len_dense, VARLEN)
    start_n = pid_n * BLOCK_N
    if start_n >= seq_len:
        return
    b = b.to(tl.int64)
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    key_mask = (offs_n[:, None] < seq_len) & (offs_d[None, :] < head_dim)
    k = tl.load(K + b * stride_kb + g * stride_kh + (start + offs_n[:, None]) * stride_ks
                + offs_d[None, :], mask=key_mask, other=0.0)
    v = tl.load(V + b * stride_vb + g * stride_vh + (start + offs_n[:, None]) * stride_vs
                + offs_d[None, :], mask=key_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    diag_end = tl.minimum(start_n + BLOCK_N, seq_len)
    for i in range(group_size):
        h = g * group_size + i
        slope2 = tl.load(Slopes + h) * 1.4426950408889634
        q_ptr = Q + b * stride_qb + h * stride_qh + start * stride_qs
        do_ptr = DO + b * stride_dob + h * stride_doh + start * stride_dos
        lse_ptr = Lse + (b * n_heads + h) * lse_len + start
        delta_ptr = Delta + (b * n_heads + h) * lse_len + start
        dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, stride_qs, stride_dos,
                             offs_n, offs_d, seq_len, start_n, diag_end, qk_scale, slope2, head_dim,
                             BLOCK_M, True, PREC, WIDEN)
        dk, dv = _dkdv_inner(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, stride_qs, stride_dos,
                             offs_n, offs_d, seq_len, start_n + BLOCK_N, seq_len, qk_scale, slope2,
                             head_dim, BLOCK_M, False, PREC, WIDEN)
    tl.store(DK + b * stride_dkb + g * stride_dkh + (start + offs_n[:, None]) * stride_dks
             + offs_d[None, :], (dk * sm_scale).to(DK.dtype.element_ty), mask=key_mask)
    tl.store(DV + b * stride_dvb + g * stride_dvh + (start + offs_n[:, None]) * stride_dvs
             + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=key_mask)


@triton.jit
def _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, stride_ks, stride_vs, offs_m, offs_d, seq_len,
              lo, hi, qk_scale, slope2, head_dim,
              BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
               PREC: tl.constexpr, WIDEN: tl.constexpr):
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[None, :] < seq_len) & (offs_d[:, None] < head_dim)
        k_t = tl.load(k_ptr + offs_n[None, :] * stride_ks + offs_d[:, None], mask=kv_mask,
                      other=0.0)
        v_t = tl.load(v_ptr + offs_n[None, :] * stride_vs + offs_d[:, None], mask=kv_mask,
                      other=0.0)
        s = _alibi_scores(_dot(q, k_t, PREC, WIDEN), offs_m[:, None] - offs_n[None, :],
                          qk_scale, slope2, MASKED)
        p = tl.math.exp2(s - lse[:, None])
        dp = _dot(do, v_t, PREC, WIDEN)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k_t.dtype), tl.trans(k_t), PREC, WIDEN)
    return dq


@triton.jit
def attention_bwd_dq(Q, K, V, DO, DQ, Lse, Delta, Slopes, CuSeqlens,
                     stride_qb, stride_qh, stride_qs, stride_kb, stride_kh, stride_ks,
                     stride_vb, stride_vh, stride_vs, stride_dob, stride_doh, stride_dos,
                     stride_dqb, stride_dqh, stride_dqs,
                     n_heads, group_size, seq_len_dense, lse_len, head_dim, sm_scale, qk_scale,
                     VARLEN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_D: tl.constexpr, PREC: tl.constexpr, WIDEN: tl.constexpr):
    """Grid ``(cdiv(max_seqlen, BLOCK_M), n_seqs * heads)``; ``BLOCK_M % BLOCK_N == 0``."""
    pid_m, pid_sh = tl.program_id(0), tl.program_id(1)
    seq, h = pid_sh // n_heads, pid_sh % n_heads
    b, start, seq_len = _sequence(CuSeqlens, seq, seq_len_dense, VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m >= seq_len:
        return
    b = b.to(tl.int64)
    g = h // group_size
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = (offs_m[:, None] < seq_len) & (offs_d[None, :] < head_dim)
    q = tl.load(Q + b * stride_qb + h * stride_qh + (start + offs_m[:, None]) * stride_qs
                + offs_d[None, :], mask=row_mask, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + (start + offs_m[:, None]) * stride_dos
                 + offs_d[None, :], mask=row_mask, other=0.0)
    row_ok = offs_m < seq_len
    lse = tl.load(Lse + (b * n_heads + h) * lse_len + start + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(Delta + (b * n_heads + h) * lse_len + start + offs_m, mask=row_ok, other=0.0)
    slope2 = tl.load(Slopes + h) * 1.4426950408889634
    k_ptr = K + b * stride_kb + g * stride_kh + start * stride_ks
    v_ptr = V + b * stride_vb + g * stride_vh + start * stride_vs
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, stride_ks, stride_vs, offs_m, offs_d,
                   seq_len, 0, start_m, qk_scale, slope2, head_dim, BLOCK_N, False, PREC, WIDEN)
    dq = _dq_inner(dq, q, do, lse, delta, k_ptr, v_ptr, stride_ks, stride_vs, offs_m, offs_d,
                   seq_len, start_m, tl.minimum(start_m + BLOCK_M, seq_len), qk_scale, slope2,
                   head_dim, BLOCK_N, True, PREC, WIDEN)
    tl.store(DQ + b * stride_dqb + h * stride_dqh + (start + offs_m[:, None]) * stride_dqs
             + offs_d[None, :], (dq * sm_scale).to(DQ.dtype.element_ty), mask=row_mask)
