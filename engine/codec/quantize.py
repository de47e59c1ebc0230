"""The two codebooks: vq02 over 60 ms blocks, vq06 over the 40 ms blocks of what vq02 missed.

A 120 ms group is 12 frames of mel-cepstra: two vq02 blocks of 6 frames, then three vq06 blocks
of 4 frames quantising the residual left by vq02's centroids. Residual coding makes the two
streams complementary, so together they rebuild the envelope better than either alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kmeans import assign, kmeans

F02, F06 = 6, 4  # frames per vq02 / vq06 token


@dataclass
class DualCodebook:
    """Centroids ``vq02 [k02, 6 * q]`` and ``vq06 [k06, 4 * q]`` over mel-cepstra (q per frame)."""

    vq02: np.ndarray
    vq06: np.ndarray

    @property
    def q(self) -> int:
        return self.vq02.shape[1] // F02

    def encode(self, ceps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cepstra ``[12 * N, q]`` -> codes ``(int32 [2N], int32 [3N])``."""
        blocks = ceps.reshape(-1, F02 * self.q)
        codes02 = assign(blocks, self.vq02)
        residual = (blocks - self.vq02[codes02]).reshape(-1, F06 * self.q)
        return codes02, assign(residual, self.vq06)

    def reconstruct(self, codes02: np.ndarray, codes06: np.ndarray) -> np.ndarray:
        """Codes ``([2N], [3N])`` -> centroid reconstruction ``float32 [12 * N, q]``."""
        return (self.vq02[codes02].reshape(-1, self.q) + self.vq06[codes06].reshape(-1, self.q)).astype(np.float32)

    @classmethod
    def fit(cls, ceps: np.ndarray, sizes: tuple[int, int], iters: int, seed: int,
            progress=None) -> "DualCodebook":
        """Learn both codebooks by k-means on stacked cepstra ``[frames, q]`` (frames % 12 == 0)."""
        q = ceps.shape[1]
        blocks = ceps.reshape(-1, F02 * q)
        report = (lambda name: (lambda i, e: progress(name, i, e))) if progress else (lambda name: None)
        vq02 = kmeans(blocks, sizes[0], iters, seed, report("vq02"))
        residual = (blocks - vq02[assign(blocks, vq02)]).reshape(-1, F06 * q)
        vq06 = kmeans(residual, sizes[1], iters, seed + 1, report("vq06"))
        return cls(vq02, vq06)
