"""Scale in small: the driver streams its input. tasks.parquet is read in bounded batches, the
work plan decides per batch without materialising the tasks, and the actor pool takes only a few
batches per worker ahead of its results (the full-scale figures: ``python -m bench.scale``)."""
from __future__ import annotations

import sys
import tracemalloc

import pytest

from engine.spec import read_tasks, task_batches, write_tasks
from manifests import RunDir
from manifests.record import Task
from manifests.stage import Stage
from pipelines.actor_pool import map_stages
from pipelines.synthesize import next_work


def _tasks(n: int) -> list[Task]:
    return [Task(id=f"{i:016x}", text=f"Sentence number {i} of the scale test.", lang="en", seed=i) for i in range(n)]


def test_task_batches_are_bounded_and_honour_the_limit(tmp_path):
    path = write_tasks(_tasks(2500), tmp_path / "tasks.parquet")
    assert [t.num_rows for t in task_batches(path, rows=1000)] == [1000, 1000, 500]
    assert [t.num_rows for t in task_batches(path, rows=1000, limit=1500)] == [1000, 500]
    assert next(task_batches(path, rows=7, columns=["id"])).column_names == ["id"]


def test_next_work_streams_tasks_parquet_in_far_less_memory_than_the_tasks(tmp_path):
    run = RunDir(tmp_path / "run")
    write_tasks(_tasks(20000), run.tasks)
    tracemalloc.start()
    try:
        plan = next_work(run, None, limit=19999)
        seen = sum(1 for _ in plan)
        _, streamed = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        everything = read_tasks(run.tasks)
        _, materialised = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == len(plan) == 19999 and len(everything) == 20000
    assert streamed < materialised / 4, (streamed, materialised)


class Echo(Stage):
    def process(self, records):
        return [{**r, "seen": True} for r in records]


def echo() -> list[Stage]:
    return [Echo()]


@pytest.fixture(autouse=True)
def by_value():
    """Ray workers unpickle this test module's stage by value (tests/ is not a package)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_actor_pool_takes_a_bounded_window_of_its_input():
    taken, ahead = 0, []

    def records():
        nonlocal taken
        for i in range(200):
            taken += 1
            yield {"id": f"r{i}"}

    delivered = 0
    for batch in map_stages(records(), echo, {}, {"num_cpus": 1}, batch_size=4, workers=1, in_flight=2):
        delivered += len(batch)
        ahead.append(taken - delivered)
        assert all(r["seen"] for r in batch)
    assert delivered == 200
    assert max(ahead) <= 2 * 4  # the batches queued on the worker, never the whole input
