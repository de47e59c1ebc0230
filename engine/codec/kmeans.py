"""Nearest-centroid assignment and Lloyd k-means, batched in numpy.

``assign`` is the one hot spot of encoding and of training; it is a single function so that a
fused GPU kernel can replace it without touching its callers: torch tensors (e.g. features on a
GPU) go to ``kernels.assign_codes`` (Triton on CUDA); numpy arrays stay on the numpy path, whose
codes the shipped codec version was built with.
"""
from __future__ import annotations

import sys

import numpy as np

_CHUNK = 8192  # rows per matmul: bounds the [chunk, k] score matrix to ~130 MB at k = 4096


def assign(features: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared Euclidean) for each row.

    Args:
        features: ``float32 [n, d]``, a numpy array or a torch tensor.
        centroids: ``float32 [k, d]``, numpy or torch (moved to the features' device).
    Returns:
        ``int32 [n]`` in ``0..k-1``: numpy for numpy features, else a tensor on their device.
    """
    if _is_tensor(features):
        return _assign_tensor(features, centroids)
    x = np.ascontiguousarray(features, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    # argmin |x - c|^2 == argmax (x.c - |c|^2 / 2): |x|^2 is the same for every centroid.
    half_norm = 0.5 * np.einsum("kd,kd->k", c, c)
    codes = np.empty(len(x), np.int32)
    for lo in range(0, len(x), _CHUNK):
        scores = x[lo:lo + _CHUNK] @ c.T
        scores -= half_norm
        codes[lo:lo + _CHUNK] = scores.argmax(axis=1)
    return codes


def _is_tensor(x) -> bool:
    # torch is imported only by callers that hand over tensors; numpy callers never load it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _assign_tensor(features, centroids):
    import torch

    from kernels.vq import assign_codes

    c = torch.as_tensor(centroids, device=features.device).to(features.dtype)
    return assign_codes(features, c).to(torch.int32)


def _update(x: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster means ``[k, d]`` and sizes ``[k]`` (means of empty clusters are zero)."""
    from scipy import sparse

    counts = np.bincount(codes, minlength=k)
    onehot = sparse.csr_matrix((np.ones(len(codes), np.float32), (codes, np.arange(len(codes)))), shape=(k, len(x)))
    sums = np.asarray(onehot @ x)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32), counts


def kmeans(x: np.ndarray, k: int, iters: int = 20, seed: int = 0, progress=None) -> np.ndarray:
    """Lloyd's k-means, deterministic for a given seed.

    Centroids start at ``k`` distinct random rows; a cluster that empties is re-seeded with a
    random member of the largest cluster, so every code stays in use.

    Args:
        x: ``float32 [n, d]`` with ``n >= k``.
        progress: optional callable ``progress(iteration, mean_squared_error)``.
    Returns:
        ``float32 [k, d]`` centroids.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means needs at least k={k} vectors, got {len(x)}")
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), size=k, replace=False)].copy()
    for it in range(iters):
        codes = assign(x, centroids)
        centroids, counts = _update(x, codes, k)
        for empty in np.flatnonzero(counts == 0):
            members = np.flatnonzero(codes == counts.argmax())
            centroids[empty] = x[rng.choice(members)]
            counts[counts.argmax()] -= 1
        if progress is not None:
            progress(it, float(np.mean((x - centroids[codes]) ** 2)))
    return centroids
