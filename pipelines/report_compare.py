"""The report's comparison of students: what each one was trained on, its held-out curve, and
every eval of it that is at hand, side by side.

    students, evals = gather(Path("runs/en_basic"), [Path("runs/gpu_students/medium"), Path("runs/t07")])
    rows = comparison_rows(students, evals)     # one row per (student, eval), for the report's table

The students are the ones a grown run kept (``RUN/students/NNN``, oldest first), then
``RUN/student``, then any student dir given with ``stepforge report --compare``. The evals are
``RUN/eval``, each student's own ``eval.json`` and any eval dir (or eval.json) given with
``--compare``; an eval belongs to the student whose weights it names (``student_fingerprint``),
so an eval of the same student under other decoding settings is another row of it. A student
continued from another one (``train.json`` ``init``) counts its steps from scratch, so the curves
of a grown run join up.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from manifests.digest import model_dir_fingerprint
from manifests.errors import UserError
from pipelines.eval_stats import fmt_ci

HEADER = ["student", "parameters", "train rows", "steps (from scratch)", "best held-out loss (step)",
          "eval prompts x samples", "temperature", "WER", "teacher WER", "WER ratio", "SS", "passing"]


@dataclass
class Trained:
    """One student: its dir, train.json, held-out curve and where its steps start."""

    label: str
    path: Path
    train: dict
    heldout: list[tuple[int, float]]
    fingerprint: str | None
    offset: int = 0
    evals: list[dict] = field(default_factory=list)

    @property
    def best(self) -> tuple[int, float] | None:
        return min(self.heldout, key=lambda point: point[1]) if self.heldout else None


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_metrics(path: Path) -> list[dict]:
    """The JSON lines of a student's logs/metrics.jsonl (a torn last line is skipped)."""
    out = []
    try:
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    except OSError:
        pass
    return [m for m in out if isinstance(m, dict) and "step" in m]


def heldout_curve(student: Path) -> list[tuple[int, float]]:
    """(step, held-out loss) of ``STUDENT/logs/metrics.jsonl``."""
    return [(int(m["step"]), float(m["eval_loss"])) for m in read_metrics(student / "logs" / "metrics.jsonl")
            if "eval_loss" in m]


def run_students(run: Path) -> list[Path]:
    """The run's students, oldest first: RUN/students/NNN, then RUN/student."""
    kept = sorted((run / "students").glob("[0-9][0-9][0-9]")) if (run / "students").is_dir() else []
    current = [run / "student"] if (run / "student" / "train.json").is_file() else []
    return [p for p in kept if (p / "train.json").is_file()] + current


def load_student(path: Path, label: str) -> Trained:
    fingerprint = model_dir_fingerprint(path) if (path / "config.json").is_file() else None
    return Trained(label, path, read_json(path / "train.json") or {}, heldout_curve(path), fingerprint)


def _offset(student: Trained, by_path: dict[Path, Trained], seen: frozenset = frozenset()) -> int:
    """Steps taken before this student's first one: its ``init`` chain's steps, summed."""
    init = student.train.get("init")
    if not init or student.path.resolve() in seen:
        return 0
    path = Path(init).resolve()
    parent = by_path.get(path)
    if parent is None:
        train = read_json(path / "train.json")
        if train is None:
            return 0
        parent = Trained(path.name, path, train, [], None)
    return _offset(parent, by_path, seen | {student.path.resolve()}) + int(parent.train.get("step") or 0)


