"""``stepforge verify RUN``: check a run directory end to end; exit 0 when healthy, 1 with the
findings listed. ``--repair`` removes only what a rerun regenerates (temporaries, tars without a
journal fragment) and rebuilds a stale manifest.parquet; committed data is never touched."""
from __future__ import annotations

import json

from manifests import RunDir
from pipelines.verify import repair_run, verify_run


def register(sub) -> None:
    p = sub.add_parser("verify", help="check a run directory end to end", description=__doc__.split("\n")[0])
    p.add_argument("run", help="run directory")
    p.add_argument("--student", action="append", default=[],
                   help="also check this student's train.json against the run (repeatable; default: RUN/student)")
    p.add_argument("--repair", action="store_true", help="remove leftovers of interrupted writes, then verify")
    p.add_argument("--no-decode", action="store_true", help="read every sample but do not decode its audio")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=main)


def main(args) -> int:
    run = RunDir(args.run)
    run.info()  # not a run: one line, exit 2
    repaired = repair_run(run) if args.repair else []
    report = verify_run(run, students=args.student, decode=not args.no_decode)
    if args.json:
        print(json.dumps({**report.as_dict(), "repaired": repaired}, indent=2))
        return 0 if report.ok else 1
    for line in repaired:
        print(f"repaired: {line}")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(report.counts.items()))
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(f"{run.path}: ok ({counts})")
        return 0
    print(f"{run.path}: {len(report.findings)} finding(s) ({counts})")
    for finding in report.findings:
        print(f"  {finding}")
    return 1
