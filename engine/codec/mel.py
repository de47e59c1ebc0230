"""Log-mel analysis at the codec's frame rate (16 kHz, 10 ms hop) and its approximate inverse.

Twelve frames make one 120 ms token group, so a waveform is padded to a whole number of groups
before analysis: encode always sees ``12 * N`` frames for ``N`` groups.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.fft

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
N_FFT = 512  # 32 ms: longer windows smear onsets that Griffin-Lim cannot restore (measured)
N_MELS = 80
FMIN, FMAX = 0.0, 8000.0
FRAMES_PER_GROUP = 12
GROUP_SAMPLES = FRAMES_PER_GROUP * HOP  # 1920 samples = 120 ms
LOG_FLOOR = 1e-5  # ~ -100 dB: eSpeak's digital silence maps to one constant frame


@functools.lru_cache(maxsize=None)
def mel_basis() -> np.ndarray:
    """Slaney-style mel filterbank ``[n_mels, n_fft // 2 + 1]`` (float32)."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX).astype(np.float32)


@functools.lru_cache(maxsize=None)
def window() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)


def n_groups(n_samples: int) -> int:
    """Token groups covering ``n_samples`` (the last partial group is padded, never dropped)."""
    return -(-int(n_samples) // GROUP_SAMPLES)


def frame_view(x: np.ndarray, n: int) -> np.ndarray:
    """Strided view ``[n, N_FFT]`` of frames hopping by ``HOP`` (no copy)."""
    return np.lib.stride_tricks.as_strided(x, (n, N_FFT), (HOP * x.strides[0], x.strides[0]), writeable=False)


def stft(wav: np.ndarray) -> np.ndarray:
    """Centered STFT, one frame per hop: ``[samples] -> complex64 [frames, n_fft // 2 + 1]``."""
    pad = N_FFT // 2
    x = np.pad(np.asarray(wav, np.float32), (pad, pad))
    frames = frame_view(x, 1 + (len(x) - N_FFT) // HOP)
    return scipy.fft.rfft(frames * window(), axis=1).astype(np.complex64, copy=False)


@functools.lru_cache(maxsize=8)
def _ola_norm(n_frames: int) -> np.ndarray:
    return overlap_add(np.broadcast_to(window() ** 2, (n_frames, N_FFT)))


def overlap_add(frames: np.ndarray) -> np.ndarray:
    """Sum frames ``[n, N_FFT]`` placed ``HOP`` apart: ``ceil(N_FFT / HOP)`` adds of a hop-wide
    column of every frame, each into its own shifted view of the output."""
    n, per = len(frames), -(-N_FFT // HOP)
    out = np.zeros((n + per - 1) * HOP, np.float32)
    for j in range(per):
        width = min(HOP, N_FFT - j * HOP)
        out[j * HOP:(j + n) * HOP].reshape(n, HOP)[:, :width] += frames[:, j * HOP:j * HOP + width]
    return out


def istft(spec: np.ndarray, n_samples: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`stft`: ``[frames, bins] -> float32 [n_samples]``."""
    frames = scipy.fft.irfft(spec, n=N_FFT, axis=1).astype(np.float32, copy=False) * window()
    out = overlap_add(frames) / np.maximum(_ola_norm(len(frames)), 1e-3)
    pad = N_FFT // 2
    return out[pad:pad + n_samples]


def log_mel(wav: np.ndarray) -> np.ndarray:
    """16 kHz mono waveform ``[samples]`` -> log-mel ``float32 [12 * N, n_mels]``, N = groups.

    The waveform is zero-padded to ``N * 1920`` samples; the frame centred on the padded end is
    dropped so that the frame count is exactly ``12 * N``.
    """
    wav = np.asarray(wav, np.float32).reshape(-1)
    n = n_groups(len(wav))
    if n == 0:
        return np.zeros((0, N_MELS), np.float32)
    wav = np.pad(wav, (0, n * GROUP_SAMPLES - len(wav)))
    power = np.abs(stft(wav)[: n * FRAMES_PER_GROUP]) ** 2
    return np.log(np.maximum(power @ mel_basis().T, LOG_FLOOR)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _inverse_basis() -> np.ndarray:
    # Pseudo-inverse of the filterbank, clipped to non-negative weights: a smooth linear magnitude
    # that Griffin-Lim can phase without the ringing a signed inverse causes.
    return np.maximum(np.linalg.pinv(mel_basis()), 0.0).astype(np.float32)


def mel_to_magnitude(logmel: np.ndarray) -> np.ndarray:
    """Log-mel ``[frames, n_mels]`` -> linear STFT magnitude ``[frames, n_fft // 2 + 1]``."""
    power = np.exp(logmel.astype(np.float32)) @ _inverse_basis().T
    return np.sqrt(np.maximum(power, 0.0))


def cepstra(logmel: np.ndarray, q: int) -> np.ndarray:
    """Log-mel ``[frames, n_mels]`` -> first ``q`` mel-cepstral coefficients ``[frames, q]``.

    Dropping the upper coefficients removes pitch harmonics and noise detail, which costs little
    intelligibility (measured) but would waste codebook entries on voice-specific detail.
    """
    return scipy.fft.dct(logmel, type=2, norm="ortho", axis=1)[:, :q].astype(np.float32)


def from_cepstra(ceps: np.ndarray) -> np.ndarray:
    """Inverse of :func:`cepstra` with the dropped coefficients at zero: ``[frames, n_mels]``."""
    full = np.zeros((len(ceps), N_MELS), np.float32)
    full[:, : ceps.shape[1]] = ceps
    return scipy.fft.idct(full, type=2, norm="ortho", axis=1).astype(np.float32)
