"""Teachers: tasks in, Step-Audio token ids out.

    >>> teacher = make_teacher("reference")
    >>> outputs = teacher.synthesize(tasks)      # list[TeacherOutput], one per task
"""
from __future__ import annotations

from engine.teachers.base import Teacher, TeacherOutput
from engine.teachers.reference import ReferenceTeacher

# Kinds that take a location after the colon; their teachers arrive in later issues.
_PLANNED = ("vllm", "http", "torch")


def make_teacher(spec: str) -> Teacher:
    """Build a teacher from its command-line spec.

    Args:
        spec: ``"reference"`` (eSpeak NG, no weights); later ``"vllm:MODEL_DIR"``,
            ``"http:URL"``, ``"torch:MODEL_DIR"``.
    Raises:
        ValueError: an unknown kind, or one not available yet.
    """
    kind, _, _location = spec.strip().partition(":")
    if kind == "reference":
        return ReferenceTeacher()
    if kind in _PLANNED:
        raise ValueError(f"teacher kind {kind} is not available yet")
    raise ValueError(f"unknown teacher {spec!r} (choose reference, vllm:DIR, http:URL or torch:DIR)")


__all__ = ["ReferenceTeacher", "Teacher", "TeacherOutput", "make_teacher"]
