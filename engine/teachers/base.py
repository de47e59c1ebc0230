"""The teacher interface: tasks in, Step-Audio token ids out.

A teacher knows nothing of Ray or of the run directory: the synthesize job hands it a batch of
tasks and stores what comes back. It declares the resources one instance needs so the job can
size an actor pool for it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from engine.task import Task


@dataclass
class TeacherOutput:
    """What a teacher produced for one task.

    tokens: interleaved Step-Audio LM ids ``int32 [n]`` (None on error).
    source_audio: the teacher's own 16 kHz rendering ``float32 [samples]``, if it has one.
    topk: optional teacher top-k ``{"ids": int32 [n, k], "logprobs": float16 [n, k]}``.
    error: why this task failed; empty on success.
    """

    task_id: str
    tokens: np.ndarray | None = None
    source_audio: np.ndarray | None = None
    topk: dict | None = None
    error: str = ""
    info: dict = field(default_factory=dict)


class Teacher(ABC):
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
