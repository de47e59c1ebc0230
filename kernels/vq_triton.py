"""Triton kernel of :mod:`kernels.vq` (fused distance + argmin). Loaded through
:func:`kernels.jit.triton_kernels`, never imported directly.

A program owns ``BLOCK_N`` rows and sweeps the codebook in ``BLOCK_K`` tiles, keeping the running
best score per row, so the ``[n, k]`` score matrix never reaches memory.
"""
import triton
import triton.language as tl


@triton.jit
def _dot(a, b, PREC: tl.constexpr, WIDEN: tl.constexpr):
    """``a @ b`` in fp32 (WIDEN: bf16 operands widened first; the interpreter's ``tl.dot``
    cannot multiply bf16)."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def assign_codes(X, C, HalfNorm, Out, n, k, d, stride_x, stride_c,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                 PREC: tl.constexpr, WIDEN: tl.constexpr):
    """Grid ``(cdiv(n, BLOCK_N),)``: ``Out[i] = argmax_c (x_i . c - |c|^2 / 2)``, the first on
    ties (the argmin of the squared distance: ``|x_i|^2`` is the same for every code)."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = offs_n < n
    x_ptr = X + offs_n.to(tl.int64)[:, None] * stride_x
    best = tl.full([BLOCK_N], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_N], tl.int32)
    for k0 in range(0, k, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for d0 in range(0, d, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            x = tl.load(x_ptr + offs_d[None, :], mask=row_ok[:, None] & (offs_d[None, :] < d),
                        other=0.0)
            c_t = tl.load(C + offs_k[None, :] * stride_c + offs_d[:, None],
                          mask=(offs_k[None, :] < k) & (offs_d[:, None] < d), other=0.0)
            acc += _dot(x, c_t, PREC, WIDEN)
        half_norm = tl.load(HalfNorm + offs_k, mask=offs_k < k, other=float("inf"))
        tile_best, tile_idx = tl.max(acc - half_norm[None, :], axis=1, return_indices=True,
                                     return_indices_tie_break_left=True)
        # Strictly greater: an earlier tile keeps a tie, as numpy's and torch's argmax do.
        better = tile_best > best
        best = tl.where(better, tile_best, best)
        best_idx = tl.where(better, tile_idx + k0, best_idx)
    tl.store(Out + offs_n, best_idx.to(tl.int64), mask=row_ok)
