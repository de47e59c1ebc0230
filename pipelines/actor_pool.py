"""Map batches of rows over a pool of stateful workers with Ray Data.

Stages (teachers, filters) are plain classes: ``Worker(**kwargs)(batch) -> batch`` where a batch
is a dict of equal-length columns. This module is the only place that knows about Ray: it starts
(or joins) a cluster, sizes the actor pool from the resources the stage declares, and streams the
result batches back to the driver, which commits them.
"""
from __future__ import annotations

import logging
import os
from typing import Iterator

import numpy as np


def batch_rows(batch: dict) -> list[dict]:
    """A Ray numpy batch (dict of columns) -> rows of plain Python values (numpy scalars unwrapped,
    so rows serialise as JSON)."""
    keys = list(batch)
    n = len(batch[keys[0]]) if keys else 0
    return [{k: _plain(batch[k][i]) for k in keys} for i in range(n)]


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def init_ray(address: str | None = None) -> None:
    """Join ``address`` (a Ray cluster) or start a quiet local instance once per process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray's C++ core logs a warning for every actor pool whose constructor arguments sit in the
    # object store; errors still reach the driver as exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count(), **kwargs)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one bar over the whole job
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def pool_size(resources: dict, requested: int | None = None) -> int:
    """How many workers fit: ``requested`` if given, else all CPUs (or GPUs) / per-worker need."""
    if requested:
        return requested
    import ray

    total = ray.cluster_resources()
    if resources.get("num_gpus"):
        return max(1, int(total.get("GPU", 0) // resources["num_gpus"]))
    return max(1, int(total.get("CPU", 1) // max(resources.get("num_cpus", 1), 1e-3)))


def map_pool(rows: list[dict], worker_cls, worker_kwargs: dict, resources: dict,
             batch_size: int, workers: int | None = None, address: str | None = None) -> Iterator[dict]:
    """Run ``worker_cls(**worker_kwargs)`` over ``rows`` in batches on an actor pool.

    Args:
        rows: input records (dicts of plain values).
        resources: per-worker ``{"num_cpus": float, "num_gpus": float}``.
        batch_size: rows per call.
        workers: actor pool size; default fills the cluster.
    Yields:
        Result batches (dict of numpy columns) in completion order.
    """
    import ray

    init_ray(address)
    size = pool_size(resources, workers)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch_size)))
    ds = ds.map_batches(
        worker_cls,
        fn_constructor_kwargs=worker_kwargs,
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=min(size, max(1, -(-len(rows) // batch_size)))),
        num_cpus=resources.get("num_cpus", 1),
        num_gpus=resources.get("num_gpus", 0),
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
