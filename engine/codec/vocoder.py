"""Griffin-Lim vocoder: log-mel frames back to a 16 kHz waveform.

Uses the "fast" Griffin-Lim update (Perraudin et al. 2013: momentum on the projected spectrum),
which reaches in ~30 iterations the consistency plain Griffin-Lim needs ~100 for.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

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
    return griffin_lim_many([(magnitude, angles, n_samples)], n_iter, momentum)[0]


# Frames of silence between two signals laid on one axis: more than a window (N_FFT samples), so
# no analysis or synthesis window reaches from one signal into the next.
GAP = -(-mel.N_FFT // mel.HOP)


def griffin_lim_many(jobs: list[tuple[np.ndarray, np.ndarray, int]], n_iter: int = 32,
                     momentum: float = 0.99) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`griffin_lim_from` of several independent signals at once, each exactly as alone.

    ``jobs``: (magnitude ``[frames, bins]``, starting phases, n_samples <= frames * HOP) each.
    The signals are laid on one time axis, ``GAP`` silent frames apart, and phased together: one
    pair of FFTs per iteration for all of them rather than per signal. Each signal's samples
    outside its own ``[0, n_samples)`` are held at zero and the overlap-add is normalised by its
    own frames' windows only, which is what phasing it alone computes (the tests compare).
    Returns (waveform ``float32 [n_samples]``, final phases) per job, in order.
    """
    hop, pad = mel.HOP, mel.N_FFT // 2
    starts, total = [], 0
    for magnitude, angles, n in jobs:
        if angles.shape != magnitude.shape or not 0 <= n <= len(magnitude) * hop:
            raise ValueError(f"a job of {magnitude.shape} magnitudes, {angles.shape} phases and {n} samples")
        starts.append(total)
        total += len(magnitude) + GAP
    mags = np.zeros((total, mel.N_FFT // 2 + 1), np.float32)
    phases = np.ones_like(mags, dtype=np.complex64)
    voiced = np.zeros(total, np.float32)      # 1 on the jobs' frames, 0 on the gaps
    keep = np.zeros((total + GAP) * hop, bool)  # the samples each job would keep alone
    for (magnitude, angles, n), start in zip(jobs, starts):
        mags[start:start + len(magnitude)] = magnitude
        phases[start:start + len(magnitude)] = angles
        voiced[start:start + len(magnitude)] = 1.0
        keep[start * hop + pad:start * hop + pad + n] = True
    window = mel.window()
    norm = np.maximum(mel.overlap_add(voiced[:, None] * window ** 2), 1e-3)
    inverse_norm = np.where(keep[:len(norm)], 1.0 / norm, 0.0).astype(np.float32)  # 0 outside the jobs

    def synthesize(spec: np.ndarray) -> np.ndarray:
        frames = scipy.fft.irfft(spec, n=mel.N_FFT, axis=1).astype(np.float32, copy=False)
        frames *= window
        signal = mel.overlap_add(frames)
        signal *= inverse_norm
        return signal

    def analyse(signal: np.ndarray) -> np.ndarray:
        return scipy.fft.rfft(mel.frame_view(signal, total) * window, axis=1).astype(np.complex64, copy=False)

    # The fast Griffin-Lim update with the magnitudes folded in: spec = |X| * acc / |acc| in one
    # complex-by-real product per iteration (a complex division costs five times that).
    keep_rate = momentum / (1 + momentum)
    spec, previous, accelerated = mags * phases, None, None
    for _ in range(n_iter):
        rebuilt = analyse(synthesize(spec))
        accelerated = rebuilt if previous is None else rebuilt - keep_rate * previous
        previous = rebuilt
        scale = np.maximum(np.abs(accelerated), 1e-8)
        spec = accelerated * np.divide(mags, scale, out=scale)
    if accelerated is not None:
        phases = accelerated * np.reciprocal(np.maximum(np.abs(accelerated), 1e-8))
    signal = synthesize(spec)
    return [(signal[start * hop + pad:start * hop + pad + n].copy(), phases[start:start + len(magnitude)].copy())
            for (magnitude, _, n), start in zip(jobs, starts)]


def vocode(logmel: np.ndarray, n_iter: int = 32) -> np.ndarray:
    """Log-mel ``[frames, n_mels]`` (10 ms hop) -> waveform ``float32 [frames * 160]``."""
    if len(logmel) == 0:
        return np.zeros(0, np.float32)
    wav = griffin_lim(mel.mel_to_magnitude(logmel), len(logmel) * mel.HOP, n_iter=n_iter)
    return np.clip(wav, -1.0, 1.0).astype(np.float32)
