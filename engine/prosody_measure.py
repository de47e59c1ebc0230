"""Prosody measurements on a waveform: F0 (YIN), speech duration and onset regularity.

Used by the reference teacher (to calibrate eSpeak's pitch scale and to match a clone prompt's
pitch) and by tests that check instruction control.

    >>> f0 = f0_track(wav, 16000)            # Hz on voiced frames, float32 [n_voiced]
    >>> f0_stats(wav, 16000)["median"], speech_seconds(wav, 16000), onset_cv(wav, 16000)
"""
from __future__ import annotations

import numpy as np

HOP_S = 0.01


def _frames(wav: np.ndarray, length: int, hop: int) -> np.ndarray:
    wav = np.pad(np.asarray(wav, np.float32), (0, length))
    n = max(1, 1 + (len(wav) - length) // hop)
    idx = np.arange(length)[None, :] + hop * np.arange(n)[:, None]
    return wav[idx]


def _cmnd(frames: np.ndarray, window: int, max_lag: int) -> np.ndarray:
    """YIN's cumulative-mean-normalised difference ``[n, max_lag + 1]`` via FFT correlation."""
    nfft = 1 << int(np.ceil(np.log2(frames.shape[1] + window)))
    a = np.fft.rfft(frames[:, :window], nfft)
    b = np.fft.rfft(frames, nfft)
    corr = np.fft.irfft(np.conj(a) * b, nfft)[:, : max_lag + 1]
    sq = np.concatenate([np.zeros((len(frames), 1), np.float32), np.cumsum(frames ** 2, axis=1)], axis=1)
    lags = np.arange(max_lag + 1)
    energy_lag = sq[:, lags + window] - sq[:, lags]
    diff = np.maximum(sq[:, [window]] + energy_lag - 2 * corr, 0)
    running = np.cumsum(diff[:, 1:], axis=1) / lags[1:]
    out = np.ones_like(diff)
    out[:, 1:] = diff[:, 1:] / np.maximum(running, 1e-12)
    return out


def f0_track(wav: np.ndarray, sr: int, fmin: float = 50.0, fmax: float = 600.0,
             threshold: float = 0.15, top_db: float = 35.0) -> np.ndarray:
    """F0 in Hz of the voiced frames (10 ms hop), ``float32 [n_voiced]``; empty if none.

    A frame is voiced when it is within ``top_db`` of the loudest frame and its YIN dip falls
    below ``threshold``: eSpeak's formant output is clean, so a strict threshold keeps only
    clearly periodic frames and the spread statistics are not polluted by fricatives.
    """
    hop, window = int(sr * HOP_S), int(sr * 0.025)
    min_lag, max_lag = int(sr / fmax), int(np.ceil(sr / fmin))
    frames = _frames(wav, window + max_lag, hop)
    rms = np.sqrt(np.mean(frames[:, :window] ** 2, axis=1) + 1e-12)
    loud = 20 * np.log10(rms / rms.max()) > -top_db
    d = _cmnd(frames[loud], window, max_lag)
    d[:, :min_lag] = 2.0
    below = d < threshold
    voiced = below.any(axis=1)
    lag = np.argmax(below, axis=1)
    rows = np.arange(len(d))
    for _ in range(max_lag):  # walk down to the local minimum after the first dip
        step = (lag + 1 < max_lag) & (d[rows, np.minimum(lag + 1, max_lag)] < d[rows, lag])
        if not step.any():
            break
        lag = lag + step
    lag, rows = lag[voiced], rows[voiced]
    left, mid, right = d[rows, lag - 1], d[rows, lag], d[rows, np.minimum(lag + 1, max_lag)]
    shift = 0.5 * (left - right) / np.where(np.abs(left - 2 * mid + right) > 1e-9, left - 2 * mid + right, 1)
    return (sr / (lag + np.clip(shift, -1, 1))).astype(np.float32)


def f0_stats(wav: np.ndarray, sr: int) -> dict:
    """Median F0 and the 10th..90th percentile spread (Hz and semitones) of the voiced frames."""
    f0 = f0_track(wav, sr)
    if f0.size == 0:
        return {"median": float("nan"), "spread": float("nan"), "spread_st": float("nan"), "voiced": 0}
    p10, p50, p90 = np.percentile(f0, [10, 50, 90])
    return {"median": float(p50), "spread": float(p90 - p10),
            "spread_st": float(12 * np.log2(p90 / p10)), "voiced": int(f0.size)}


def _envelope_db(wav: np.ndarray, sr: int) -> np.ndarray:
    hop = int(sr * HOP_S)
    rms = np.sqrt(np.mean(_frames(wav, 2 * hop, hop) ** 2, axis=1) + 1e-12)
    return 20 * np.log10(rms / rms.max())


def speech_seconds(wav: np.ndarray, sr: int, top_db: float = 40.0) -> float:
    """Seconds from the first to the last frame within ``top_db`` of the loudest one."""
    active = np.flatnonzero(_envelope_db(wav, sr) > -top_db)
    return 0.0 if active.size == 0 else float((active[-1] - active[0] + 1) * HOP_S)


def onsets(wav: np.ndarray, sr: int, top_db: float = 30.0, min_gap_s: float = 0.04) -> np.ndarray:
    """Times (s) where sound starts after at least ``min_gap_s`` of quiet, ``float [n]``."""
    loud = _envelope_db(wav, sr) > -top_db
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    if loud[0]:
        starts = np.concatenate([[0], starts])
    quiet_run = int(round(min_gap_s / HOP_S))
    keep = [s for s in starts if s < quiet_run or not loud[s - quiet_run:s].any()]
    return np.asarray(keep, float) * HOP_S


def onset_cv(wav: np.ndarray, sr: int) -> float:
    """Coefficient of variation of inter-onset intervals (low = regular rhythm); nan if < 3 onsets."""
    gaps = np.diff(onsets(wav, sr))
    return float(gaps.std() / gaps.mean()) if gaps.size >= 2 else float("nan")
