"""eSpeak NG test speech for the filter tests, cached per text/voice/rate. Each text is rendered
from a pristine eSpeak state (engine.teachers.isolate), so its samples do not depend on which tests
rendered before it."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.audio import resample
from engine.espeak import render
from engine.teachers.isolate import pristine


@lru_cache(maxsize=None)
def _speak(text: str, voice: str, rate: int) -> np.ndarray:
    wav, sr = pristine(render, text, voice=voice, rate=rate)
    return resample(wav, sr)


def speak(text: str, voice: str = "en-us", rate: int = 175) -> np.ndarray:
    """eSpeak NG speech as float32 [samples] at 16 kHz (a fresh copy each call)."""
    return _speak(text, voice, rate).copy()
