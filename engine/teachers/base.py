"""The teacher interface: tasks in, Step-Audio token ids out.

A teacher is a :class:`~manifests.stage.Stage`: it knows nothing of Ray or of the run directory,
declares the resources one instance needs, and adds its output columns to each record
(:data:`OUTPUT_COLUMNS`). Subclasses implement :meth:`Teacher.synthesize` on tasks.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field

import numpy as np

from manifests.record import Task
from manifests.stage import Stage

# the columns a teacher adds to each record (a TeacherOutput's fields but task_id)
OUTPUT_COLUMNS = ("tokens", "source_audio", "topk", "error", "info")


@dataclass
class TeacherOutput:
    """What a teacher produced for one task.

    tokens: interleaved Step-Audio LM ids ``int32 [n]`` (None on error).
    source_audio: the teacher's own 16 kHz rendering ``float32 [samples]``, if it has one.
    topk: optional teacher top-k ``{"ids": int32 [n, k], "logprobs": float16 [n, k]}``.
    error: why this task failed, ``"KIND: detail"`` (:func:`error_kind`); empty on success.
    """

    task_id: str
    tokens: np.ndarray | None = None
    source_audio: np.ndarray | None = None
    topk: dict | None = None
    error: str = ""
    info: dict = field(default_factory=dict)


def error_kind(error: str) -> str:
    """The kind of a row's ``error`` for counting: the text before its first ``": "``
    (``"http 500: POST ... failed after 3 attempts"`` -> ``"http 500"``), or the whole message
    when it has none; ``""`` for no error."""
    return error.partition(": ")[0][:60] if error else ""


class Teacher(Stage):
    """Synthesizes a batch of tasks. Subclasses set ``name``, ``version`` and ``resources``, and
    ``batch_size``: how many tasks one call should get (LM engines batch across requests)."""

    name: str = "teacher"
    version: str = "0"
    resources: dict = {"num_cpus": 1, "num_gpus": 0}
    batch_size: int = 4

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"

    @abstractmethod
    def synthesize(self, tasks: list[Task]) -> list[TeacherOutput]:
        """One output per task, in order. A failure on one task is returned as an output with
        ``error`` set, never raised, so one bad row does not fail a batch."""

    def process(self, records: list[dict]) -> list[dict]:
        """Records (task fields; ``seed`` is the attempt's) + :data:`OUTPUT_COLUMNS`."""
        outputs = self.synthesize([Task.from_row(r) for r in records])
        return [{**r, **{c: getattr(out, c) for c in OUTPUT_COLUMNS}} for r, out in zip(records, outputs)]
