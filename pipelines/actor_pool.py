"""Run lists of stages over records on a pool of Ray actors.

Stages (teachers, codecs, filters: :class:`manifests.stage.Stage`) know nothing of Ray. This module
is the only place that does: it starts (or joins) a cluster, sizes an actor pool from the resources
the stages declare, runs one generic :class:`StageWorker` per actor, feeds it batches from an
iterable of records (a few batches per actor ahead, so a generator over a Parquet file streams
through without the driver ever holding the whole input), and streams the result records back to
the driver, which commits them.

    for records in map_stages(rows, build, {"teacher": "reference"}, {"num_cpus": 1}, batch_size=4):
        ...   # lists of dict records, with the stages' columns added

``build(**kwargs)`` runs inside each actor and returns its stages (so models load there, once).
Records travel pickled, one bytes object each, so whatever a stage adds (None scores,
variable-length arrays) arrives as it was.

A worker process that dies mid-batch (a segfault, the OOM killer, ``os._exit`` in a native
library) is restarted by Ray, which sends the batch again. A worker lost with its node (on a
cluster) is not waited for: Ray would restart it only where a CPU is free, which on a busy cluster
is never, so the driver drops it and sends its batches to the workers left (``WATCH_S``). With
``on_death``, a batch that has killed a worker before runs one record at a time, and a record
that killed its worker ``death_retries`` times on its own becomes ``on_death(record, "worker
died: ...")`` instead of killing workers forever; the other records still come back. For tests,
``STEPFORGE_FAULT=exit:ID,exit-once:ID`` makes a guarded worker exit at once on a record whose
``id`` is ID (``exit-once``: only on the batch's first try).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import pickle
import sys
import tempfile
import traceback
from typing import Callable, Iterable, Iterator

import numpy as np

from manifests.errors import UserError
from manifests.stage import run_stages

RECORD = "record"
IN_FLIGHT = 2
WATCH_S = 5.0  # while no batch returns, the driver looks this often for workers lost with their node
FAULT_ENV = "STEPFORGE_FAULT"


class StageFailed(RuntimeError):
    """A stage raised inside a Ray worker; the message carries the worker's traceback and logs."""


class StageWorker:
    """One Ray actor: ``build(**kwargs)`` makes its stages, each set up once, then every batch
    passes through all of them in order."""

    def __init__(self, build: Callable[..., list], kwargs: dict, guard: "DeathGuard | None" = None):
        self.stages = build(**kwargs)
        self.guard = guard
        for stage in self.stages:
            stage.setup()

    def __call__(self, batch: dict) -> dict:
        records = [pickle.loads(b) for b in batch[RECORD]]
        if self.guard is None:
            records = run_stages(self.stages, records)
        else:
            records = self.guard.run(records, lambda rs: run_stages(self.stages, rs))
        return {RECORD: np.array([pickle.dumps(r) for r in records], dtype=object)}

    def node(self) -> str:
        """The id of the Ray node this worker runs on."""
        import ray

        return ray.get_runtime_context().get_node_id()


HEAD_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node


def _ledger_place() -> dict:
    """Where the death ledger runs: on the head node, whose loss ends the cluster anyway, so a
    worker node that dies cannot take the ledger with it. (Not "beside the driver": a driver on a
    machine with two raylets, or one started on a worker node, is attached to a worker node.)
    Without the head marker (other Ray versions), beside the driver. The ledger is also restarted
    if it is lost all the same; it then starts counting afresh."""
    import ray

    if HEAD_RESOURCE in ray.cluster_resources():
        return {"resources": {HEAD_RESOURCE: 0.001}}
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)}


class DeathLedger:
    """Counts, per batch or record key, the tries that began and never ended: each one is a
    worker that died on it. Runs as one small Ray actor beside the pool."""

    def __init__(self):
        self.open: dict[str, int] = {}

    def begin(self, key: str) -> int:
        """Deaths so far on ``key``; this try is counted until :meth:`end`."""
        deaths = self.open.get(key, 0)
        self.open[key] = deaths + 1
        return deaths

    def end(self, key: str) -> None:
        self.open.pop(key, None)


class DeathGuard:
    """What a worker does so that records that kill it cannot stall a job (module docstring)."""

    def __init__(self, ledger, on_death: Callable[[dict, str], dict], death_retries: int = 2):
        self.ledger, self.on_death, self.death_retries = ledger, on_death, death_retries
        self.faults = _faults(os.environ.get(FAULT_ENV, ""))

    def run(self, records: list[dict], process: Callable[[list[dict]], list[dict]]) -> list[dict]:
        import ray

        key = batch_key(records)
        if ray.get(self.ledger.begin.remote(key)) == 0:
            self._inject(records, first=True)
            out = process(records)
        else:  # this batch killed a worker: find the record that did
            out = [r for record in records for r in self._alone(record, process)]
        ray.get(self.ledger.end.remote(key))
        return out

    def _alone(self, record: dict, process) -> list[dict]:
        import ray

        key = "record:" + _key([record])  # not the key of a batch of this one record
        deaths = ray.get(self.ledger.begin.remote(key))
        if deaths >= self.death_retries:
            out = [self.on_death(record, f"worker died: the worker process exited on this record "
                                         f"{deaths + 1} times (once with its batch)")]
        else:
            self._inject([record], first=False)
            out = process([record])
        ray.get(self.ledger.end.remote(key))
        return out

    def _inject(self, records: list[dict], first: bool) -> None:
        for record in records:
            mode = self.faults.get(str(record.get("id")))
            if mode == "exit" or (mode == "exit-once" and first):
                os._exit(70)


