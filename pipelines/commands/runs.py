"""``stepforge runs [ROOT] [--json]``: list the run directories under ROOT (default ./runs) with
their stages, tasks, yield, student-vs-teacher figures, last update and size."""
from __future__ import annotations

import json
from pathlib import Path

from manifests.errors import UserError
from pipelines.runs import find_runs, format_runs, run_entry


def register(sub) -> None:
    p = sub.add_parser("runs", help="list the runs under a folder", description=__doc__.split("\n")[0])
    p.add_argument("root", nargs="?", default="runs", help="folder searched for run directories (default: ./runs)")
    p.add_argument("--depth", type=int, default=3, help="levels below ROOT searched (default 3)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=main)


def main(args) -> int:
    root = Path(args.root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    entries = [run_entry(path, root) for path in find_runs(root, args.depth)]
    if args.json:
        print(json.dumps(entries, indent=2))
    elif entries:
        print(format_runs(entries))
    else:
        print(f"no runs under {root}")
    return 0
