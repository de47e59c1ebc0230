"""Task ids: the content hash of what is asked for. The task record itself is
:class:`manifests.record.Task` (re-exported here); its instruction is ``Instruction.of(task)``."""
from __future__ import annotations

import hashlib
import json
from dataclasses import fields

from engine.instructions import Instruction
from manifests.record import Task

__all__ = ["Task", "task_id"]

_INSTRUCTION_FIELDS = fields(Instruction)


def task_id(text: str, instruction: Instruction, lang: str, speaker_wav_hash: str = "") -> str:
    """Content hash of what is asked for: the same text and instruction give the same id."""
    fields_ = {f.name: getattr(instruction, f.name) for f in _INSTRUCTION_FIELDS}
    key = json.dumps(
        {"text": text, "lang": lang, "instruction": fields_, "prompt": speaker_wav_hash},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]
