"""Nearest-centroid assignment (squared Euclidean): a fused distance + argmin Triton kernel
beside the PyTorch reference it must match.

    from kernels import assign_codes
    codes = assign_codes(x, centroids)      # x [n, d], centroids [k, d] -> int64 [n]

The melvq tokenizer's hot spot (``engine.codec.kmeans.assign`` sends torch tensors here); k is
1024 (vq02) or 4096 (vq06). Both paths score ``x . c - |c|^2 / 2`` and take the first maximum.
"""
from __future__ import annotations

import torch

from kernels.backend import pick

_CHUNK = 8192  # reference rows per matmul: bounds the [chunk, k] score matrix


def assign_codes(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid for each row; Triton on CUDA, the reference elsewhere.

    Args:
        x: ``[n, d]`` float32, bf16 or fp16.
        centroids: ``[k, d]``, same dtype and device as ``x``.
    Returns:
        ``int64 [n]`` in ``0..k-1``.
    """
    if x.ndim != 2 or centroids.ndim != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(f"need x [n, d] and centroids [k, d], got {tuple(x.shape)} and "
                         f"{tuple(centroids.shape)}")
    if x.dtype != centroids.dtype:
        raise ValueError(f"x and centroids dtypes differ: {x.dtype}, {centroids.dtype}")
    if pick(x, centroids) == "triton":
        return _assign_triton(x, centroids)
    return assign_codes_reference(x, centroids)


def assign_codes_reference(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """:func:`assign_codes` in PyTorch (fp32 scores, in row chunks)."""
    c = centroids.float()
    half_norm = 0.5 * (c * c).sum(1)
    out = torch.empty(len(x), dtype=torch.int64, device=x.device)
    for lo in range(0, len(x), _CHUNK):
        out[lo:lo + _CHUNK] = (x[lo:lo + _CHUNK].float() @ c.T - half_norm).argmax(1)
    return out


def _blocks(x: torch.Tensor) -> dict:
    """Tiles that ptxas (sm_90) fits in registers without spilling; fp32 scores with IEEE FMA
    dots (tf32 would flip near-ties against the reference, and codes are tokens)."""
    if not x.is_cuda:  # interpreter: few, large numpy ops
        return dict(BLOCK_N=64, BLOCK_K=64, BLOCK_D=32, num_warps=4, num_stages=1)
    if x.dtype == torch.float32:
        return dict(BLOCK_N=64, BLOCK_K=64, BLOCK_D=16, num_warps=4, num_stages=3)
    return dict(BLOCK_N=128, BLOCK_K=128, BLOCK_D=32, num_warps=8, num_stages=3)


def _assign_triton(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    from kernels.jit import interpreting, triton_kernels

    tk = triton_kernels("vq_triton")
    x = x if x.stride(-1) == 1 else x.contiguous()
    c = centroids.contiguous()
    half_norm = 0.5 * (c.float() * c.float()).sum(1)
    out = torch.empty(len(x), dtype=torch.int64, device=x.device)
    cfg = _blocks(x)
    grid = (-(-len(x) // cfg["BLOCK_N"]),)
    tk.assign_codes[grid](x, c, half_norm, out, len(x), len(c), x.shape[1], x.stride(0),
                          c.stride(0), PREC="ieee" if x.dtype == torch.float32 else "tf32",
                          WIDEN=interpreting() and x.dtype == torch.bfloat16, **cfg)
    return out
