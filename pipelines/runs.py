"""The run registry: every run directory under a root, with what it holds.

    from pipelines.runs import find_runs, run_entry, format_runs
    entries = [run_entry(path, root) for path in find_runs("runs")]
    print(format_runs(entries))

A run is a directory with a run.json; the search goes ``depth`` levels below the root and does not
descend into a run (its ``eval/`` and ``student/`` belong to it).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

STAGE_ORDER = ("synthesize", "filter", "distill", "eval", "report")


def find_runs(root: str | Path, depth: int = 3) -> list[Path]:
    """Run directories at most ``depth`` levels below ``root`` (``root`` itself included), sorted."""
    root = Path(root)
    found, level = [], [root]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            if (folder / "run.json").is_file():
                found.append(folder)
                continue
            try:
                below += [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
            except OSError:
                continue
        level = below
    return sorted(found)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _eval_json(run: Path) -> dict:
    for path in (run / "eval" / "eval.json", run / "student" / "eval.json"):
        if path.is_file():
            return _read(path)
    return {}


def _usage(run: Path) -> tuple[int, float]:
    """(bytes on disk under ``run``, newest mtime of a file under it)."""
    size, newest = 0, run.stat().st_mtime
    for folder, _, files in os.walk(run):
        for name in files:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            size += st.st_size
            newest = max(newest, st.st_mtime)
    return size, newest


def _side(agg: dict, side: str) -> dict:
    s = ((agg.get("all") or {}).get(side)) or {}
    return {k: s.get(k) for k in ("mean_wer", "mean_cer", "mean_ss", "accept_rate")}


def run_entry(run: Path, root: Path) -> dict:
    """One registry row: name, stages done, tasks, yield, student vs teacher, last update, size."""
    info = _read(run / "run.json")
    stages = info.get("stages") or {}
    done = {name for name, s in stages.items() if isinstance(s, dict) and s.get("status") == "done"}
    if _read(run / "student" / "train.json").get("status") == "done":
        done.add("distill")
    evaluation = _eval_json(run)
    if evaluation.get("aggregate"):
        done.add("eval")
    if (run / "report.html").is_file():
        done.add("report")
    synth = stages.get("synthesize") or {}
    overall = (((stages.get("filter") or {}).get("yield_summary") or {}).get("all") or {}).get("all") or {}
    size, newest = _usage(run)
    name = run.relative_to(root).as_posix() if run != root else run.resolve().name
    return {
        "name": name, "path": str(run),
        "stages": [s for s in STAGE_ORDER if s in done] + sorted(done - set(STAGE_ORDER)),
        "tasks": synth.get("tasks_done"), "tasks_total": synth.get("total"),
        "accepted": overall.get("accepted"), "attempted": overall.get("attempted"), "yield": overall.get("yield"),
        "student": _side(evaluation.get("aggregate") or {}, "student") if evaluation else None,
        "teacher": _side(evaluation.get("aggregate") or {}, "teacher") if evaluation else None,
        "updated": datetime.fromtimestamp(newest, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "bytes": size,
    }


def _size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n}"


def _pair(entry: dict, key: str) -> str:
    s, t = entry["student"] or {}, entry["teacher"] or {}
    if s.get(key) is None and t.get(key) is None:
        return ""
    f = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    return f"{f(s.get(key))}/{f(t.get(key))}"


def format_runs(entries: list[dict]) -> str:
    """An aligned text table; student figures as ``student/teacher``."""
    header = ["run", "stages", "tasks", "accepted", "WER s/t", "CER s/t", "SS s/t", "updated", "size"]
    rows = [header]
    for e in entries:
        tasks = "" if e["tasks"] is None else f"{e['tasks']}/{e['tasks_total']}"
        accepted = "" if e["yield"] is None else f"{e['accepted']}/{e['attempted']} ({e['yield']:.0%})"
        rows.append([e["name"], ",".join(e["stages"]) or "-", tasks, accepted, _pair(e, "mean_wer"),
                     _pair(e, "mean_cer"), _pair(e, "mean_ss"), e["updated"], _size(e["bytes"])])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
