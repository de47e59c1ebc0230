"""Per-category yield: accepted / attempted, mean CER and SS, unscored rows, per dimension value.

    summary = yield_summary(run.read_manifest())
    print(format_yield(summary))
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

DIMENSIONS = ("lang", "dialect", "emotion", "style", "speed", "clone")


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return round(float(np.mean(values)), 4) if values else None


def yield_summary(table: pa.Table) -> dict:
    """{dimension: {value: {attempted, accepted, yield, mean_cer, mean_ss, unscored_cer}}} plus
    an ``all`` entry. Rows without a verdict yet are not counted."""
    rows = [r for r in table.to_pylist() if r["accepted"] is not None]
    groups: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        r["clone"] = "clone" if r["speaker"] else "no clone"
        groups["all"]["all"].append(r)
        for dim in DIMENSIONS:
            groups[dim][str(r[dim])].append(r)
    out: dict = {}
    for dim, values in groups.items():
        out[dim] = {}
        for value, members in sorted(values.items()):
            accepted = sum(1 for r in members if r["accepted"])
            out[dim][value] = {
                "attempted": len(members), "accepted": accepted,
                "yield": round(accepted / len(members), 4),
                "mean_cer": _mean([r["cer"] for r in members]),
                "mean_ss": _mean([r["ss"] for r in members]),
                "unscored_cer": sum(1 for r in members if "unscored_cer" in (r["quality_flags"] or [])),
            }
    adherence = adherence_summary(rows)
    if adherence:
        out["adherence"] = adherence
    return out


def adherence_summary(rows: list[dict]) -> dict:
    """{check: {attempted: rows the adherence filter saw, accepted: those this check passed}}; the
    reason names each failed check (``"emotion: ..."``). Empty for runs filtered without it."""
    seen = [r for r in rows if r.get("adherence_ok") is not None]
    out = {}
    for check in ("lang", "emotion", "speed", "rap", "humming"):
        failed = sum(1 for r in seen if f"{check}: " in (r.get("adherence_reason") or ""))
        if seen:
            out[check] = {"attempted": len(seen), "accepted": len(seen) - failed,
                          "yield": round(1 - failed / len(seen), 4), "mean_cer": None, "mean_ss": None,
                          "unscored_cer": 0}
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_yield(summary: dict, ss_model: str = "resemblyzer") -> str:
    lines = [f"{'category':<28}{'accepted/attempted':>20}{'yield':>8}{'mean CER':>10}"
             f"{'mean SS':>9}{'unscored CER':>14}"]
    for dim in ("all", *DIMENSIONS, "adherence"):
        for value, s in summary.get(dim, {}).items():
            name = "all" if dim == "all" else f"{dim}={value}"
            lines.append(f"{name:<28}{s['accepted']:>9}/{s['attempted']:<10}{s['yield']:>8.0%}"
                         f"{_fmt(s['mean_cer']):>10}{_fmt(s['mean_ss']):>9}{s['unscored_cer']:>14}")
    if summary.get("adherence"):
        lines.append("(adherence=CHECK: rows that reached the adherence filter / those the check passed)")
    lines.append(f"(SS is {ss_model} cosine, not comparable with WavLM SS; CER is WER for English)")
    return "\n".join(lines)