def _faults(spec: str) -> dict[str, str]:
    """``"exit:t1,exit-once:t2"`` -> ``{"t1": "exit", "t2": "exit-once"}``."""
    out = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        mode, _, rid = item.partition(":")
        if mode not in ("exit", "exit-once") or not rid:
            raise UserError(f"{FAULT_ENV}: bad item {item!r}; expected exit:ID or exit-once:ID")
        out[rid] = mode
    return out


def batch_key(records: list[dict]) -> str:
    """The death ledger's key of a batch."""
    return "batch:" + _key(records)


def _key(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(pickle.dumps(r))
    return h.hexdigest()


def init_ray(address: str | None = None) -> None:
    """Join ``address`` (a Ray cluster) or start a quiet local instance once per process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's C++ core warns for every actor whose constructor arguments sit in the object store;
    # errors still reach the driver as exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    # Worker output stays in the worker logs (a failure is reported with its traceback and the
    # log folder, see StageFailed); the driver's terminal keeps one progress bar.
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=True)
    with _without_stderr_line("Set ray log level from environment variable"):
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), **kwargs)


@contextlib.contextmanager
def _without_stderr_line(marker: str):
    """Pass everything written to file descriptor 2 inside the block through, except lines
    containing ``marker`` (the C++ core announces the log level it read from the environment)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            kept = [line for line in buf.read().decode(errors="replace").splitlines(True) if marker not in line]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def pool_size(resources: dict, requested: int | None = None) -> int:
    """How many workers fit: ``requested`` if given, else all CPUs (or GPUs) / per-worker need."""
    if requested:
        return requested
    import ray

    total = ray.cluster_resources()
    if resources.get("num_gpus"):
        return max(1, int(total.get("GPU", 0) // resources["num_gpus"]))
    return max(1, int(total.get("CPU", 1) // max(resources.get("num_cpus", 1), 1e-3)))


def map_stages(records: Iterable[dict], build: Callable[..., list], kwargs: dict, resources: dict,
               batch_size: int, workers: int | None = None, address: str | None = None,
               on_death: Callable[[dict, str], dict] | None = None, death_retries: int = 2,
               in_flight: int = IN_FLIGHT) -> Iterator[list[dict]]:
    """Run the stages ``build(**kwargs)`` makes over ``records`` in batches on an actor pool.

    ``records`` is consumed lazily: at most ``in_flight`` batches per worker are taken from it
    ahead of the results, so the driver never holds the whole input (a generator over a Parquet
    file streams through in bounded memory).

    Args:
        records: input records (dicts; any picklable values), a list or any iterable.
        build: a module-level function returning the list of stages (called in each actor).
        resources: per-worker ``{"num_cpus": float, "num_gpus": float}``.
        batch_size: records per call.
        workers: actor pool size; default fills the cluster (never more than the batches).
        on_death: ``(record, reason) -> record`` in the form the stages return, for a record
            that killed its worker ``death_retries`` times on its own (module docstring);
            None: Ray retries a batch that kills its worker without bound.
        in_flight: batches queued on each worker (2: it never waits for the driver).
    Yields:
        Lists of result records, in completion order.
    Raises:
        UserError: a stage reported bad input (e.g. a model that cannot be loaded).
        StageFailed: any other exception inside a worker, with its traceback.
    """
    import ray

    init_ray(address)
    batches = _batches(records, batch_size)
    size = pool_size(resources, workers)
    first = list(itertools.islice(batches, size))  # a pool no larger than the work
    if not first:
        return
    guard = None
    if on_death is not None:
        _faults(os.environ.get(FAULT_ENV, ""))  # a bad value fails here, in one line
        ledger = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(DeathLedger).options(
            **_ledger_place()).remote()
        guard = DeathGuard(ledger, on_death, death_retries)
    # a worker process that dies is restarted by Ray, which sends the batches it held again
    actor = ray.remote(StageWorker).options(num_cpus=resources.get("num_cpus", 1),
                                            num_gpus=resources.get("num_gpus", 0),
                                            max_restarts=-1, max_task_retries=-1)
    pool = [actor.remote(build, kwargs, guard) for _ in range(len(first))]
    nodes = {worker: worker.node.remote() for worker in pool}  # answered once the worker is up
    todo = itertools.chain(first, batches)
    retry: list = []  # batches of workers lost with their node: sent again first
    running: dict = {}  # result ref -> (the worker computing it, its batch)

    def submit(worker) -> bool:
        batch = retry.pop() if retry else next(todo, None)
        if batch is not None:
            running[worker.__call__.remote({RECORD: [pickle.dumps(r) for r in batch]})] = (worker, batch)
        return batch is not None

    def top_up() -> None:
        for worker in pool:
            while sum(w is worker for w, _ in running.values()) < in_flight and submit(worker):
                pass

    try:
        top_up()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WATCH_S)
            if not ready:
                lost = _lost_with_their_node(nodes)
                for ref, (worker, batch) in list(running.items()):
                    if worker in lost:
                        ray.cancel(ref)
                        del running[ref]
                        retry.append(batch)
                        if guard is not None:  # the node died, not a record: no death to count
                            guard.ledger.end.remote(batch_key(batch))
                if lost:
                    print(f"stepforge: {len(lost)} worker(s) lost with their node; their batches go to the "
                          f"{len(pool) - len(lost) or 'one new'} left", file=sys.stderr, flush=True)
                for worker in lost:
                    ray.kill(worker, no_restart=True)
                    pool.remove(worker)
                    del nodes[worker]
                if lost and not pool:  # a new worker, wherever the cluster has room for it
                    pool.append(actor.remote(build, kwargs, guard))
                    nodes[pool[-1]] = pool[-1].node.remote()
                top_up()
                continue
            out = ray.get(ready[0])
            submit(running.pop(ready[0])[0])
            yield [pickle.loads(b) for b in out[RECORD]]
    except Exception as exc:  # Ray wraps what a worker raised; unwrap it for the user
        raise worker_failure(exc) from None
    finally:
        for ref in running:  # cancelled first, so that killing their worker does not retry them
            ray.cancel(ref)
        for worker in pool:
            ray.kill(worker)


def _lost_with_their_node(nodes: dict) -> set:
    """The workers among ``nodes`` (worker -> ref of its node id) whose node Ray marks dead."""
    import ray

    dead = {n["NodeID"] for n in ray.nodes() if not n.get("Alive", True)}
    if not dead:
        return set()
    known = ray.wait(list(nodes.values()), num_returns=len(nodes), timeout=0)[0]
    lost = set()
    for worker, ref in nodes.items():
        if ref in known:
            try:
                if ray.get(ref) in dead:
                    lost.add(worker)
            except ray.exceptions.RayError:  # it never answered: it died before it started
                lost.add(worker)
    return lost


def _batches(records: Iterable[dict], size: int) -> Iterator[list[dict]]:
    it = iter(records)
    while batch := list(itertools.islice(it, size)):
        yield batch


def worker_failure(exc: BaseException) -> Exception:
    """What to raise in the driver for ``exc`` from Ray: a UserError a stage raised, as it is
    (also when it killed the actor's constructor, where Ray keeps only its traceback text), else a
    StageFailed carrying the worker's traceback and the folder of the worker logs."""
    from ray.exceptions import RayError

    chain = _chain(exc)
    for e in chain:
        # Ray's RayTaskError subclasses the error it wraps; the message is the wrapped one's
        found = e if isinstance(e, UserError) and not isinstance(e, RayError) else _user_error_in(getattr(e, "error_msg", None) or str(e))
        if found is not None:
            return found
    detail = "\n".join(_describe(e) for e in chain).strip()
    return StageFailed(f"a stage failed inside a Ray worker\n--- worker traceback ---\n{detail}\n"
                       f"--- worker logs: {ray_logs_dir()} ---")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps (Ray's ``cause``, ``__cause__``, ``__context__``)."""
    out, todo = [], [exc]
    while todo:
        e = todo.pop(0)
        if isinstance(e, BaseException) and all(e is not seen for seen in out):
            out.append(e)
            todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return out


def _user_error_in(text) -> UserError | None:
    """The first UserError a remote traceback shows (a line ``pkg.module.SomeError: message``)."""
    for line in (text or "").splitlines() if isinstance(text, str) else ():
        name, sep, message = line.strip().partition(": ")
        module, _, cls_name = name.rpartition(".")
        cls = getattr(sys.modules.get(module), cls_name, None) if sep and module else None
        if isinstance(cls, type) and issubclass(cls, UserError):
            return cls(message)
    return None


def _describe(e: BaseException) -> str:
    if getattr(e, "error_msg", None):
        return e.error_msg
    if e.__traceback__ is not None and not type(e).__module__.startswith("ray."):
        return "".join(traceback.format_exception(e)).rstrip()
    return str(e) or repr(e)


def ray_logs_dir() -> str:
    """The log folder of the current Ray session (worker stdout/stderr live there)."""
    import ray

    try:
        node = ray._private.worker.global_worker.node  # no public API names the session folder
        return os.path.join(node.get_session_dir_path(), "logs")
    except AttributeError:
        return "/tmp/ray/session_latest/logs"
