"""The task record: one text with one instruction, the unit every stage works on.

A ``Task`` is one row of ``tasks.parquet``. Its fields are defined here once, each with its Arrow
type; the Parquet schemas (``TASK_SCHEMA``, the manifest's) and every other list of task fields
derive from this definition. On its way through a job a task travels as a plain dict row
(``task.to_row()``), and each stage adds columns to that row (see :mod:`manifests.stage`).

    >>> Task(id="ab12", text="Hello.", lang="en", emotion="happy", intensity=2).to_row()["emotion"]
    'happy'
    >>> TASK_SCHEMA.field("intensity").type
    DataType(int8)
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

import pyarrow as pa


def _column(arrow_type: pa.DataType, default=MISSING):
    return field(default=default, metadata={"arrow": arrow_type})


@dataclass(frozen=True)
class Task:
    """One synthesis request.

    ``emotion`` .. ``speaker`` are the instruction (``engine.instructions.Instruction.of(task)``).
    ``speaker_wav`` / ``speaker_text`` hold the clone prompt (a wav at any rate and its transcript)
    when ``speaker`` is set. ``seed`` drives every random choice the teacher makes.
    """

    id: str = _column(pa.string())
    text: str = _column(pa.string())
    lang: str = _column(pa.string())
    emotion: str = _column(pa.string(), "neutral")
    intensity: int = _column(pa.int8(), 0)
    dialect: str = _column(pa.string(), "mandarin")
    style: str = _column(pa.string(), "speech")
    speed: str = _column(pa.string(), "normal")
    speaker: str = _column(pa.string(), "")
    speaker_wav: str = _column(pa.string(), "")
    speaker_text: str = _column(pa.string(), "")
    seed: int = _column(pa.int64(), 0)

    def to_row(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "Task":
        """The task fields of ``row`` (a tasks.parquet or manifest row; other keys are ignored)."""
        return cls(**{k: v for k, v in row.items() if k in TASK_FIELDS})


TASK_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Task))
TASK_SCHEMA = pa.schema([(f.name, f.metadata["arrow"]) for f in fields(Task)])
