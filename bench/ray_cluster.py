"""`stepforge run` on a real two-node Ray cluster started on this machine, losing a node mid-run.

    python -m bench.ray_cluster [--keep DIR]

Starts a head and a worker node (`ray start`, one CPU each, token auth; tests/pipelines/
ray_cluster.py), runs `stepforge run` on pipelines/configs/pipeline_tiny.yaml (its spec, filter,
distill and eval settings; shards of 2 tasks so that some commit before the kill) with
--ray-address, watches which node's actors run batches, kills the worker node (its raylet and every
process it started, SIGKILL) once both nodes worked and a shard is committed, ends that run if it
does not end by itself (what a scheduler's timeout does), waits for Ray to mark the node dead,
reruns the same command on the one node left, and checks the run with `stepforge verify`. Prints
node ids, pids, counts and timings. A check of a failure scenario, not of speed: there is no
baseline to divide by, and the timings only say how long each phase took on this machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import CONFIGS, REPO, cli_env
from tests.pipelines.ray_cluster import TwoNodeCluster

HANG_S = 60  # how long the first run may take to end by itself once its node is gone


def pipeline_yaml(folder: Path) -> Path:
    """pipeline_tiny.yaml with small shards (paths made absolute)."""
    text = (CONFIGS / "pipeline_tiny.yaml").read_text()
    text = text.replace("spec: tiny.yaml", f"spec: {CONFIGS / 'tiny.yaml'}")
    text = text.replace("config: distill_tiny.yaml", f"config: {CONFIGS / 'distill_tiny.yaml'}")
    text = text.replace("  codec: melvq\n", "  codec: melvq\n  shard_size: 2\n  batch_size: 1\n")
    path = folder / "pipeline.yaml"
    path.write_text(text)
    return path


def stepforge_run(cluster: TwoNodeCluster, pipeline: Path, run: Path, log: Path) -> subprocess.Popen:
    """The command in the background, its output to ``log`` (a pipe nobody reads could stall it)."""
    env = {**cli_env(), **{k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--out", str(run),
                                 "--no-progress", "--ray-address", cluster.address], cwd=REPO, env=env, text=True,
                                stdout=out, stderr=subprocess.STDOUT)


def committed(run: Path) -> int:
    parts = sorted((run / "manifest.d").glob("shard-*.parquet")) if (run / "manifest.d").exists() else []
    return sum(pq.read_metadata(p).num_rows for p in parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", default=None, help="keep the run here (default: a temporary dir, removed)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sf-rayb-", dir="/tmp"))
    run = Path(args.keep) if args.keep else root / "run"
    pipeline = pipeline_yaml(root)
    t0 = time.monotonic()
    try:
        with TwoNodeCluster(root) as cluster:
            started = time.monotonic() - t0
            head, worker = cluster.node_id("head"), cluster.node_id("worker")
            print(f"cluster {cluster.address}: head node {head}, worker node {worker} ({started:.1f} s to start)")
            first = stepforge_run(cluster, pipeline, run, root / "first.log")
            t1 = time.monotonic()
            seen = {"head": set(), "worker": set()}
            while not (all(seen.values()) and committed(run) > 0):
                if first.poll() is not None:
                    sys.exit(f"the first run ended before both nodes worked: {seen}\n"
                             f"{(root / 'first.log').read_text()[-3000:]}")
                for node, pids in cluster.busy().items():
                    seen[node] |= pids
                time.sleep(0.3)
            before = committed(run)
            first_s = time.monotonic() - t1
            killed = cluster.kill_worker_node()
            print(f"first run: actors ran batches on node {head} (pids {sorted(seen['head'])}) and node {worker} "
                  f"(pids {sorted(seen['worker'])}); {before} rows committed after {first_s:.1f} s; "
                  f"killed the worker node's {len(killed)} processes")
            t2 = time.monotonic()
            try:
                first.wait(timeout=HANG_S)
                last = [line for line in (root / "first.log").read_text().splitlines() if line.strip()][-1:]
                print(f"first run ended by itself {time.monotonic() - t2:.1f} s later, exit {first.returncode}: "
                      f"{last[0][:300] if last else ''}")
            except subprocess.TimeoutExpired:
                first.send_signal(signal.SIGKILL)
                first.wait()
                print(f"first run still running {HANG_S} s after the node died: killed it (SIGKILL)")
            while cluster.alive_nodes() != [head]:
                time.sleep(1)
            print(f"Ray marked the worker node dead {time.monotonic() - t2:.1f} s after the kill")
            t3 = time.monotonic()
            rerun = stepforge_run(cluster, pipeline, run, root / "rerun.log")
            rerun.wait()
            out = (root / "rerun.log").read_text()
            rerun_s = time.monotonic() - t3
            print(f"rerun: exit {rerun.returncode} in {rerun_s:.1f} s")
            print("\n".join(line for line in out.splitlines() if line.startswith(("run:", "synthesize:", "report:"))))
            if rerun.returncode != 0:
                sys.exit(out[-3000:])
        verify = subprocess.run([sys.executable, "-m", "pipelines.cli", "verify", str(run)], cwd=REPO,
                                env=cli_env(), capture_output=True, text=True)
        print(f"verify: exit {verify.returncode}: {verify.stdout.strip()}")
        tasks = pq.read_table(run / "tasks.parquet").column("id").to_pylist()
        rows = pq.read_table(run / "manifest.parquet").column("id").to_pylist()
        once = sorted(rows) == sorted(tasks)
        ledger = json.loads((run / "run.json").read_text())["pipeline"]["stages"]
        print("stages: " + "; ".join(f"{k}: {v['status']} ({v['did']})" for k, v in ledger.items()))
        print(f"tasks {len(tasks)}, manifest rows {len(rows)}, every task exactly once: {once}")
        print(f"ray_cluster: {len(tasks)}/{len(tasks)} tasks exactly once after losing 1 of 2 nodes mid-run "
              f"(verify exit {verify.returncode}); {before} committed before the kill, the rerun on the node left "
              f"took {rerun_s:.0f} s for every stage")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
