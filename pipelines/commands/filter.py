"""``stepforge filter RUN``: score a synthesized run (quality, CER, speaker similarity) and mark
each row accepted or rejected with its reason. Rerunnable: only rows without a verdict under the
same thresholds are scored."""
from __future__ import annotations

import sys

from manifests import RunDir
from pipelines.filter_job import filter_run, load_config


def register(sub) -> None:
    p = sub.add_parser("filter", help="score and gate a run's samples", description=__doc__.split("\n")[0])
    p.add_argument("run", help="run directory made by `stepforge synthesize`")
    p.add_argument("--max-cer", type=float, default=None, help="reject above this CER/WER (default 0.2)")
    p.add_argument("--min-ss", type=float, default=None, help="reject below this speaker similarity (default 0.6)")
    p.add_argument("--config", default=None, help="filter YAML (keys as in a spec's filter: section)")
    p.add_argument("--workers", type=int, default=None, help="filter actors (default: fill the CPUs)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args) -> int:
    run = RunDir(args.run)
    config = load_config(run, args.config, max_cer=args.max_cer, min_ss=args.min_ss, workers=args.workers)
    with run.lock():
        if run.recover():
            print("recovered: removed uncommitted shards of an interrupted synthesize", file=sys.stderr)
        filter_run(run, config, args.ray_address, not args.no_progress)
    print(f"run: {run.path} (manifest.parquet updated)")
    return 0
