"""Synthesize + filter at 1k, 10k and 50k tasks: wall time per task and driver peak RSS.

    python -m bench.scale [--sizes 1000 10000 50000] [--workers 2] [--out bench]

Each size runs in a fresh driver process (so its peak RSS is its own): a run directory whose
tasks.parquet holds N tasks (written in chunks), then the synthesize job's machinery
(``next_work`` streaming tasks.parquet, ``run_synthesis`` on the Ray actor pool, shards and journal
fragments, the merged manifest) and the filter job's (``filter_run``: pending rows streamed from
the journal, verdict parts, the merge and the yield tally). The teacher is
:class:`PrerenderedTeacher`, a real teacher that returns pre-tokenized Step-Audio ids (rendered
once by the reference teacher and the melvq codec before the sizes run), and
:class:`PrerenderedDecode` hands the codec's decoding of those ids back, so the bench measures the
pipeline, not eSpeak or the vocoder; :class:`PackSample` still encodes every flac, and the filter
workers still read every sample back from its shard and run the quality checks on it (CER,
speaker similarity, DNSMOS and adherence are left out: their models cost seconds per row).

The baseline is the smallest size in the same invocation: the figures at N are ratios to it.
The marginal cost per task (between consecutive sizes) cancels the fixed costs (Ray actors
starting, the final merge's constant part) that dominate a small run.
Writes ``OUT/scale_results.json``, ``OUT/scale_results.md`` and ``OUT/scale.png``; ends with one
line ``scale: ...``. Driver RSS is the driver process's (the actors are other processes): its
RSS when the jobs start (imports, Ray's client) and its peak while they run (VmHWM, reset after
the setup), so growth with the task count shows instead of hiding under the imports' peak.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.teachers.base import Teacher, TeacherOutput
from manifests.record import Task
from manifests.stage import Stage

TEXTS = ["Yes.", "No way.", "Hello there.", "Thank you.", "Good morning.", "See you soon.", "Not today.",
         "Right now."]


def _digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int32).tobytes()).hexdigest()


class PrerenderedTeacher(Teacher):
    """Returns the pre-tokenized ids of its task's text (``outputs``: the npz :func:`prerender`
    writes); a text it has none for is a row error, as a teacher reports one."""

    name = "prerendered"
    version = "1"
    batch_size = 16

    def __init__(self, outputs: str):
        self.outputs = outputs
        self.tokens: dict[str, np.ndarray] = {}

    def setup(self) -> None:
        with np.load(self.outputs) as data:
            self.tokens = {text: data[f"tokens_{i}"] for i, text in enumerate(TEXTS)}

    def synthesize(self, tasks: list[Task]) -> list[TeacherOutput]:
        return [TeacherOutput(t.id, tokens=self.tokens[t.text]) if t.text in self.tokens
                else TeacherOutput(t.id, error=f"no output: no pre-rendered ids for {t.text!r}") for t in tasks]


class PrerenderedDecode(Stage):
    """The codec stage's output (``audio``, ``n_tokens``) for ids it decoded before, looked up by
    the ids' digest; unknown ids become a row error."""

    name = "prerendered-decode"

    def __init__(self, outputs: str):
        self.outputs = outputs
        self.audio: dict[str, np.ndarray] = {}

    def setup(self) -> None:
        with np.load(self.outputs) as data:
            self.audio = {_digest(data[f"tokens_{i}"]): data[f"audio_{i}"] for i in range(len(TEXTS))}

    def process(self, records: list[dict]) -> list[dict]:
        out = []
        for r in records:
            audio = None if r["tokens"] is None else self.audio.get(_digest(r["tokens"]))
            error = r["error"] or ("" if audio is not None else "decode: ids not pre-rendered")
            out.append({**r, "audio": audio, "error": error, "n_tokens": 0 if error else int(r["tokens"].size)})
        return out


def bench_synthesis_stages(teacher: str, codec: str, outputs: str) -> list[Stage]:
    from pipelines.synthesize import PackSample

    return [PrerenderedTeacher(outputs), PrerenderedDecode(outputs), PackSample(16000)]


def bench_filter_stages(run: str, config: dict, baselines: dict | None = None) -> list[Stage]:
    from filters import FilterChain
    from filters.config import FilterConfig
    from filters.quality import QualityFilter
    from pipelines.filter_job import LoadSample, Verdicts

    config_ = FilterConfig.from_dict(config)
    return [LoadSample(run), FilterChain([QualityFilter(**config_.quality)]), Verdicts(config_.hash)]


