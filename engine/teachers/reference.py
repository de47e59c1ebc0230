"""The reference teacher: eSpeak NG steered by the instruction, tokenised by the codec.

No weights are needed, yet the output has exactly the shape of a real teacher's: Step-Audio LM
ids, plus the 16 kHz source rendering they were made from.

    >>> teacher = ReferenceTeacher()                      # codec "melvq", loaded on first use
    >>> wav, info = teacher.render(task)                  # float32 [samples] at 16 kHz
    >>> [out] = teacher.synthesize([task])                # out.tokens: int32 [n], n % 5 == 0
"""
from __future__ import annotations

import ctypes
import dataclasses
from functools import lru_cache

import numpy as np

from engine.audio import SAMPLE_RATE, preprocess
from engine.codec import load_codec
from engine.espeak import Prosody, synthesizer
from engine.instructions import Instruction
from engine.speakers import builtin_prompt, prompt_path
from engine.task import Task
from engine.teachers.base import Teacher, TeacherOutput
from engine.teachers.clone import CloneSearch, default_search
from engine.teachers.dialects import speaker_for
from engine.teachers.isolate import pristine
from engine.teachers.styles import BEAT_S, pitch_scale, render_humming, render_rap
from engine.teachers.voices import (
    MAPPING_VERSION, NEUTRAL_PROSODY, SPEED_RATE, prosody_for, seed_jitter, voice_for,
)

HUM_VOICE = "en-us"  # a hum carries no language; only the variant (timbre) matters


@lru_cache(maxsize=1)
def espeak_version() -> str:
    """The loaded eSpeak NG library's version string, e.g. ``"1.52.0"``."""
    info = synthesizer().lib.espeak_Info
    info.restype = ctypes.c_char_p
    return info(None).decode().split()[0]


class ReferenceTeacher(Teacher):
    """eSpeak NG rendering + codec tokenisation. One instance per worker; not GPU bound."""

    name = "reference"
    resources = {"num_cpus": 1, "num_gpus": 0}

    def __init__(self, codec=None, clone_search: CloneSearch | None = None):
        self._codec = codec
        self._clone = clone_search

    @property
    def version(self) -> str:
        return f"{espeak_version()}-{MAPPING_VERSION}"

    @property
    def codec(self):
        if self._codec is None:
            self._codec = load_codec("melvq")
        return self._codec

    def render(self, task: Task) -> tuple[np.ndarray, dict]:
        """Render one task. Returns (16 kHz preprocessed ``float32 [samples]``, info dict with
        the voice, prosody and style details chosen).

        Raises:
            InstructionError / ValueError: bad instruction, empty text, unreadable clone prompt.
        """
        inst = Instruction.of(task)
        inst.check_text_language(task.lang)
        if not task.text.strip():
            raise ValueError("empty text")
        variant, base, clone_info = self._voice_base(task)
        prosody = prosody_for(inst, task.seed, base)
        voice, speak = voice_for(inst.dialect, variant), speaker_for(inst.dialect)
        info = {"voice": voice, "prosody": dataclasses.asdict(prosody), "style": inst.style,
                "espeak": espeak_version(), "mapping": MAPPING_VERSION, **clone_info}
        if inst.style == "humming":
            voice = info["voice"] = voice_for_hum(variant)
        # rap: the beat period; humming: the voice's pitch scale (measured once, here)
        beat = BEAT_S / SPEED_RATE[inst.speed] * (1 + seed_jitter(task.seed)[1])
        scale = pitch_scale(voice) if inst.style == "humming" else None
        wav, sr, extra = pristine(_speak_style, inst.style, task.text, voice, prosody, speak, beat,
                                  task.seed, scale)
        wav = preprocess(wav, sr)
        if wav.size < SAMPLE_RATE // 10:
            raise ValueError(f"eSpeak rendered no audible speech for {task.text[:40]!r} with voice {voice}")
        return wav, {**info, **extra}

    def _voice_base(self, task: Task) -> tuple[str, Prosody, dict]:
        """(variant, base prosody, info) — a clone's variant and pitch, else eSpeak's default."""
        if not task.speaker:
            return "", NEUTRAL_PROSODY, {}
        wav_path, text = prompt_path(task.speaker_wav, task.speaker), task.speaker_text
        if not wav_path:  # a built-in speaker named without its prompt
            wav_path, text = builtin_prompt(task.speaker)
        match = (self._clone or default_search()).match_file(wav_path, text)
        base = dataclasses.replace(NEUTRAL_PROSODY, pitch=match.pitch)
        clone = {"variant": match.variant, "pitch": match.pitch,
                 "similarity": round(match.similarity, 4), "prompt_f0": round(match.prompt_f0, 1)}
        return match.variant, base, {"clone": clone}

    def synthesize(self, tasks: list[Task]) -> list[TeacherOutput]:
        """One output per task, in order; a failing task gets ``error`` set, never raises."""
        return [self._synthesize_one(task) for task in tasks]

    def _synthesize_one(self, task: Task) -> TeacherOutput:
        try:
            wav, info = self.render(task)
        except Exception as exc:  # one bad row must not fail the batch
            return TeacherOutput(task.id, error=f"render failed: {_reason(exc)}")
        try:
            tokens = np.asarray(self.codec.tokenize(wav), dtype=np.int32).reshape(-1)
        except Exception as exc:
            return TeacherOutput(task.id, source_audio=wav, info=info,
                                 error=f"codec tokenize failed: {_reason(exc)}")
        return TeacherOutput(task.id, tokens=tokens, source_audio=wav, info=info)


def _speak_style(style, text, voice, prosody, speak, beat_s, seed, scale):
    """The eSpeak part of a rendering (run in a pristine child): (wav, sample rate, info)."""
    if style == "rap":
        return render_rap(text, voice, prosody, beat_s=beat_s, speak=speak)
    if style == "humming":
        return render_humming(text, voice, prosody, seed, scale)
    wav, sr = speak(text, voice, prosody)
    return wav, sr, {}


def voice_for_hum(variant: str) -> str:
    return f"{HUM_VOICE}+{variant}" if variant else HUM_VOICE


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
