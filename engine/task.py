"""The task record: one text with one instruction, the unit every stage works on.

A ``Task`` is one row of ``tasks.parquet``; later stages add columns to the manifest row that
carries its id rather than keeping side tables.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from engine.instructions import Instruction


@dataclass(frozen=True)
class Task:
    """One synthesis request.

    ``speaker_wav`` / ``speaker_text`` hold the clone prompt (a 16 kHz-or-any-rate wav and its
    transcript) when ``speaker`` is set. ``seed`` drives every random choice the teacher makes.
    """

    id: str
    text: str
    lang: str
    emotion: str = "neutral"
    intensity: int = 0
    dialect: str = "mandarin"
    style: str = "speech"
    speed: str = "normal"
    speaker: str = ""
    speaker_wav: str = ""
    speaker_text: str = ""
    seed: int = 0

    @property
    def instruction(self) -> Instruction:
        return Instruction(
            emotion=self.emotion, intensity=self.intensity, dialect=self.dialect,
            style=self.style, speed=self.speed, speaker=self.speaker,
        )

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "Task":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


_INSTRUCTION_FIELDS = fields(Instruction)


def task_id(text: str, instruction: Instruction, lang: str, speaker_wav_hash: str = "") -> str:
    """Content hash of what is asked for: the same text and instruction give the same id."""
    fields_ = {f.name: getattr(instruction, f.name) for f in _INSTRUCTION_FIELDS}
    key = json.dumps(
        {"text": text, "lang": lang, "instruction": fields_, "prompt": speaker_wav_hash},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]
