"""Means with 95% confidence intervals for ``eval.json``, and the student-vs-teacher ratio.

    block = score_stats(rows, samples=3)     # {"wer": {...}, "ss": {...}, "accepted": {...}}
    block["wer"]["ratio"]                     # {"value": 2.1, "ci": [1.8, 2.5]}: student / teacher

The unit is the prompt: each side's samples of one prompt are averaged first, then prompts are
resampled with replacement (a cluster bootstrap: samples of one prompt are not independent). The
student and the teacher are resampled together, prompt by prompt (a paired bootstrap), so the
ratio of their means gets an interval of its own: a percentile interval of that ratio over the
resamples. Every figure is a plain function of the rows and a fixed seed, so a rerun writes the
same numbers.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from filters.normalize import CHAR_LANGS

LEVEL = 0.95
RESAMPLES = 10000
SEED = 0
METRICS = ("wer", "cer", "ss", "accepted")  # wer over word languages, cer over character ones


def _value(row: dict, side: str, metric: str):
    values = row.get(side) or {}
    if metric in ("wer", "cer") and (row["lang"] in CHAR_LANGS) != (metric == "cer"):
        return None
    value = values.get(metric)
    return None if value is None else float(value)


def per_prompt(rows: list[dict], side: str, metric: str) -> dict[str, float]:
    """prompt id -> the mean of ``side``'s ``metric`` over that prompt's samples that have one."""
    groups: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        value = _value(row, side, metric)
        if value is not None:
            groups[row.get("prompt_id") or row["id"]].append(value)
    return {pid: float(np.mean(v)) for pid, v in groups.items()}


def _interval(values: np.ndarray) -> list[float] | None:
    finite = values[np.isfinite(values)]
    if len(finite) < len(values):  # a resample with a zero denominator: no upper bound
        return None
    lo, hi = np.percentile(values, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap(student: np.ndarray, teacher: np.ndarray | None = None, *, resamples: int = RESAMPLES,
              seed: int = SEED) -> dict:
    """Paired percentile bootstrap over prompts.

    Args:
        student: ``[n_prompts]`` per-prompt means of the student.
        teacher: ``[n_prompts]`` the teacher's, same prompts in the same order (or None).
    Returns:
        ``{"n": n, "student": {"mean", "ci"}, "teacher": {...}, "ratio": {"value", "ci"}}``
        (teacher and ratio only with ``teacher``; a ratio over a zero teacher mean is None).
    """
    n = len(student)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n)) if n else np.zeros((0, 0), dtype=int)
    out = {"n": n, "student": _side(student, picks)}
    if teacher is not None:
        out["teacher"] = _side(teacher, picks)
        t_mean = float(np.mean(teacher)) if n else 0.0
        if t_mean > 0:
            t = teacher[picks].mean(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = np.where(t > 0, student[picks].mean(axis=1) / np.where(t > 0, t, 1), np.inf)
            out["ratio"] = {"value": round(float(np.mean(student)) / t_mean, 4), "ci": _interval(ratios)}
        else:
            out["ratio"] = {"value": None, "ci": None}
    return out


def _side(values: np.ndarray, picks: np.ndarray) -> dict:
    if not len(values):
        return {"mean": None, "ci": None}
    return {"mean": round(float(np.mean(values)), 4), "ci": _interval(values[picks].mean(axis=1))}


def score_stats(rows: list[dict], samples: int, teacher_side: str = "teacher") -> dict:
    """The mean and 95% CI of each metric for the student and ``teacher_side`` (``teacher``: the
    prompts' corpus scores; ``teacher_eval``: the teacher voiced in this eval), and the ratio,
    over the prompts where both sides have a value (the student alone where no teacher has one)."""
    out = {"level": LEVEL, "method": "paired percentile bootstrap over prompts (per-prompt means of "
                                     f"{samples} sample(s)), {RESAMPLES} resamples, seed {SEED}",
           "samples": samples, "teacher_side": teacher_side}
    for metric in METRICS:
        student = per_prompt(rows, "student", metric)
        if not student:
            continue
        teacher = per_prompt(rows, teacher_side, metric)
        shared = sorted(set(student) & set(teacher))
        if shared:
            block = bootstrap(np.array([student[p] for p in shared]), np.array([teacher[p] for p in shared]))
        else:
            block = bootstrap(np.array([student[p] for p in sorted(student)]))
        out[metric] = block
    return out


def fmt_ci(side: dict | None, pct: bool = False) -> str:
    """``0.412 [0.371, 0.455]`` from ``{"mean"|"value": x, "ci": [lo, hi]}`` (``-`` when none)."""
    if not side or side.get("mean", side.get("value")) is None:
        return "-"
    value = side.get("mean", side.get("value"))
    f = (lambda x: f"{x:.0%}") if pct else (lambda x: f"{x:.3f}")
    ci = side.get("ci")
    return f"{f(value)} [{f(ci[0])}, {f(ci[1])}]" if ci else f"{f(value)} [-]"


def format_stats(stats: dict) -> str:
    """One line per metric: student, teacher and ratio with their 95% intervals."""
    lines = [f"{'':<10}{'n':>4}  {'student [95% CI]':<24}{'teacher [95% CI]':<24}{'ratio [95% CI]':<24}"]
    for metric in METRICS:
        block = stats.get(metric)
        if not block:
            continue
        pct = metric == "accepted"
        lines.append(f"{metric:<10}{block['n']:>4}  {fmt_ci(block['student'], pct):<24}"
                     f"{fmt_ci(block.get('teacher'), pct):<24}{fmt_ci(block.get('ratio')):<24}")
    teacher = "the teacher voiced in this eval" if stats.get("teacher_side") == "teacher_eval" else \
        "the teacher's corpus rows"
    lines.append(f"({stats['samples']} sample(s) per prompt; teacher: {teacher}; {stats['method']})")
    return "\n".join(lines)
