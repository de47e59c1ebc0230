"""Griffin-Lim vocoder: log-mel frames back to a 16 kHz waveform.

Uses the "fast" Griffin-Lim update (Perraudin et al. 2013: momentum on the projected spectrum),
which reaches in ~30 iterations the consistency plain Griffin-Lim needs ~100 for.
"""
from __future__ import annotations

import numpy as np

from . import mel


def griffin_lim(magnitude: np.ndarray, n_samples: int, n_iter: int = 32,
                momentum: float = 0.99, seed: int = 0) -> np.ndarray:
    """Phase a magnitude spectrogram.

    Args:
        magnitude: ``float32 [frames, n_fft // 2 + 1]``.
        n_samples: output length (``frames * hop`` for codec frames).
        n_iter: projections; the phase is seeded from a fixed RNG so output is deterministic.
    Returns:
        ``float32 [n_samples]``.
    """
    return griffin_lim_from(magnitude, random_phases(magnitude.shape, seed), n_samples, n_iter, momentum)[0]


def random_phases(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Unit complex numbers of uniformly random angle (Griffin-Lim's starting phase)."""
    rng = np.random.default_rng(seed)
    return np.exp(2j * np.pi * rng.random(shape)).astype(np.complex64)


def griffin_lim_from(magnitude: np.ndarray, angles: np.ndarray, n_samples: int, n_iter: int = 32,
                     momentum: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """Griffin-Lim from given starting phases ``angles`` (unit complex, magnitude's shape);
    returns (waveform ``float32 [n_samples]``, the final phases)."""
    previous = np.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = mel.stft(mel.istft(magnitude * angles, n_samples))[: len(magnitude)]
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        previous = rebuilt
        angles = accelerated / np.maximum(np.abs(accelerated), 1e-8)
    return mel.istft(magnitude * angles, n_samples), angles


def vocode(logmel: np.ndarray, n_iter: int = 32) -> np.ndarray:
    """Log-mel ``[frames, n_mels]`` (10 ms hop) -> waveform ``float32 [frames * 160]``."""
    if len(logmel) == 0:
        return np.zeros(0, np.float32)
    wav = griffin_lim(mel.mel_to_magnitude(logmel), len(logmel) * mel.HOP, n_iter=n_iter)
    return np.clip(wav, -1.0, 1.0).astype(np.float32)
