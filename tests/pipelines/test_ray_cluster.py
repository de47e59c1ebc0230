"""``--ray-address`` on a real two-node Ray cluster started on this machine
(:mod:`tests.pipelines.ray_cluster`): the synthesize job's actors work on both nodes, the worker
node dies mid-run (its raylet and everything it started, SIGKILL), the job sends the lost worker's
batches to the head's and finishes by itself with every task exactly once (``stepforge verify``), and
a rerun finds nothing left to do. The whole ``stepforge run`` pipeline under the same
failure, with timings: ``python -m bench.ray_cluster``.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import CONFIGS, REPO, cli_env
from tests.pipelines.ray_cluster import RAY, TwoNodeCluster

pytestmark = pytest.mark.slow
# Ray notices a dead node after ~1.5 s instead of its default ~15-30 s (health checks every 3 s, 5 misses)
FAST_DEATH = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
              "RAY_health_check_failure_threshold": "3"}


@pytest.fixture(scope="module")
def cluster():
    if not Path(RAY).exists():
        pytest.skip(f"no ray CLI beside {sys.executable}")
    root = Path(tempfile.mkdtemp(prefix="sf-ray-", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        with TwoNodeCluster(root, env=FAST_DEATH) as c:
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)


def synthesize(cluster: TwoNodeCluster, spec: Path, run: Path, log: Path) -> subprocess.Popen:
    """The command in the background, its output to ``log`` (a pipe nobody reads could stall it)."""
    env = {**cli_env(), **{k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_ADDRESS")}}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines.cli", "synthesize", str(spec),
                                 "--out", str(run), "--no-progress", "--shard-size", "1", "--batch-size", "1",
                                 "--ray-address", cluster.address], cwd=REPO, env=env, text=True,
                                stdout=out, stderr=subprocess.STDOUT)


def watch_both_nodes_work(cluster: TwoNodeCluster, proc: subprocess.Popen, run: Path, log: Path,
                          timeout: float = 300) -> dict:
    """Poll until an actor has run a batch on each node and a shard is committed; returns
    {node id: pids of its actors seen working}."""
    seen = {"head": set(), "worker": set()}
    deadline = time.monotonic() + timeout
    while not (all(seen.values()) and any((run / "manifest.d").glob("shard-*.parquet"))):
        assert proc.poll() is None, f"the run ended before both nodes worked: {seen}\n{log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no work on both nodes in {timeout} s: {seen}"
        for node, pids in cluster.busy().items():
            seen[node] |= pids
        time.sleep(0.3)
    return {cluster.node_id(node): pids for node, pids in seen.items()}


def test_synthesize_uses_both_nodes_and_finishes_after_one_dies(cluster, tmp_path):
    run, spec = tmp_path / "run", tmp_path / "twenty.yaml"
    spec.write_text((CONFIGS / "tiny.yaml").read_text().replace("count: 12", "count: 20"))
    head, worker = cluster.node_id("head"), cluster.node_id("worker")
    first = synthesize(cluster, spec, run, tmp_path / "first.log")
    working = watch_both_nodes_work(cluster, first, run, tmp_path / "first.log")
    assert set(working) == {head, worker} and all(working.values())
    assert cluster.kill_worker_node()
    try:  # Ray marks the node dead after its health checks fail; the driver then moves its batches
        first.wait(timeout=600)
    except subprocess.TimeoutExpired:
        first.send_signal(signal.SIGKILL)
        first.wait()
        pytest.fail("the job waited forever for the worker lost with its node\n" + (tmp_path / "first.log").read_text()[-3000:])
    out = (tmp_path / "first.log").read_text()
    assert first.returncode == 0, out[-3000:]
    assert cluster.alive_nodes() == [head]
    tasks = pq.read_table(run / "tasks.parquet").column("id").to_pylist()
    rows = pq.read_table(run / "manifest.parquet").select(["id", "attempt", "status"]).to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(tasks) and all(r["status"] == "ok" for r in rows)
    assert "lost with their node; their batches go to the 1 left" in out  # killed mid-run, and noticed
    assert f"{len(tasks)}/{len(tasks)} tasks" in out
    rerun = synthesize(cluster, spec, run, tmp_path / "rerun.log")
    rerun.wait(timeout=600)
    assert rerun.returncode == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert pq.read_table(run / "manifest.parquet").num_rows == len(tasks)
    verify = subprocess.run([sys.executable, "-m", "pipelines.cli", "verify", str(run), "--no-decode"], cwd=REPO,
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert verify.returncode == 0, verify.stdout + verify.stderr
