"""``stepforge synthesize SPEC.yaml --out RUN``: expand the spec and synthesize its tasks.

A rerun of the same command (after completion, a crash or kill -9) redoes only the tasks that have
no committed manifest row; a RUN made from another spec or teacher is refused before anything is
written.
"""
from __future__ import annotations

import sys

import pyarrow.compute as pc

from engine import __version__
from engine.codec import absolute_spec
from engine.spec import GenerationSpec
from filters.summary import format_yield
from manifests import RunDir, RunError
from pipelines.filter_job import filter_run, load_config, spec_filter_config
from pipelines.identity import claim_run, identify, utc_now
from pipelines.synthesize import Lineage, next_work, run_synthesis


def register(sub) -> None:
    p = sub.add_parser("synthesize", help="synthesize a generation spec into a run directory",
                       description=__doc__.split("\n")[0])
    p.add_argument("spec", help="GenerationSpec YAML")
    p.add_argument("--out", required=True, help="run directory (created, or resumed)")
    p.add_argument("--teacher", default="reference", help="reference (default), vllm:DIR, http:URL, torch:DIR")
    p.add_argument("--codec", default="melvq",
                   help="speech codec: melvq (shipped), a melvq weights file, or stepaudio:MODEL_PATH "
                        "(the released Step-Audio-Tokenizer + Step-Audio-TTS-3B)")
    p.add_argument("--limit", type=int, default=None, help="synthesize only the first N tasks")
    p.add_argument("--workers", type=int, default=None, help="teacher actors (default: fill the CPUs/GPUs)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tasks per teacher call (default: the teacher's; 4 reference, 32 LM teachers)")
    p.add_argument("--shard-size", type=int, default=64, help="samples per shard (the unit of commit)")
    p.add_argument("--attempts", type=int, default=1,
                   help="regenerate rejected tasks with a new seed, filtering between rounds, up to N attempts")
    p.add_argument("--filter-config", default=None, help="filter YAML for --attempts (default: the spec's filter:)")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args) -> int:
    for flag in ("limit", "attempts", "batch_size", "shard_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise RunError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    spec = GenerationSpec.load(args.spec)
    spec_filter_config(spec)  # a bad filter: section fails before anything is written
    tasks = spec.expand()
    run = RunDir(args.out)
    with run.lock():
        teacher, codec = identify(args.teacher, args.codec)
        _claim(run, spec, tasks, teacher, codec, args)
        removed = run.recover()
        if removed:
            print(f"recovered: removed {len(removed)} uncommitted shard(s) of an interrupted run", file=sys.stderr)
        total, tasks = len(tasks), None  # from here on the tasks stream from tasks.parquet
        summary = _rounds(run, teacher, codec, spec.hash, args)
        rows = run.merge_manifest()
        done = pc.count_distinct(run.read_manifest(["id"]).column("id")).as_py()
        run.update_stage("synthesize", status="done" if done >= total else "partial", tasks_done=done,
                         rows=rows, total=total, last=summary,
                         finished_at=utc_now())
    _print_summary(run, summary, done, total)
    return 0


def _rounds(run: RunDir, teacher, codec, spec_hash: str, args) -> dict:
    """Synthesize what is missing; with --attempts N, filter and regenerate rejected tasks with a
    new seed until each is accepted or has had N attempts (every attempt stays in the manifest)."""
    config = None
    if args.attempts > 1:
        config = load_config(run, args.filter_config)
        filter_run(run, config, args.ray_address, not args.no_progress, quiet=True)  # a resumed round
    total: dict = {}
    while todo := next_work(run, None, args.attempts, limit=args.limit):
        stats = _synthesize(run, todo, teacher, codec, spec_hash, args)
        for key in ("tasks", "errors", "wall_s", "audio_s"):
            total[key] = round(total.get(key, 0) + stats[key], 2)
        kinds = total.setdefault("errors_by_kind", {})
        for kind, n in stats["errors_by_kind"].items():
            kinds[kind] = kinds.get(kind, 0) + n
        if config is not None:
            filter_run(run, config, args.ray_address, not args.no_progress, quiet=True)
    if total:
        total["tasks_per_s"] = round(total["tasks"] / total["wall_s"], 3)
        total["audio_s_per_wall_s"] = round(total["audio_s"] / total["wall_s"], 3)
    if config is not None:
        print(format_yield(run.info()["stages"]["filter"]["yield_summary"]))
    return total or {"tasks": 0}


def _claim(run: RunDir, spec, tasks, teacher, codec, args) -> None:
    """Create the run, or check that an existing one was made by this spec and teacher."""
    def same_inputs(info: dict) -> None:
        if info.get("spec_hash") != spec.hash:
            raise RunError(f"{run.path} belongs to a different spec (hash {info.get('spec_hash')}, "
                           f"this spec {spec.hash}); use another --out")
        for key, value in (("codec", codec.version), ("teacher", teacher.id)):
            if info.get(key) != value:
                raise RunError(f"{run.path} was synthesized with {key} {info.get(key)}, not {value}; "
                               "use another --out")

    identity = {"spec_path": str(args.spec), "spec_hash": spec.hash, "seed": spec.seed,
                "teacher": teacher.id, "codec": codec.version, "codec_spec": absolute_spec(args.codec)}
    # the filter thresholds may change between reruns; the tasks may not (the spec hash)
    claim_run(run, tasks, identity, same_inputs, refresh={"spec": spec.to_dict()})


def _synthesize(run, todo, teacher, codec, spec_hash, args) -> dict:
    lineage = Lineage(spec_hash=spec_hash, teacher_id=teacher.id, codec_version=codec.version,
                      stepforge_version=__version__)
    return run_synthesis(run, todo, args.teacher, lineage, codec=args.codec, resources=teacher.resources,
                         shard_size=args.shard_size, batch_size=args.batch_size or teacher.batch_size,
                         workers=args.workers,
                         address=args.ray_address, progress=not args.no_progress)


def _print_summary(run: RunDir, summary: dict, rows: int, total: int) -> None:
    if summary.get("tasks"):
        print(f"synthesize: {summary['tasks']} attempts ({summary['errors']} errors) in {summary['wall_s']} s: "
              f"{summary['tasks_per_s']} tasks/s, {summary['audio_s_per_wall_s']} audio s per wall s "
              f"({summary['audio_s']} s of audio)")
        if summary.get("errors_by_kind"):
            print("errors by kind: " + ", ".join(f"{k} {n}" for k, n in summary["errors_by_kind"].items()))
    else:
        print("synthesize: nothing to do, every task already has a manifest row")
    print(f"run: {run.path} ({rows}/{total} tasks in manifest.parquet)")
