"""The prompts file of ``stepforge eval``: held-out tasks, each with the teacher's scores.

One JSON object per line: the fields of :class:`engine.task.Task` (``id``, ``text`` and ``lang``
required) plus an optional ``teacher`` object with what the teacher's run measured for that task:

    {"id": "4286a0973f59a237", "text": "It rained all day.", "lang": "en", "emotion": "happy",
     "intensity": 2, "dialect": "english", "seed": 7,
     "teacher": {"run": "runs/tiny", "cer": 0.1, "wer": 0.1, "ss": 0.88, "accepted": true,
                 "duration_s": 2.52}}

    prompts = read_prompts("heldout.jsonl")      # list[Prompt]; UserError naming file:line
    with_samples(prompts, 3)                     # each prompt 3 times, seeded: ids ID, ID-1, ID-2
    prompt_record(manifest_row, "runs/tiny")     # one line of such a file, from a teacher row
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from engine.instructions import Instruction
from engine.task import Task
from manifests.errors import UserError
from pipelines.synthesize import attempt_seed

TASK_TYPES = {f.name: (int if f.type == "int" else str) for f in fields(Task)}
REQUIRED = ("id", "text", "lang")
# teacher key -> accepted JSON types (None: null allowed); other keys are ignored
TEACHER_TYPES = {"run": (str, type(None)), "cer": (int, float, type(None)),
                 "wer": (int, float, type(None)), "ss": (int, float, type(None)),
                 "accepted": (bool, type(None)), "duration_s": (int, float, type(None))}
TEACHER_SCORES = ("cer", "wer", "ss", "accepted", "duration_s")


@dataclass(frozen=True)
class Prompt:
    """One line: the task and the teacher's scores for it (empty when the line had none)."""

    task: Task
    teacher: dict = field(default_factory=dict, compare=False, hash=False)
    line: int = 0
    sample: int = 0             # which seeded sample of the prompt (see :func:`with_samples`)
    prompt_id: str = ""         # the prompt's own id (the task's id for sample 0)


def read_prompts(path: str | Path) -> tuple[list[Prompt], int]:
    """Parse and check a prompts file. Returns (prompts in file order, duplicate lines skipped):
    a later line with an id already seen and the same task is skipped (two teacher runs of one
    spec share ids); the same id with another text or instruction is an error.

    Raises:
        UserError: ``FILE:LINE: what is wrong`` for the first bad line, or an empty file.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read prompts ({exc})") from None
    prompts: list[Prompt] = []
    seen: dict[str, Prompt] = {}
    skipped = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        prompt = _parse_line(line, f"{path}:{number}", number)
        first = seen.get(prompt.task.id)
        if first is not None:
            if _without_seed(first.task) != _without_seed(prompt.task):
                raise UserError(f"{path}:{number}: id {prompt.task.id!r} was used at line "
                                 f"{first.line} for another task")
            skipped += 1
            continue
        seen[prompt.task.id] = prompt
        prompts.append(prompt)
    if not prompts:
        raise UserError(f"{path}: no prompts (expected one JSON task per line)")
    return prompts, skipped


def with_samples(prompts: list[Prompt], samples: int) -> list[Prompt]:
    """Each prompt ``samples`` times, prompt by prompt. Sample 0 is the prompt itself (so one
    sample is the plain eval); sample k > 0 has id ``ID-k`` and the seed a k-th regeneration
    attempt gets (``attempt_seed``), so the same prompts and count give the same seeds."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be an integer >= 1, got {samples!r}")
    out = []
    for p in prompts:
        for k in range(samples):
            task = p.task if k == 0 else Task.from_row({**p.task.to_row(), "id": f"{p.task.id}-{k}",
                                                        "seed": attempt_seed(p.task.seed, k)})
            out.append(Prompt(task, p.teacher, p.line, k, p.task.id))
    return out


def _parse_line(line: str, where: str, number: int) -> Prompt:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    teacher = record.pop("teacher", None)
    unknown = sorted(set(record) - set(TASK_TYPES))
    if unknown:
        raise UserError(f"{where}: unknown field {unknown[0]!r} (task fields: {', '.join(TASK_TYPES)}, teacher)")
    for name in REQUIRED:
        if not isinstance(record.get(name), str) or not record[name].strip():
            raise UserError(f"{where}: field {name!r} must be a non-empty string")
    for name, value in record.items():
        typ = TASK_TYPES[name]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise UserError(f"{where}: field {name!r} must be {'an integer' if typ is int else 'a string'}, "
                             f"got {json.dumps(value, ensure_ascii=False)}")
    task = Task.from_row(record)
    try:
        Instruction(**{f.name: getattr(task, f.name) for f in fields(Instruction)}).check_text_language(task.lang)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    return Prompt(task, {} if teacher is None else _check_teacher(teacher, where), number)


def _check_teacher(teacher, where: str) -> dict:
    if not isinstance(teacher, dict):
        raise UserError(f"{where}: 'teacher' must be an object, got {json.dumps(teacher)}")
    for key, types in TEACHER_TYPES.items():
        value = teacher.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise UserError(f"{where}: teacher.{key} has the wrong type ({json.dumps(value)})")
    return {key: teacher.get(key) for key in TEACHER_TYPES}


def _without_seed(task: Task) -> dict:
    return {k: v for k, v in task.to_row().items() if k != "seed"}


def prompts_hash(prompts: list[Prompt]) -> str:
    """What the student's audio depends on: the tasks (not the teacher's scores)."""
    rows = [p.task.to_row() for p in prompts]
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def prompt_record(row: dict, run: str | Path) -> dict:
    """One prompts line from a filtered manifest row of the teacher run ``run``."""
    task = Task.from_row(row)
    scores = {k: row.get(k) for k in TEACHER_SCORES}
    return {**task.to_row(), "teacher": {"run": str(run), **scores}}
