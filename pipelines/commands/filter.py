"""``stepforge filter RUN``: score a synthesized run (quality, CER, speaker similarity) and mark
each row accepted or rejected with its reason. Rerunnable: only rows without a verdict under the
same thresholds are scored."""
from __future__ import annotations

import sys
from pathlib import Path


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


def load_config(run, path: str | None, **overrides):
    import yaml

    from filters.config import FilterConfig

    data = (run.info().get("spec") or {}).get("filter") or {}
    where = f"{run.run_json}: spec.filter"
    if path:
        try:
            data = {**data, **(yaml.safe_load(Path(path).read_text()) or {})}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read filter config ({str(exc).splitlines()[0]})") from None
        where = path
    return FilterConfig.from_dict(data, where).overridden(**overrides)


def filter_run(run, config, address=None, progress=True, quiet=False) -> dict:
    """Filter, consolidate the manifest, store and print the yield table; returns the summary."""
    from pipelines.filter_job import run_filter
    from filters.summary import format_yield, yield_summary

    stats = run_filter(run, config, address=address, progress=progress)
    table = run.consolidate()
    summary = yield_summary(table)
    run.update_stage("filter", status="done", last=stats, yield_summary=summary)
    if not quiet:
        print(format_yield(summary))
    if stats["scored"]:
        print(f"filter: scored {stats['scored']} rows in {stats['wall_s']} s "
              f"({stats['audio_s_per_wall_s']} audio s per wall s)")
    return summary


def main(args) -> int:
    from manifests import RunDir

    run = RunDir(args.run)
    config = load_config(run, args.config, max_cer=args.max_cer, min_ss=args.min_ss, workers=args.workers)
    with run.lock():
        if run.recover():
            print("recovered: removed uncommitted shards of an interrupted synthesize", file=sys.stderr)
        filter_run(run, config, args.ray_address, not args.no_progress)
    print(f"run: {run.path} (manifest.parquet updated)")
    return 0
