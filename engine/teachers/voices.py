"""How an instruction steers eSpeak NG: dialect -> voice, emotion/intensity/speed -> prosody.

    >>> voice_for("english-scottish", variant="m3")
    'en-gb-scotland+m3'
    >>> prosody_for(Instruction(emotion="sad", intensity=5, dialect="english"), seed=7)
    Prosody(rate=..., pitch=..., range=..., volume=..., wordgap=0)

Bump ``MAPPING_VERSION`` whenever a number here changes: it is part of the teacher id, so runs
made with different mappings are never mixed up.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.espeak import Prosody
from engine.instructions import NEUTRAL, Instruction

MAPPING_VERSION = "m1"

# eSpeak's voice *file* names (espeak_SetVoiceByName matches files, not language codes).
DIALECT_VOICES = {
    "english": "en-us",
    "english-us": "en-us",
    "english-gb": "en",  # the file "en" is eSpeak's British English (language en-gb)
    "english-scottish": "en-gb-scotland",
    "english-caribbean": "en-029",
    "mandarin": "cmn",
    "cantonese": "yue",
    # eSpeak has no Sichuanese, and its Hakka voice ("hak") cannot read Chinese characters. The
    # stand-in is the Mandarin voice with Sichuanese sound changes applied to its phonemes
    # (engine.teachers.dialects); replace it when a teacher with a real Sichuanese voice exists.
    "sichuanese": "cmn",
    "japanese": "ja",
    "korean": "ko",
}

NEUTRAL_PROSODY = Prosody(rate=175, pitch=50, range=50, volume=100)


@dataclass(frozen=True)
class EmotionShift:
    """Prosody change at intensity 5; intensity k applies k/5 of it (monotonic in k).

    pitch, range: eSpeak units (0..100) added to the neutral values; rate: relative change in
    speaking rate; volume: eSpeak units added. Volume is kept for the record although
    Step-Audio preprocessing (peak normalisation) removes most of its effect on the audio.
    """

    pitch: float
    range: float
    rate: float
    volume: float


EMOTION_SHIFTS = {
    "happy": EmotionShift(pitch=22, range=40, rate=0.12, volume=20),
    "surprised": EmotionShift(pitch=32, range=48, rate=0.05, volume=25),
    "angry": EmotionShift(pitch=14, range=34, rate=0.30, volume=80),
    "coquettish": EmotionShift(pitch=40, range=45, rate=-0.08, volume=-10),
    "sad": EmotionShift(pitch=-30, range=-40, rate=-0.32, volume=-30),
    "calm": EmotionShift(pitch=-12, range=-22, rate=-0.15, volume=-15),
}

# Rate multipliers: slow2 < slow1 < normal < fast1 < fast2 (so durations fall in that order).
SPEED_RATE = {"slow2": 0.62, "slow1": 0.80, "normal": 1.0, "fast1": 1.25, "fast2": 1.55}

# Per-task variation, deterministic in the seed: small enough never to reverse an intensity step.
JITTER_PITCH = 2.0
JITTER_RATE = 0.03


def voice_for(dialect: str, variant: str = "") -> str:
    """eSpeak voice name for a dialect, with an optional variant (``"m3"``, ``"f2"``)."""
    voice = DIALECT_VOICES[dialect]
    return f"{voice}+{variant}" if variant else voice


def seed_jitter(seed: int) -> tuple[float, float]:
    """(pitch offset in eSpeak units, relative rate change) drawn from the task seed."""
    rng = np.random.default_rng([seed, 0x5EED])
    pitch, rate = rng.uniform(-1, 1, size=2)
    return float(pitch * JITTER_PITCH), float(rate * JITTER_RATE)


def prosody_for(instruction: Instruction, seed: int = 0, base: Prosody = NEUTRAL_PROSODY,
                jitter: bool = True) -> Prosody:
    """Prosody for an instruction on top of ``base`` (a clone's pitch, or neutral).

    Args:
        instruction: emotion + intensity, speed (dialect and style are handled elsewhere).
        seed: task seed for the jitter.
        base: the starting point; emotion shifts are added to it.
    """
    pitch, rate = (seed_jitter(seed) if jitter else (0.0, 0.0))
    pitch += base.pitch
    rng, vol, rate_mult = float(base.range), float(base.volume), 1.0 + rate
    if instruction.emotion != NEUTRAL:
        shift, k = EMOTION_SHIFTS[instruction.emotion], instruction.intensity / 5
        pitch += shift.pitch * k
        rng += shift.range * k
        vol += shift.volume * k
        rate_mult *= 1.0 + shift.rate * k
    rate_mult *= SPEED_RATE[instruction.speed]
    return Prosody(rate=round(base.rate * rate_mult), pitch=round(pitch), range=round(rng),
                   volume=round(vol), wordgap=base.wordgap).clipped()
