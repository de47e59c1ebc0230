"""The generic stage worker: stages run in process and on a Ray actor pool, records keep their
values, and a failure inside a worker reaches the driver (bad input as its one line, a bug with
the worker's traceback)."""
from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from manifests.errors import UserError
from manifests.stage import Stage, combined_resources, run_stages
from pipelines.actor_pool import FAULT_ENV, RECORD, StageFailed, StageWorker, map_stages


class AddLength(Stage):
    name = "length"

    def __init__(self):
        self.ready = False

    def setup(self) -> None:
        self.ready = True

    def process(self, records):
        assert self.ready, "setup runs before the first batch"
        return [{**r, "n": len(r["text"]), "none": None, "wave": np.arange(len(r["text"]), dtype=np.float32)}
                for r in records]


class Upper(Stage):
    name = "upper"
    resources = {"num_cpus": 0.5, "num_gpus": 0}

    def process(self, records):
        return [{**r, "upper": r["text"].upper()} for r in records]


class NeedsModel(Stage):
    def setup(self) -> None:
        raise UserError("models/asr: no such model directory (pass --asr DIR)")

    def process(self, records):
        return records


class RejectsInput(Stage):
    def process(self, records):
        raise UserError("speakers/x.wav: 8000 Hz prompt; need 16000 Hz or more")


class Buggy(Stage):
    def process(self, records):
        return [self.score(r) for r in records]

    def score(self, record):
        return {**record, "x": record["missing_column"]}


def two_stages() -> list[Stage]:
    return [AddLength(), Upper()]


def failing(kind: str) -> list[Stage]:
    return [{"setup": NeedsModel, "input": RejectsInput, "bug": Buggy}[kind]()]


RECORDS = [{"id": f"t{i}", "text": "ab" * (i + 1)} for i in range(7)]


@pytest.fixture(scope="module", autouse=True)
def by_value():
    """Ray workers unpickle this test module's stages by value (tests/ is not a package)."""
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_stage_worker_runs_every_stage_in_order_in_process():
    worker = StageWorker(two_stages, {})
    out = worker({RECORD: np.array([pickle.dumps(r) for r in RECORDS], dtype=object)})
    got = [pickle.loads(b) for b in out[RECORD]]
    stages = two_stages()
    for stage in stages:
        stage.setup()
    expected = run_stages(stages, RECORDS)
    assert [r["id"] for r in got] == [r["id"] for r in RECORDS]
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]
    assert [r["upper"] for r in got] == [r["text"].upper() for r in RECORDS]
    assert all(r["n"] == len(r["text"]) and r["none"] is None for r in got)


def test_combined_resources_take_the_largest_need():
    assert combined_resources([Upper(), AddLength()]) == {"num_cpus": 1, "num_gpus": 0}
    assert combined_resources([Upper()]) == {"num_cpus": 0.5, "num_gpus": 0}


def test_records_cross_the_actor_pool_with_their_values():
    got = [r for batch in map_stages(RECORDS, two_stages, {}, {"num_cpus": 1}, batch_size=3) for r in batch]
    assert sorted(r["id"] for r in got) == [r["id"] for r in RECORDS]
    for r in got:
        assert r["none"] is None  # not NaN: records are not squeezed into typed columns
        assert r["upper"] == r["text"].upper()
        np.testing.assert_array_equal(r["wave"], np.arange(len(r["text"]), dtype=np.float32))


@pytest.mark.parametrize("kind, message", [
    ("setup", "^models/asr: no such model directory \\(pass --asr DIR\\)$"),
    ("input", "^speakers/x.wav: 8000 Hz prompt; need 16000 Hz or more$"),
])
def test_bad_input_in_a_worker_reaches_the_driver_as_its_one_line(kind, message):
    with pytest.raises(UserError, match=message):
        list(map_stages(RECORDS, failing, {"kind": kind}, {"num_cpus": 1}, batch_size=4, workers=1))


def test_a_bug_in_a_worker_carries_its_traceback_and_log_folder():
    with pytest.raises(StageFailed) as info:
        list(map_stages(RECORDS, failing, {"kind": "bug"}, {"num_cpus": 1}, batch_size=4, workers=1))
    message = str(info.value)
    assert "KeyError: 'missing_column'" in message
    assert "in score" in message  # the worker's frames, not just Ray's
    assert "worker logs: " in message and "logs" in message.rsplit("worker logs: ", 1)[1]


def died(record: dict, reason: str) -> dict:
    return {**record, "died": reason}


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_record_that_killed_its_worker_once_comes_back_scored(batch_size, monkeypatch):
    # the retry of a one-record batch is that record alone: one death, not two
    monkeypatch.setenv(FAULT_ENV, "exit-once:t2,exit:t4")
    got = {r["id"]: r for batch in map_stages(RECORDS, two_stages, {}, {"num_cpus": 1}, batch_size=batch_size,
                                              workers=1, on_death=died) for r in batch}
    assert sorted(got) == [r["id"] for r in RECORDS]
    assert "died" not in got["t2"] and got["t2"]["upper"] == "AB" * 3
    assert got["t4"]["died"].startswith("worker died: ")
    assert all("died" not in r for i, r in got.items() if i != "t4")
