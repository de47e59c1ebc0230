"""Cheap measurements behind :class:`filters.quality.QualityFilter`; each is a plain function.

    silence_ratio(wav)                -> 0.12    fraction of 20 ms frames that are silent
    clipping_ratio(wav)               -> 0.0     fraction of samples at |x| >= 0.999
    speech_rate("Hello there.", "en", wav) -> 11.3  text units per voiced second
    loop_share(ids)                   -> (0.0, 1)  repeated n-gram share, most repeats of one
    longest_run(ids)                  -> ("vq06", 17, 9, 0.36)  stream, code, count, seconds

Speech-rate units are letters/digits for spaced languages and characters (one syllable each) for
Chinese, Japanese and Korean. :data:`RATE_BOUNDS` comes from eSpeak NG renderings at 80, 175 and
450 wpm, measured with :func:`speech_rate` itself (voices en-us, en-gb-scotland, cmn, yue, ko, ja; 2-7 sentences each):
measured en 4.6-43.1 letters/s, cmn/yue 1.6-11.9 chars/s, ko 2.2-12.7 syllables/s, ja 0.9-5.3
chars/s (eSpeak's Japanese is slow; natural speech runs to ~10). Bounds leave a ~2x margin below
the slowest and ~1.3x above the fastest measurement: they catch truncated, stretched or looping
audio, not style.
"""
from __future__ import annotations

import unicodedata

import numpy as np

from engine.audio import SAMPLE_RATE, trim_silence
from engine.tokens import GROUP, VQ02_PER_GROUP

RATE_BOUNDS = {"en": (2.0, 55.0), "zh": (0.8, 15.0), "yue": (0.8, 15.0), "ko": (1.0, 16.0), "ja": (0.4, 16.0)}
FRAME = SAMPLE_RATE // 50  # 20 ms


def silence_ratio(wav: np.ndarray, floor_db: float = -50.0, below_peak_db: float = 40.0) -> float:
    """Fraction of 20 ms frames quieter than ``floor_db`` dBFS or ``below_peak_db`` under the
    loudest frame (the relative test keeps background hiss of loud audio from counting as voice)."""
    n = len(wav) // FRAME
    if n == 0:
        return 1.0
    rms = np.sqrt(np.mean(wav[: n * FRAME].reshape(n, FRAME) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    return float(np.mean(db < max(floor_db, db.max() - below_peak_db)))


def clipping_ratio(wav: np.ndarray, level: float = 0.999) -> float:
    return float(np.mean(np.abs(wav) >= level)) if len(wav) else 0.0


def text_units(text: str) -> int:
    """Letters and digits (each CJK character counts as one)."""
    return sum(1 for ch in text or "" if unicodedata.category(ch)[0] in "LN")


def speech_rate(text: str, wav: np.ndarray) -> float | None:
    """Text units per second of audio with leading/trailing silence trimmed; None if no voice."""
    voiced = trim_silence(wav, SAMPLE_RATE, top_db=35.0, keep_before=0.0, keep_after=0.0)
    seconds = len(voiced) / SAMPLE_RATE
    return text_units(text) / seconds if seconds > 0 else None


def loop_share(ids: np.ndarray, ngram_groups: int = 2) -> tuple[float, int]:
    """Share of group-aligned n-grams (``ngram_groups`` groups of 5 ids) that already occurred
    earlier, and the most occurrences of one. Steady n-grams (all groups equal: silence, a held
    note) are skipped; :func:`longest_run` judges those. Looping generations score near 1."""
    groups = np.asarray(ids).reshape(-1, GROUP)
    seen: dict[bytes, int] = {}
    repeats = total = 0
    for i in range(len(groups) - ngram_groups + 1):
        window = groups[i:i + ngram_groups]
        if (window == window[0]).all():
            continue
        key = window.tobytes()
        total += 1
        repeats += key in seen
        seen[key] = seen.get(key, 0) + 1
    return (repeats / total if total else 0.0), max(seen.values(), default=0)


def longest_run(ids: np.ndarray) -> tuple[str, int, int, float]:
    """The longest run of one code within a stream: (stream, LM id, count, seconds)."""
    groups = np.asarray(ids).reshape(-1, GROUP)
    best = ("vq02", -1, 0, 0.0)
    for name, stream, step in (("vq02", groups[:, :VQ02_PER_GROUP], 0.06), ("vq06", groups[:, VQ02_PER_GROUP:], 0.04)):
        flat = stream.reshape(-1)
        if flat.size == 0:
            continue
        edges = np.flatnonzero(np.diff(flat)) + 1
        starts = np.r_[0, edges]
        lengths = np.diff(np.r_[starts, flat.size])
        k = int(np.argmax(lengths))
        if lengths[k] * step > best[3]:
            best = (name, int(flat[starts[k]]), int(lengths[k]), float(lengths[k] * step))
    return best
