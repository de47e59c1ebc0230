"""One real `stepforge synthesize` (6 tasks, http teacher, Ray actors) through every kind of
fault at once: the teacher's server answers 500 to one task and cuts the body of another on every
try, and ``STEPFORGE_FAULT`` makes the actor process exit on two tasks (once on one, on every try
on the other). The job completes; each task has exactly one row; the failed rows carry their
error kind; the summary and run.json count the errors by kind; ``verify`` passes."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from engine.spec import GenerationSpec
from tests.conftest import CONFIGS, stepforge

pytestmark = pytest.mark.slow


def test_synthesize_survives_teacher_faults_and_dying_actors(tiny_rope_dir, tmp_path, monkeypatch):
    from engine.lm import TorchEngine
    from tests.engine.openai_server import CompletionServer

    tasks = GenerationSpec.load(CONFIGS / "tiny.yaml").expand()[:6]
    once, always, http500, cut = tasks[1], tasks[2], tasks[3], tasks[5]
    monkeypatch.setenv("STEPFORGE_FAULT", f"exit-once:{once.id},exit:{always.id}")
    out = tmp_path / "run"
    with CompletionServer(TorchEngine(tiny_rope_dir, num_threads=1)) as server:
        server.sticky.update({http500.seed: "500", cut.seed: "truncate"})
        teacher = f"http:{server.url}?max_seconds=1&retries=2&backoff=0.001&jitter=0.5"
        proc = stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--teacher", teacher,
                         "--limit", "6", "--batch-size", "2", "--workers", "1", "--shard-size", "2",
                         "--no-progress", check=True)
        tries = [sum(b.get("seed") == t.seed for b in server.requests) for t in (http500, cut)]
    assert tries == [3, 3]  # 1 + retries each
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(t.id for t in tasks)  # no gap, no duplicate
    errors = {r["id"]: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {always.id, http500.id, cut.id}, errors
    assert errors[always.id].startswith("worker died: ")
    assert errors[http500.id].startswith("http 500: ") and errors[cut.id].startswith("truncated stream: ")
    kinds = {"http 500": 1, "truncated stream": 1, "worker died": 1}
    assert "errors by kind: " in proc.stdout and "worker died 1" in proc.stdout
    last = json.loads((out / "run.json").read_text())["stages"]["synthesize"]["last"]
    assert last["errors_by_kind"] == kinds and last["errors"] == 3 and last["tasks"] == 6
    stepforge("verify", out, check=True)
