"""A distill killed before its first checkpoint starts over: its rerun logs each step once (found
by bench/faults.py, whose kill after step 1 was logged left ``[1, 1, 2, ...]`` in metrics.jsonl)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import CONFIGS, stepforge

pytestmark = pytest.mark.slow

ARGS = ["--steps", 2, "--config", CONFIGS / "distill_tiny.yaml", "--set", "student.overrides={num_hidden_layers: 2}",
        "--set", "data.max_tokens=2048", "--set", "data.heldout=2", "--set", "train.log_every=1",
        "--set", "train.save_every=2", "--set", "train.eval_every=2", "--set", "train.warmup_steps=1", "--no-eval"]


def test_a_rerun_without_a_checkpoint_logs_each_step_once(filtered_run, tmp_path):
    out = tmp_path / "student"
    # What a kill after step 1's log line and before step 2's checkpoint leaves behind.
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 99.0}) + "\n")
    (out / "checkpoints" / "best-0000001").mkdir(parents=True)
    proc = stepforge("distill", filtered_run, "--out", out, *ARGS, check=True)
    assert "resumed from" not in proc.stdout
    logged = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m] == [1, 2]
    assert all(m.get("loss") != 99.0 for m in logged)
    assert not (out / "checkpoints" / "best-0000001").exists()  # not the best of this run
