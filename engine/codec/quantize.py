"""The two codebooks: one stage quantises the mel-cepstra, the other what the first one missed.

A 120 ms group is 12 frames of mel-cepstra: two vq02 blocks of 6 frames and three vq06 blocks of
4 frames. The first stage quantises the cepstra, the second the residual left by the first
stage's centroids; residual coding makes the two streams complementary, so together they rebuild
the envelope better than either alone. Decoding adds both centroids, whatever the order.

Which stream goes first is part of the weights (``first``). vq06 first (the 4096-code book on
the finer 40 ms grid, then the 1024-code book on the 60 ms residual) is what ships: at the same
token rates it cut held-out cepstral error by 21% and the round trip's WER by 5 points against
vq02 first (bench/RESULTS.md). ``first="vq02"`` reads weights made before that change.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kmeans import assign, kmeans

F02, F06 = 6, 4  # frames per vq02 / vq06 token


FIRST = ("vq02", "vq06")


@dataclass
class DualCodebook:
    """Centroids ``vq02 [k02, 6 * q]`` and ``vq06 [k06, 4 * q]`` over mel-cepstra (q per frame);
    ``first`` names the stream that quantises the cepstra (the other one takes the residual)."""

    vq02: np.ndarray
    vq06: np.ndarray
    first: str = "vq02"

    def __post_init__(self):
        if self.first not in FIRST:
            raise ValueError(f"codebook order first={self.first!r}: expected one of {', '.join(FIRST)}")

    @property
    def q(self) -> int:
        return self.vq02.shape[1] // F02

    def encode(self, ceps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cepstra ``[12 * N, q]`` -> codes ``(int32 [2N], int32 [3N])``."""
        if self.first == "vq02":
            codes02, codes06 = _two_stage(ceps, self.vq02, F02, self.vq06, F06)
        else:
            codes06, codes02 = _two_stage(ceps, self.vq06, F06, self.vq02, F02)
        return codes02, codes06

    def reconstruct(self, codes02: np.ndarray, codes06: np.ndarray) -> np.ndarray:
        """Codes ``([2N], [3N])`` -> centroid reconstruction ``float32 [12 * N, q]``."""
        return (self.vq02[codes02].reshape(-1, self.q) + self.vq06[codes06].reshape(-1, self.q)).astype(np.float32)

    @classmethod
    def fit(cls, ceps: np.ndarray, sizes: tuple[int, int], iters: int, seed: int,
            progress=None, first: str = "vq06") -> "DualCodebook":
        """Learn both codebooks by k-means on stacked cepstra ``[frames, q]`` (frames % 12 == 0),
        the ``first`` stream's on the cepstra, then the other's on the residual."""
        q = ceps.shape[1]
        report = (lambda name: (lambda i, e: progress(name, i, e))) if progress else (lambda name: None)
        frames = {"vq02": F02, "vq06": F06}
        second = FIRST[1 - FIRST.index(first)]
        seeds = {"vq02": seed, "vq06": seed + 1}
        sizes_by = dict(zip(FIRST, sizes))
        blocks = ceps.reshape(-1, frames[first] * q)
        books = {first: kmeans(blocks, sizes_by[first], iters, seeds[first], report(first))}
        residual = (blocks - books[first][assign(blocks, books[first])]).reshape(-1, frames[second] * q)
        books[second] = kmeans(residual, sizes_by[second], iters, seeds[second], report(second))
        return cls(books["vq02"], books["vq06"], first)


def _two_stage(ceps: np.ndarray, book1: np.ndarray, frames1: int, book2: np.ndarray, frames2: int):
    """Codes of ``book1`` over blocks of ``frames1`` frames, then of ``book2`` over the residual."""
    q = ceps.shape[1]
    blocks = ceps.reshape(-1, frames1 * q)
    codes1 = assign(blocks, book1)
    residual = (blocks - book1[codes1]).reshape(-1, frames2 * q)
    return codes1, assign(residual, book2)
