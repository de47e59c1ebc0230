"""Claiming a run directory: a setup killed before run.json is set up again on the rerun (found by
bench/faults.py: the kill landed while tasks.parquet was being written), and a folder holding
anything else is still refused."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from engine.spec import GenerationSpec
from manifests import RunDir, RunError
from pipelines.identity import claim_run
from tests.conftest import CONFIGS

TASKS = GenerationSpec.load(CONFIGS / "tiny.yaml").expand()[:3]


def claim(path):
    run = RunDir(path)
    claim_run(run, TASKS, {"spec_hash": "h"}, check=lambda info: None)
    return run


@pytest.mark.parametrize("left", [
    [".lock", ".tasks.parquet.sxjqj2fw.tmp"],    # killed while tasks.parquet was being written
    [".lock", "tasks.parquet", ".run.json.a1b2c3.tmp"],  # ... or run.json
    [".lock"],
])
def test_a_setup_killed_before_run_json_is_set_up_again(tmp_path, left):
    path = tmp_path / "run"
    path.mkdir()
    for name in left:
        (path / name).write_bytes(b"")
    run = claim(path)
    assert run.exists() and run.info()["spec_hash"] == "h"
    assert not [p.name for p in path.iterdir() if p.name.endswith(".tmp")]
    assert pq.read_table(run.tasks).num_rows == len(TASKS)


@pytest.mark.parametrize("foreign", ["notes.txt", ".other.tmp", "manifest.parquet"])
def test_a_folder_with_anything_else_is_refused_and_left_alone(tmp_path, foreign):
    path = tmp_path / "run"
    path.mkdir()
    (path / ".tasks.parquet.x.tmp").write_bytes(b"")
    (path / foreign).write_bytes(b"keep")
    with pytest.raises(RunError, match="is not a stepforge run"):
        claim(path)
    assert (path / foreign).read_bytes() == b"keep" and (path / ".tasks.parquet.x.tmp").exists()