def gather(run: Path, compare: list[Path]) -> tuple[list[Trained], list[dict]]:
    """The students and evals to compare (see the module docstring); each eval is also attached
    to its student's ``evals``. Raises UserError for a ``--compare`` path that is neither a student
    dir nor an eval."""
    student_paths = [(p, p.name if p.parent.name == "students" else "student") for p in run_students(run)]
    found = [read_json(run / "eval" / "eval.json")]
    for given in compare:
        if (given / "train.json").is_file():
            student_paths.append((given, str(given)))
            continue
        path = given if given.is_file() else given / "eval.json"
        if not path.is_file():
            raise UserError(f"--compare {given}: neither a student dir (train.json) nor an eval (eval.json)")
        data = read_json(path)
        if data is None or "aggregate" not in data:
            raise UserError(f"--compare {path}: not a readable eval.json")
        found.append(data)
    students, by_path = [], {}
    for path, label in student_paths:
        if path.resolve() in by_path:
            continue
        trained = load_student(path, label)
        students.append(trained)
        by_path[path.resolve()] = trained
        found.append(read_json(path / "eval.json"))
    for trained in students:
        trained.offset = _offset(trained, by_path)
    evals, seen = [], set()
    for data in found:
        if data is None or "aggregate" not in data:
            continue
        key = (data.get("student_fingerprint"), data.get("prompts_hash"), data.get("samples"),
               json.dumps(data.get("sampling"), sort_keys=True), data.get("created_at"))
        if key in seen:
            continue  # RUN/eval/eval.json and its copy in RUN/student
        seen.add(key)
        evals.append(data)
        owner = next((s for s in students if s.fingerprint and s.fingerprint == data.get("student_fingerprint")), None)
        if owner is not None:
            owner.evals.append(data)
    return students, evals


def eval_cells(data: dict | None) -> list[str]:
    """prompts x samples, temperature, WER, teacher WER, ratio, SS and passing of one eval."""
    if data is None:
        return ["-"] * 7
    stats = data.get("stats") or {}
    agg = (data.get("aggregate") or {}).get("all") or {}
    student = agg.get("student") or {}

    def metric(name: str, side: str, fallback=None) -> str:
        block = (stats.get(name) or {}).get(side)
        if block:
            return fmt_ci(block, name == "accepted")
        return "-" if fallback is None else (f"{fallback:.0%}" if name == "accepted" else f"{fallback:.3f}")

    temperature = (data.get("sampling") or {}).get("temperature")
    # without a teacher voicing the prompts in the eval, the teacher side is its (filtered) corpus rows
    corpus = "" if stats.get("teacher_side", "teacher_eval") == "teacher_eval" else " (corpus rows)"
    teacher, ratio = metric("wer", "teacher"), metric("wer", "ratio")
    return [f"{data.get('n_prompts', '-')} x {data.get('samples', 1)}", "-" if temperature is None else temperature,
            metric("wer", "student", student.get("mean_wer")),
            teacher + corpus if teacher != "-" else teacher, ratio + corpus if ratio != "-" else ratio,
            metric("ss", "student", student.get("mean_ss")), metric("accepted", "student", student.get("accept_rate"))]


def comparison_rows(students: list[Trained], evals: list[dict]) -> list[list]:
    """One row per student and eval of it (a student without an eval gets one row of dashes),
    then the evals of students not among them, labelled with the student path they name."""
    rows = []
    for s in students:
        best = s.best
        facts = [s.label, s.train.get("parameters", "-"), s.train.get("train_rows", "-"),
                 f"{s.offset} + {s.train.get('step', 0)}" if s.offset else s.train.get("step", "-"),
                 f"{best[1]:.3f} ({s.offset + best[0]})" if best else "-"]
        for data in s.evals or [None]:
            rows.append(facts + eval_cells(data))
    owned = {s.fingerprint for s in students if s.fingerprint}
    for data in evals:
        if data.get("student_fingerprint") not in owned:
            rows.append([f"{data.get('student', '?')} (eval only)", "-", "-", "-", "-"] + eval_cells(data))
    return rows


def curves(students: list[Trained]) -> dict[str, list[tuple[int, float]]]:
    """Each student's held-out curve on the from-scratch step axis, by label."""
    return {s.label: [(s.offset + step, loss) for step, loss in s.heldout] for s in students if s.heldout}