def prerender(path: Path) -> None:
    """Tokenize and decode :data:`TEXTS` once with the reference teacher and melvq."""
    from engine.codec import load_codec
    from engine.teachers import make_teacher

    codec = load_codec("melvq")
    teacher = make_teacher("reference", codec=codec)
    teacher.setup()
    codec.setup()
    tasks = [Task(id=f"pre{i}", text=t, lang="en", dialect="english", seed=i) for i, t in enumerate(TEXTS)]
    records = codec.process(teacher.process([t.to_row() for t in tasks]))
    bad = [r["error"] for r in records if r["error"]]
    if bad:
        raise SystemExit(f"prerender failed: {bad[0]}")
    np.savez(path, **{f"tokens_{i}": r["tokens"] for i, r in enumerate(records)},
             **{f"audio_{i}": r["audio"].astype(np.float32) for i, r in enumerate(records)})


def write_tasks_file(path: Path, n: int, chunk: int = 4096) -> None:
    """``n`` tasks over :data:`TEXTS` (distinct ids and seeds), written ``chunk`` at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from manifests.record import TASK_SCHEMA

    with pq.ParquetWriter(path, TASK_SCHEMA) as writer:
        for start in range(0, n, chunk):
            rows = [Task(id=hashlib.sha256(str(i).encode()).hexdigest()[:16], text=TEXTS[i % len(TEXTS)], lang="en",
                         dialect="english", seed=i).to_row() for i in range(start, min(n, start + chunk))]
            writer.write_table(pa.Table.from_pylist(rows, schema=TASK_SCHEMA))


def peak_rss_mb() -> float:
    """The driver's peak RSS since start, or since the last :func:`reset_peak` (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_parts_mb() -> dict:
    """The driver's current RSS by kind: anonymous (its own heap) and shared memory (pages of
    Ray's object store it has mapped to read results)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        for key in ("RssAnon", "RssFile", "RssShmem"):
            if line.startswith(key + ":"):
                out[key] = round(int(line.split()[1]) / 1024, 1)
    return out


def reset_peak() -> bool:
    """Restart the peak RSS count from the current RSS (``clear_refs`` 5); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def one_size(n: int, workdir: Path, outputs: Path, workers: int, batch: int) -> dict:
    """One size in this process (the driver): returns its figures."""
    from ray import cloudpickle

    from filters.config import FilterConfig
    from manifests import RunDir
    from pipelines.actor_pool import init_ray
    from pipelines.filter_job import filter_run
    from pipelines.synthesize import Lineage, next_work, run_synthesis

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors import no bench module
    init_ray()
    run = RunDir(workdir / "run")
    run.path.mkdir(parents=True)
    write_tasks_file(run.tasks, n)
    run.write_info({"spec": {}, "stages": {}})
    lineage = Lineage(spec_hash="bench", teacher_id="prerendered@1", codec_version="melvq", stepforge_version="bench")
    config = FilterConfig(adherence=None, workers=workers)
    rss_setup = peak_rss_mb()  # imports, Ray's client, writing tasks.parquet
    reset_peak()
    rss_ready, parts_ready = peak_rss_mb(), rss_parts_mb()  # the driver's RSS when the jobs start
    with run.lock():
        start = time.perf_counter()
        plan = next_work(run, None)
        synth = run_synthesis(run, plan, "prerendered", lineage, batch_size=batch, workers=workers, progress=False,
                              stages=bench_synthesis_stages, stage_kwargs={"outputs": str(outputs)})
        rows = run.merge_manifest()  # what `stepforge synthesize` ends with
        synth_s = time.perf_counter() - start
        rss_synth, parts_synth = peak_rss_mb(), rss_parts_mb()
        start = time.perf_counter()
        summary = filter_run(run, config, progress=False, quiet=True, stages=bench_filter_stages)
        filter_s = time.perf_counter() - start
    rss_jobs, parts_jobs = peak_rss_mb(), rss_parts_mb()  # the peak while the jobs ran
    ids = run.read_manifest(["id", "accepted"])  # checks, after the figures
    assert rows == n == ids.num_rows == len(set(ids.column("id").to_pylist())), (rows, n, ids.num_rows)
    assert summary["all"]["all"]["attempted"] == n and synth["errors"] == 0, (summary["all"], synth["errors"])
    return {"tasks": n, "synth_s": round(synth_s, 2), "filter_s": round(filter_s, 2),
            "synth_ms_per_task": round(1000 * synth_s / n, 3), "filter_ms_per_task": round(1000 * filter_s / n, 3),
            "rss_setup_peak_mb": round(rss_setup, 1), "rss_ready_mb": round(rss_ready, 1),
            "rss_synth_peak_mb": round(rss_synth, 1), "rss_jobs_peak_mb": round(rss_jobs, 1),
            "rss_peak_mb": round(max(rss_setup, rss_jobs), 1), "rss_parts_ready": parts_ready,
            "rss_parts_after_synth": parts_synth, "rss_parts_after_filter": parts_jobs, "accepted": summary["all"]["all"]["accepted"],
            "shards": len(list(run.shards.glob("shard-*.tar")))}


