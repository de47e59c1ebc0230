"""A real two-node Ray cluster on this machine, for the cluster test and bench/ray_cluster.py.

    with TwoNodeCluster(Path("/tmp/c")) as cluster:      # `ray start --head`, then `ray start --address`
        stepforge("run", PIPELINE, "--out", RUN, "--ray-address", cluster.address)
        cluster.busy()                                   # {node: pids of its actors running a task now}
        cluster.kill_worker_node()                       # its raylet and everything it started

Each node has its own CPUs and its own --temp-dir, so its processes are told apart by their
command lines (the raylet, agents, log monitor) and as the raylet's descendants (its workers,
whose titles Ray rewrites). Teardown kills exactly those processes by pid: `ray stop` would kill
every Ray process of the user, other people's included. Token auth as Ray 2.60 wants it:
RAY_AUTH_MODE=token with the token of `ray get-auth-token --generate`. RAY_ADDRESS is set for the
nodes and for whatever joins, so code inside the cluster never guesses among other Ray instances
on the machine.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out[int(entry.name)] = (ppid, cmd)
    return out


class TwoNodeCluster:
    """A head node and a worker node (``cpus`` CPUs each) under ``root`` (keep it short: Ray's
    socket paths live under it). ``env``: more variables for the nodes (e.g. Ray's
    ``RAY_health_check_*`` system config, how soon a dead node is noticed)."""

    def __init__(self, root: Path, cpus: int = 1, env: dict | None = None):
        self.root, self.cpus = Path(root), cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dirs = {"head": self.root / "h", "worker": self.root / "w"}
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": self.address,
                    "RAY_DISABLE_USAGE_STATS": "1", **(env or {})}

    def __enter__(self) -> "TwoNodeCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 180) -> None:
        subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, check=True, capture_output=True)
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--disable-usage-stats"]
        self._ray_start(["--head", f"--port={self.port}", f"--temp-dir={self.dirs['head']}",
                         "--include-dashboard=false", f"--ray-client-server-port={free_port()}", *common])
        self._ray_start([f"--address={self.address}", f"--temp-dir={self.dirs['worker']}", *common])
        deadline = time.monotonic() + timeout
        while len(self.alive_nodes()) < 2:  # `ray status` imports Ray: seconds of CPU, so not too often
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker node did not join {self.address} in {timeout} s")
            time.sleep(3)

    def _ray_start(self, args: list[str]) -> None:
        proc = subprocess.run([RAY, "start", *args], env=self.env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def node_id(self, node: str) -> str:
        """The node id (hex) of ``"head"`` or ``"worker"``, from its raylet's command line."""
        for _, cmd in _processes().values():
            if "/raylet " in f"{cmd.split(' ', 1)[0]} " and f"{self.dirs[node]}/" in cmd:
                return re.search(r"--node_id=([0-9a-f]+)", cmd).group(1)
        raise RuntimeError(f"no raylet of the {node} node is running")

    def pids(self, node: str, procs: dict | None = None) -> list[int]:
        """Every process of ``node``: those naming its temp dir and their descendants."""
        procs = _processes() if procs is None else procs
        mine = {pid for pid, (_, cmd) in procs.items() if f"{self.dirs[node]}/" in cmd and pid != os.getpid()}
        grew = True
        while grew:
            children = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
            grew = bool(children)
            mine |= children
        return sorted(mine)

    def busy(self, cls: str = "StageWorker") -> dict[str, set[int]]:
        """{node: pids of its ``cls`` actor processes running a task now}: the actors doing work on
        each node. Ray titles a worker process ``ray::CLASS.METHOD`` while it runs a task (Ray
        Data's actor pools: ``ray::MapWorker(MapBatches(CLASS)).submit``), ``ray::CLASS`` idle."""
        running = re.compile(rf"ray::(MapWorker\(MapBatches\()?{cls}\)*\.(?!__init__)\w+")
        procs = _processes()
        return {node: {pid for pid in self.pids(node, procs) if running.match(procs[pid][1])} for node in self.dirs}

    def kill(self, node: str) -> list[int]:
        """SIGKILL every process of ``node`` (a machine that dies); returns their pids."""
        pids = self.pids(node)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def kill_worker_node(self) -> list[int]:
        return self.kill("worker")

    def stop(self) -> None:
        for node in ("worker", "head"):
            self.kill(node)

    def alive_nodes(self) -> list[str]:
        """Ids of the nodes ``ray status`` lists as active."""
        proc = subprocess.run([RAY, "status", f"--address={self.address}"], env=self.env, capture_output=True,
                              text=True, timeout=120)
        active = proc.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0] if proc.returncode == 0 else ""
        return re.findall(r"node_([0-9a-f]{20,})", active)
