"""``eval.json``: the student's scores beside the teacher's, per prompt and aggregated.

    report = eval_rows(prompts, manifest_rows)        # per-row student + teacher values
    block = aggregate(report)                          # {"all": ..., "lang": {"en": ...}}
    print(format_table(block))

CER is averaged over character languages (zh, ja, yue) and WER over the others, as
seed-tts-eval reports test-zh CER and test-en WER; SS is the resemblyzer cosine the filters use.
"""
from __future__ import annotations

from collections import defaultdict

from filters.normalize import CHAR_LANGS
from manifests.record import TASK_FIELDS

STUDENT_FIELDS = ("status", "error", "cer", "wer", "ss", "ss_ref", "accepted", "reject_reason",
                  "duration_s", "n_tokens", "asr_text")
# each row names its task by the task fields, less the clone prompt's files and the seed
REPORTED_TASK_FIELDS = tuple(f for f in TASK_FIELDS if f not in ("speaker_wav", "speaker_text", "seed"))


def _num(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def _latest(manifest: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for row in manifest:
        if row["id"] not in latest or row["attempt"] > latest[row["id"]]["attempt"]:
            latest[row["id"]] = row
    return latest


def _side(row: dict) -> dict:
    side = {k: row.get(k) for k in STUDENT_FIELDS}
    for k in ("cer", "wer", "ss", "duration_s"):
        side[k] = _num(side[k])
    return side


def eval_rows(prompts: list, manifest: list[dict], teacher_manifest: list[dict] | None = None) -> list[dict]:
    """One entry per prompt (per sample, see ``pipelines.eval_prompts.with_samples``) that has a
    manifest row (its latest attempt), in prompt order. ``teacher_manifest``: the rows of the
    teacher voicing the same prompts in this eval, reported as ``teacher_eval``."""
    latest = _latest(manifest)
    voiced = _latest(teacher_manifest) if teacher_manifest is not None else None
    out = []
    for prompt in prompts:
        row = latest.get(prompt.task.id)
        if row is None:
            continue
        teacher = dict(prompt.teacher)
        for k in ("cer", "wer", "ss", "duration_s"):
            teacher[k] = _num(teacher.get(k))
        entry = {**{k: getattr(prompt.task, k) for k in REPORTED_TASK_FIELDS},
                 "prompt_id": prompt.prompt_id or prompt.task.id, "sample": prompt.sample,
                 "student": _side(row), "teacher": teacher or None}
        if voiced is not None:
            entry["teacher_eval"] = _side(voiced[prompt.task.id]) if prompt.task.id in voiced else None
        out.append(entry)
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else None


def _scores(rows: list[dict], side: str) -> dict:
    """Means of one side (``student`` or ``teacher``) over ``rows``."""
    scored = [(r["lang"], r[side]) for r in rows if r.get(side)]
    verdicts = [s["accepted"] for _, s in scored if s.get("accepted") is not None]
    return {
        "n": len(scored),
        "mean_cer": _mean(s.get("cer") for lang, s in scored if lang in CHAR_LANGS),
        "mean_wer": _mean(s.get("wer") for lang, s in scored if lang not in CHAR_LANGS),
        "mean_ss": _mean(s.get("ss") for _, s in scored),
        "accept_rate": round(sum(verdicts) / len(verdicts), 4) if verdicts else None,
        "n_cer": sum(1 for lang, s in scored if lang in CHAR_LANGS and s.get("cer") is not None),
        "n_wer": sum(1 for lang, s in scored if lang not in CHAR_LANGS and s.get("wer") is not None),
        "n_ss": sum(1 for _, s in scored if s.get("ss") is not None),
        "audio_s": round(sum(s.get("duration_s") or 0.0 for _, s in scored), 2),
    }


def aggregate(rows: list[dict]) -> dict:
    """{"all": {n, student, teacher}, "lang": {lang: {n, student, teacher}}}; with a
    ``teacher_eval`` side (the teacher voiced in this eval) when the rows have one."""
    by_lang: dict[str, list] = defaultdict(list)
    for r in rows:
        by_lang[r["lang"]].append(r)

    sides = ("student", "teacher") + (("teacher_eval",) if any("teacher_eval" in r for r in rows) else ())

    def block(members):
        return {"n": len(members), **{side: _scores(members, side) for side in sides}}

    return {"all": block(rows), "lang": {lang: block(m) for lang, m in sorted(by_lang.items())}}


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if pct else f"{value:.3f}"


def format_table(agg: dict) -> str:
    """Student vs teacher per language, one line each."""
    lines = [f"{'':<10}{'':<9}{'n':>4}{'CER(zh)':>9}{'WER(en)':>9}{'SS':>8}{'accepted':>10}"]
    groups = [("all", agg["all"])] + [(f"lang={k}", v) for k, v in agg["lang"].items()]
    for name, block in groups:
        for side in [k for k in ("student", "teacher", "teacher_eval") if k in block]:
            s = block[side]
            lines.append(f"{name if side == 'student' else '':<10}{side.replace('_eval', '*'):<9}{s['n']:>4}"
                         f"{_fmt(s['mean_cer']):>9}{_fmt(s['mean_wer']):>9}{_fmt(s['mean_ss']):>8}"
                         f"{_fmt(s['accept_rate'], True):>10}")
    if "teacher_eval" in agg["all"]:
        lines.append("(teacher: its corpus rows; teacher*: the teacher voicing the same prompts and seeds "
                     "in this eval)")
    lines.append("(CER over character languages, WER over the others; SS is resemblyzer cosine vs the "
                 "clone prompt or the teacher's rendering, not comparable with WavLM SS)")
    return "\n".join(lines)
