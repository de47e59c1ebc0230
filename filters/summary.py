"""Per-category yield: accepted / attempted, mean CER and SS, unscored rows, per dimension value.

    summary = yield_summary(run.read_manifest())
    print(format_yield(summary))

A large manifest is tallied a row group at a time (``run.merge_manifest(tally.add)`` with a
:class:`YieldTally`), so the summary never needs the whole table in memory.
"""
from __future__ import annotations

import math
from collections import defaultdict

import pyarrow as pa

DIMENSIONS = ("lang", "dialect", "emotion", "style", "speed", "clone")
SUMMARY_COLUMNS = ["accepted", "speaker", "cer", "ss", "quality_flags", "adherence_ok", "adherence_reason",
                   *(d for d in DIMENSIONS if d != "clone")]
CHECKS = ("lang", "emotion", "speed", "rap", "humming")


class _Group:
    """Running counts of one category value (means from sums: no list of rows is kept)."""

    def __init__(self):
        self.attempted = self.accepted = self.unscored_cer = 0
        self.sums = {"cer": [], "ss": []}  # partial sums, one per row group (fsum at the end)
        self.counts = {"cer": 0, "ss": 0}

    def add(self, rows: list[dict]) -> None:
        self.attempted += len(rows)
        self.accepted += sum(1 for r in rows if r["accepted"])
        self.unscored_cer += sum(1 for r in rows if "unscored_cer" in (r["quality_flags"] or []))
        for name in ("cer", "ss"):
            values = [r[name] for r in rows if r[name] is not None and not math.isnan(r[name])]
            self.sums[name].append(math.fsum(values))
            self.counts[name] += len(values)

    def summary(self) -> dict:
        mean = {n: round(math.fsum(self.sums[n]) / self.counts[n], 4) if self.counts[n] else None
                for n in ("cer", "ss")}
        return {"attempted": self.attempted, "accepted": self.accepted,
                "yield": round(self.accepted / self.attempted, 4),
                "mean_cer": mean["cer"], "mean_ss": mean["ss"], "unscored_cer": self.unscored_cer}


class YieldTally:
    """:func:`yield_summary` over a manifest given a table at a time (``tally.add(table)`` per
    row group, then ``tally.summary()``): holds counts per category value, not the rows."""

    def __init__(self):
        self.groups: dict = defaultdict(lambda: defaultdict(_Group))
        self.adherence_seen = 0
        self.adherence_failed = dict.fromkeys(CHECKS, 0)

    def add(self, table: pa.Table) -> None:
        for batch in table.select(SUMMARY_COLUMNS).to_batches(max_chunksize=4096):
            rows = [r for r in batch.to_pylist() if r["accepted"] is not None]
            by_value: dict = defaultdict(list)
            for r in rows:
                r["clone"] = "clone" if r["speaker"] else "no clone"
                by_value["all", "all"].append(r)
                for dim in DIMENSIONS:
                    by_value[dim, str(r[dim])].append(r)
            for (dim, value), members in by_value.items():
                self.groups[dim][value].add(members)
            seen = [r for r in rows if r.get("adherence_ok") is not None]
            self.adherence_seen += len(seen)
            for check in CHECKS:
                self.adherence_failed[check] += sum(1 for r in seen if f"{check}: " in (r.get("adherence_reason") or ""))

    def summary(self) -> dict:
        out: dict = {dim: {value: g.summary() for value, g in sorted(values.items())}
                     for dim, values in self.groups.items()}
        seen = self.adherence_seen
        if seen:
            out["adherence"] = {check: {"attempted": seen, "accepted": seen - failed,
                                        "yield": round(1 - failed / seen, 4), "mean_cer": None, "mean_ss": None,
                                        "unscored_cer": 0}
                                for check, failed in self.adherence_failed.items()}
        return out


def yield_summary(table: pa.Table) -> dict:
    """{dimension: {value: {attempted, accepted, yield, mean_cer, mean_ss, unscored_cer}}} plus
    an ``all`` entry. Rows without a verdict yet are not counted."""
    tally = YieldTally()
    tally.add(table)
    return tally.summary()


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
