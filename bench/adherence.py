"""Precision and recall of the instruction-adherence checks on a labelled reference-teacher set.

    python -m bench.adherence [--texts 2]

Renders builtin zh and en texts with the reference teacher (through the melvq codec, as a run
stores them) once correctly and once with swapped labels: the audio of one instruction under the
labels of another (sad rendered, labelled happy; Cantonese rendered, labelled Mandarin; fast
rendered, labelled slow; English rendered, labelled Chinese; speech labelled rap or humming).
Voice baselines come from the set's own neutral, normal-speed rows, as in the filter job. Every
check runs on every row (no CER filter before it, so language id runs on all rows). A swapped row
rejected by the check its swap targets is a true positive; a correct row rejected by a check is a
false positive of that check.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

from engine.spec.texts import BUILTIN_TEXTS
from engine.task import Task
from engine.teachers.reference import ReferenceTeacher
from filters.adherence import CHECKS, AdherenceFilter, voice_baselines

EMO = [("happy", 3), ("sad", 3), ("calm", 3), ("angry", 2), ("surprised", 4)]
# (check, rendered instruction, labelled instruction)
SWAPS = [
    ("emotion", dict(emotion="sad", intensity=3), dict(emotion="happy", intensity=3)),
    ("emotion", dict(emotion="happy", intensity=3), dict(emotion="sad", intensity=3)),
    ("emotion", dict(), dict(emotion="happy", intensity=4)),
    ("emotion", dict(), dict(emotion="sad", intensity=4)),
    ("speed", dict(speed="fast1"), dict(speed="slow1")),
    ("speed", dict(speed="slow1"), dict(speed="fast1")),
    ("speed", dict(), dict(speed="fast2")),
    ("speed", dict(), dict(speed="slow2")),
    ("rap", dict(), dict(style="rap")),
    ("humming", dict(), dict(style="humming")),
]


def render(teacher, task: Task) -> dict:
    [out] = teacher.synthesize([task])
    if out.error:
        raise RuntimeError(out.error)
    return {**task.to_row(), "audio": teacher.codec.detokenize(out.tokens), "source_audio": out.source_audio}


def labelled_set(n_texts: int, teacher) -> list[dict]:
    """Rows with ``truth``: None (correct) or the check the swapped labels target."""
    rows, seed = [], 0
    for lang, dialect in (("zh", "mandarin"), ("en", "english")):
        for text in [t for t in BUILTIN_TEXTS[lang].read_text().splitlines() if t.strip()][:n_texts]:
            def task(**kw):
                nonlocal seed
                seed += 1
                return Task(id=f"r{seed}", text=text, lang=lang, dialect=kw.pop("dialect", dialect), seed=seed, **kw)
            variants = [dict()] + [dict(emotion=e, intensity=k) for e, k in EMO]
            variants += [dict(speed=s) for s in ("slow2", "slow1", "fast1", "fast2")]
            variants += [dict(style="rap"), dict(style="humming")]
            if lang == "zh":
                variants += [dict(dialect="cantonese"), dict(dialect="sichuanese")]
            for kw in variants:
                rows.append({**render(teacher, task(**kw)), "truth": None})
            for check, made, label in SWAPS:
                row = render(teacher, task(**made))
                rows.append({**row, **dataclasses.asdict(task(**label)), "id": row["id"], "truth": check})
            # language: the dialect Whisper cannot hear, and a whole other language
            other = ("en", "english") if lang == "zh" else ("zh", "mandarin")
            row = render(teacher, task())
            rows.append({**row, "lang": other[0], "dialect": other[1], "truth": "lang"})
            if lang == "zh":
                row = render(teacher, task(dialect="cantonese"))
                rows.append({**row, "dialect": "mandarin", "truth": "lang (dialect)"})
    return rows


def evaluate(rows: list[dict], verdicts) -> dict:
    stats = defaultdict(lambda: {"tp": 0, "fn": 0, "fp": 0, "n_swapped": 0})
    for row, v in zip(rows, verdicts):
        reason = v.scores.get("adherence_reason") or ""
        for check in CHECKS:
            failed = f"{check}: " in reason
            if row["truth"] is None:
                stats[check]["fp"] += failed
        if row["truth"]:
            s = stats[row["truth"]]
            s["n_swapped"] += 1
            check = "lang" if row["truth"].startswith("lang") else row["truth"]
            s["tp" if f"{check}: " in reason else "fn"] += 1
    n_correct = sum(r["truth"] is None for r in rows)
    for s in stats.values():
        s["precision"] = s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else None
        s["recall"] = s["tp"] / s["n_swapped"] if s["n_swapped"] else None
        s["correct_rejected"] = f"{s['fp']}/{n_correct}"
    return dict(stats)


def table(stats: dict) -> str:
    pct = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    lines = ["| check | swapped rows | rejected (TP) | correct rows rejected (FP) | precision | recall |",
             "|---|---|---|---|---|---|"]
    for check in (*CHECKS, "lang (dialect)"):
        if check in stats:
            s = stats[check]
            lines.append(f"| {check} | {s['n_swapped']} | {s['tp']} | {s['correct_rejected']} | "
                         f"{pct(s['precision'])} | {pct(s['recall'])} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=2, help="builtin texts per language")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    rows = labelled_set(args.texts, ReferenceTeacher())
    rendered = time.perf_counter() - start
    f = AdherenceFilter(baselines=voice_baselines([r for r in rows if r["truth"] is None]))
    f.setup()
    verdicts = f(rows)
    print(table(evaluate(rows, verdicts)))
    for row, v in zip(rows, verdicts):
        if row["truth"] is None and not v.keep:
            print(f"correct row rejected: {row['lang']} {row['dialect']} {row['emotion']}{row['intensity'] or ''} "
                  f"{row['speed']} {row['style']}: {v.reason}")
    print(f"{len(rows)} rows ({sum(r['truth'] is None for r in rows)} correct), rendered in {rendered:.0f} s, "
          f"checked in {time.perf_counter() - start - rendered:.0f} s")


if __name__ == "__main__":
    main()