def run_sizes(sizes: list[int], workers: int, batch: int) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="stepforge-scale-") as tmp:
        outputs = Path(tmp) / "outputs.npz"
        prerender(outputs)
        for n in sizes:
            workdir = Path(tmp) / f"n{n}"
            cmd = [sys.executable, "-m", "bench.scale", "--one", str(n), "--workdir", str(workdir),
                   "--outputs", str(outputs), "--workers", str(workers), "--batch", str(batch)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
            if proc.returncode != 0:
                raise SystemExit(f"size {n} failed:\n{proc.stderr[-4000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
            subprocess.run(["rm", "-rf", str(workdir)], check=True)
    return results


def marginal(results: list[dict], key: str) -> list[float | None]:
    """Per-task cost between each size and the one before it (ms): the fixed costs (actor
    start, model load, the final merge's constant part) cancel."""
    out: list[float | None] = [None]
    for a, b in zip(results, results[1:]):
        out.append(round(1000 * (b[key] - a[key]) / (b["tasks"] - a["tasks"]), 3))
    return out


def table(results: list[dict]) -> str:
    base = results[0]
    synth, filt = marginal(results, "synth_s"), marginal(results, "filter_s")
    lines = ["| tasks | synth s | filter s | synth ms/task | filter ms/task | synth marginal ms/task | "
             "filter marginal ms/task | driver RSS at start MB | driver peak RSS, synthesize MB | "
             "driver peak RSS, synthesize + filter MB | synthesize peak vs base | jobs peak vs base |",
             "|" + "---|" * 12]
    for r, ms, mf in zip(results, synth, filt):
        lines.append(f"| {r['tasks']} | {r['synth_s']} | {r['filter_s']} | {r['synth_ms_per_task']} | "
                     f"{r['filter_ms_per_task']} | {'-' if ms is None else ms} | {'-' if mf is None else mf} | "
                     f"{r['rss_ready_mb']} | {r['rss_synth_peak_mb']} | {r['rss_jobs_peak_mb']} | "
                     f"{r['rss_synth_peak_mb'] / base['rss_synth_peak_mb']:.2f} | "
                     f"{r['rss_jobs_peak_mb'] / base['rss_jobs_peak_mb']:.2f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["tasks"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(n, [r["synth_ms_per_task"] for r in results], "o-", label="synthesize")
    left.plot(n, [r["filter_ms_per_task"] for r in results], "s-", label="filter")
    left.set(xscale="log", xlabel="tasks", ylabel="wall ms per task", title="wall time per task", ylim=(0, None))
    left.legend()
    right.plot(n, [r["rss_synth_peak_mb"] for r in results], "o-", label="driver peak RSS, synthesize")
    right.plot(n, [r["rss_jobs_peak_mb"] for r in results], "s-", label="driver peak RSS, synthesize + filter")
    right.plot(n, [r["rss_ready_mb"] for r in results], "--", color="grey", label="driver RSS when the jobs start")
    right.set(xscale="log", xlabel="tasks", ylabel="MB", title="driver peak RSS", ylim=(0, None))
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--workers", type=int, default=2, help="actors per job")
    parser.add_argument("--batch", type=int, default=16, help="tasks per actor call")
    parser.add_argument("--out", default="bench", help="folder for scale_results.{json,md} and scale.png")
    parser.add_argument("--replot", action="store_true", help="redraw OUT's table and plot from its JSON")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--outputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, Path(args.workdir), Path(args.outputs), args.workers, args.batch)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "scale_results.json").read_text())
        meta, results = saved["meta"], saved["results"]
    else:
        results = run_sizes(sorted(args.sizes), args.workers, args.batch)
        load = os.getloadavg()
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
                "load_avg_1_5_15": [round(x, 1) for x in load], "workers": args.workers, "batch": args.batch,
                "command": "python -m bench.scale " + " ".join(sys.argv[1:])}
        (out / "scale_results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    (out / "scale_results.md").write_text(f"# bench/scale.py\n\n{json.dumps(meta)}\n\n{table(results)}\n")
    plot(results, out / "scale.png")
    print(table(results))
    base, last = results[0], results[-1]
    print(f"scale: at {last['tasks']} tasks synth {last['synth_ms_per_task']} ms/task "
          f"({last['synth_ms_per_task'] / base['synth_ms_per_task']:.2f} x {base['tasks']}), filter "
          f"{last['filter_ms_per_task']} ms/task ({last['filter_ms_per_task'] / base['filter_ms_per_task']:.2f} x), "
          f"driver peak RSS in the jobs {last['rss_jobs_peak_mb']} MB "
          f"({last['rss_jobs_peak_mb'] / base['rss_jobs_peak_mb']:.2f} x)")


if __name__ == "__main__":
    main()
