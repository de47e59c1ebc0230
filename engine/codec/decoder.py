"""The codec's decoder: token codes (plus their centroid reconstruction) -> log-mel frames.

A small 1-D conv net over 120 ms token groups (2 vq02 + 3 vq06 codes each). Centroids alone give
a blurred, blocky envelope; the net sees the codes of the three groups either side (+-360 ms,
about a syllable of co-articulation) and corrects the centroids' mel. Working at the group rate
(8.3 Hz) rather than per 10 ms frame keeps it cheap enough to train on two CPU cores.

The context is kept short on purpose. With +-9 groups (about a second) the net did better on
held-out sentences but 3.6 WER points worse on random-word strings than the bare centroids: the
~640 training sentences are rendered about six times each, and a wide net learns their word
sequences. At +-3 groups both kinds of text come out alike (bench/RESULTS.md).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

FRAMES = 12  # 10 ms frames per group
N02, N06 = 2, 3  # codes per group


class ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(nn.functional.gelu(self.conv(x)))


class MelDecoder(nn.Module):
    """Codes -> log-mel, one group (12 frames) per step.

    Args:
        q: coefficients per frame in the centroid reconstruction.
        n_mels: output mel bins.
        sizes: (vq02 codebook size, vq06 codebook size).
    """

    def __init__(self, q: int, n_mels: int, sizes: tuple[int, int], channels: int = 256,
                 emb: int = 32, dilations: tuple[int, ...] = (1, 1)):
        super().__init__()
        self.n_mels = n_mels
        self.context_groups = 1 + sum(dilations)  # the input conv's reach, then each block's
        self.emb02 = nn.Embedding(sizes[0], emb)
        self.emb06 = nn.Embedding(sizes[1], emb)
        self.inp = nn.Conv1d(FRAMES * q + (N02 + N06) * emb, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(channels, d) for d in dilations])
        self.out = nn.Conv1d(channels, FRAMES * n_mels, 1)
        # Cepstra -> mel (the inverse DCT): the net predicts a correction to the centroids' mel,
        # so it starts from the k-means reconstruction instead of from nothing.
        import scipy.fft

        basis = scipy.fft.idct(np.eye(q, n_mels, dtype=np.float32), type=2, norm="ortho", axis=1)
        self.register_buffer("to_mel", torch.from_numpy(basis.astype(np.float32)), persistent=False)

    def forward(self, recon: torch.Tensor, codes02: torch.Tensor, codes06: torch.Tensor) -> torch.Tensor:
        """
        Args:
            recon: ``[batch, groups * 12, q]`` centroid reconstruction.
            codes02: ``int64 [batch, groups * 2]``; codes06: ``int64 [batch, groups * 3]``.
        Returns:
            ``[batch, groups * 12, n_mels]`` log-mel.
        """
        b, g = codes02.shape[0], codes02.shape[1] // N02
        x = torch.cat([
            0.1 * recon.reshape(b, g, -1),  # cepstra reach ~50: scale to unit-ish inputs
            self.emb02(codes02).reshape(b, g, -1),
            self.emb06(codes06).reshape(b, g, -1),
        ], dim=2)
        h = self.blocks(self.inp(x.transpose(1, 2)))
        correction = self.out(h).transpose(1, 2).reshape(b, g * FRAMES, self.n_mels)
        return recon @ self.to_mel + correction


def build_decoder(config: dict, q: int, sizes: tuple[int, int], tensors: dict | None = None) -> MelDecoder:
    """A decoder from its config (``channels``, ``emb``, ``dilations``, ``n_mels``), optionally
    loaded with numpy tensors (names as in ``state_dict``) and put in eval mode."""
    net = MelDecoder(q, config["n_mels"], sizes, channels=config["channels"], emb=config["emb"],
                     dilations=tuple(config["dilations"]))
    if tensors is not None:
        net.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
        net.eval()
    return net
