"""Teachers: tasks in, Step-Audio token ids out.

    >>> teacher = make_teacher("reference")
    >>> outputs = teacher.synthesize(tasks)      # list[TeacherOutput], one per task
"""
from __future__ import annotations

from engine.teachers.base import Teacher, TeacherOutput, error_kind
from engine.teachers.reference import ReferenceTeacher

LM_KINDS = ("vllm", "http", "torch")


def make_teacher(spec: str, codec=None) -> Teacher:
    """Build a teacher from its command-line spec.

    Args:
        spec: ``"reference"`` (eSpeak NG, no weights), or an LM teacher
            ``"vllm:MODEL_DIR"``, ``"http:URL"``, ``"torch:MODEL_DIR"`` with optional
            ``?key=value&...`` options (see :mod:`engine.teachers.lm`), e.g.
            ``"vllm:student/?topk=5&max_seconds=20"``.
        codec: the codec (a ``MelVQCodec``) the teacher tokenises audio with (its renderings,
            clone prompts); None = the shipped codec. A job passes the codec it decodes with, so
            that the two always agree.
    Raises:
        ValueError: an unknown kind, a bad option, or a model dir that cannot be used.
    """
    spec = spec.strip()
    kind, _, _location = spec.partition(":")
    if spec == "reference":
        return ReferenceTeacher(codec=codec)
    if kind in LM_KINDS or spec.startswith(("http://", "https://")):
        from engine.teachers.lm import LMTeacher

        return LMTeacher(spec, codec=codec)
    raise ValueError(f"unknown teacher {spec!r} (choose reference, vllm:DIR, http:URL or torch:DIR)")


def __getattr__(name: str):
    if name == "LMTeacher":
        from engine.teachers.lm import LMTeacher

        return LMTeacher
    raise AttributeError(f"module 'engine.teachers' has no attribute {name!r}")


__all__ = ["LMTeacher", "ReferenceTeacher", "Teacher", "TeacherOutput", "error_kind", "make_teacher"]
