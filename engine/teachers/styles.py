"""Rap and humming for the reference teacher, built from single eSpeak renderings.

Rap: the text is cut into beat units (words, or characters for Chinese/Japanese/Korean), each
unit is rendered on its own at a fast rate and its onset placed on a fixed beat grid, so onset
intervals are whole beats. Humming: a closed-mouth "mmm" sung on a pentatonic melody drawn from
the task seed, one flat-pitched rendering per note.

    >>> wav, sr, info = render_rap("we keep it moving", "en", "en-us+m3", prosody, seed=1)
    >>> wav, sr, info = render_humming("any text", "en-us+f2", prosody, 1, pitch_scale("en-us+f2"))
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from engine.espeak import Prosody, render
from engine.prosody_measure import f0_track
from engine.teachers.isolate import pristine

BEAT_S = 0.27
RAP_RATE = 300
_SYLLABLE_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_WORD = re.compile(r"[\w'\u2019-]+")


def beat_units(text: str) -> list[str]:
    """Words; CJK and kana/hangul characters count one syllable (one beat) each."""
    units = []
    for word in _WORD.findall(text):
        units.extend(list(word) if _SYLLABLE_SCRIPT.search(word) else [word])
    return units


def _sound_span(wav: np.ndarray, sr: int, top_db: float = 35.0) -> np.ndarray:
    """The unit from its first to last audible 5 ms frame: a fine trim, so the grid places
    the actual onset (engine.audio.trim_silence keeps ~0.1 s margins)."""
    hop = sr // 200
    n = len(wav) // hop
    if n == 0:
        return wav
    rms = np.sqrt(np.mean(wav[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -top_db)
    return wav[loud[0] * hop: (loud[-1] + 1) * hop]


def render_rap(text: str, voice: str, prosody: Prosody, beat_s: float = BEAT_S, speak=render):
    """Beat-aligned rap. ``speak`` renders one unit (``engine.espeak.render`` or a dialect's
    stand-in with its signature). Returns (float32 ``[samples]``, sample rate, info)."""
    pieces, sr = [], 22050
    for unit in beat_units(text) or [text]:
        wav, sr = speak(unit, voice, prosody, rate=max(prosody.rate, RAP_RATE))
        wav = _sound_span(wav, sr)
        if len(wav) > 0.75 * beat_s * sr:  # squeeze long words into their beat where eSpeak can
            wav = _sound_span(speak(unit, voice, prosody, rate=450)[0], sr)
        pieces.append(wav)
    beats = [max(1, int(np.ceil(len(p) / (beat_s * sr)))) for p in pieces]
    out = np.zeros(int((sum(beats) + 1) * beat_s * sr), np.float32)
    onset = 0
    for i, (piece, n) in enumerate(zip(pieces, beats)):
        start = int(round(onset * beat_s * sr))
        accent = 1.0 if onset % 4 == 0 else 0.8  # a downbeat every four beats
        out[start: start + len(piece)] += accent * piece
        onset += n
    return out, sr, {"beat_s": beat_s, "beats": int(sum(beats)), "units": len(pieces)}


@lru_cache(maxsize=64)
def pitch_scale(voice: str) -> tuple[np.ndarray, np.ndarray]:
    """(eSpeak pitch levels ``[5]``, log F0 of a flat hum at each ``[5]``) for one voice,
    measured once per process (in a pristine child, so the parent's eSpeak state is kept)."""
    return pristine(_measure_scale, voice)


def _measure_scale(voice: str) -> tuple[np.ndarray, np.ndarray]:
    levels = np.array([0, 25, 50, 75, 100], float)
    f0 = [np.median(f0_track(*render("mmm", voice, range=0, pitch=int(p), rate=80))) for p in levels]
    return levels, np.log(np.maximum.accumulate(f0))


PENTATONIC = np.array([-3, 0, 2, 4, 7, 9])  # semitones from the tonic (la, do re mi so la)


def hum_melody(n_notes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(semitones from the tonic ``[n]``, beats per note ``[n]``): a random walk on the scale
    that starts and ends on the tonic, deterministic in the seed."""
    rng = np.random.default_rng([seed, 0x4D4D])
    idx = [1]
    for _ in range(n_notes - 2):
        idx.append(int(np.clip(idx[-1] + rng.choice([-2, -1, 1, 1, 2]), 0, len(PENTATONIC) - 1)))
    idx.append(1)
    beats = rng.choice([1, 1, 1, 2], size=n_notes)
    beats[-1] = 3
    return PENTATONIC[idx], beats


def render_humming(text: str, voice: str, prosody: Prosody, seed: int, scale, beat_s: float = 0.24):
    """Hummed melody, one note per beat unit of ``text`` (4..16). ``scale`` is
    :func:`pitch_scale` of the voice. Returns (wav, sr, info)."""
    n_notes = int(np.clip(len(beat_units(text)), 4, 16))
    semis, beats = hum_melody(n_notes, seed)
    levels, log_f0 = scale
    tonic = float(np.exp(np.interp(prosody.pitch, levels, log_f0)))
    tonic = float(np.clip(tonic, np.exp(log_f0[0]) * 2 ** (3 / 12), np.exp(log_f0[-1]) / 2 ** (9 / 12)))
    notes = []
    for semi, n in zip(semis, beats):
        hz = tonic * 2 ** (semi / 12)
        level = int(np.clip(round(np.interp(np.log(hz), log_f0, levels)), 0, 100))
        wav, sr = render("mmm", voice, prosody, range=0, rate=80, pitch=level)
        wav = _sound_span(wav, sr)[: int((n * beat_s - 0.03) * sr)]
        fade = np.minimum(1, np.minimum(np.arange(len(wav)), np.arange(len(wav))[::-1]) / (0.015 * sr))
        notes.append(np.concatenate([wav * fade, np.zeros(int(0.03 * sr), np.float32)]))
    out = np.concatenate(notes).astype(np.float32)
    return out, sr, {"tonic_hz": round(tonic, 1), "notes": [int(s) for s in semis], "beat_s": beat_s}
