"""`stepforge verify RUN`: a healthy run passes; a damaged one is reported finding by finding, and
--repair removes only what a rerun regenerates."""
from __future__ import annotations

import json
import shutil

import pytest

from manifests import RunDir
from tests.conftest import copy_run, stepforge
from tests.pipelines.test_filter_cli import _corrupt_flac


def in_process(capsys, *args) -> tuple[int, str]:
    from pipelines.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().out


def test_a_healthy_filtered_run_verifies(filtered_run):
    proc = stepforge("verify", filtered_run)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(")") and ": ok (" in proc.stdout
    report = json.loads(stepforge("verify", filtered_run, "--json").stdout)
    rows = RunDir(filtered_run).read_manifest().num_rows
    assert report["ok"] and report["counts"]["rows"] == rows == report["counts"]["decoded"] == 12
    assert report["counts"]["verdicts"] == 12 and report["findings"] == []


@pytest.fixture
def damaged(synthesized_run, tmp_path):
    run = RunDir(copy_run(synthesized_run[0], tmp_path / "run"))
    rows = run.read_manifest().to_pylist()
    second = sorted({r["shard"] for r in rows})[1]
    mover = min((r for r in rows if r["shard"] == second), key=lambda r: r["offset"])
    _corrupt_flac(run, mover["id"], keep_size=False)  # the samples after it move
    shutil.copy(run.shards / "shard-000002.tar", run.shards / "shard-000007.tar")  # no fragment
    (run.shards / ".shard-000008.tar.x.tmp").write_bytes(b"half")
    shutil.copy(run.journal / "shard-000000.parquet", run.journal / "shard-000009.parquet")
    shutil.copy(run.shards / "shard-000000.tar", run.shards / "shard-000009.tar")  # committed twice
    run.manifest.write_bytes(b"not parquet")
    return run, rows, mover


def test_a_damaged_run_is_reported_and_repair_keeps_committed_data(damaged, capsys):
    run, rows, mover = damaged
    proc = stepforge("verify", run.path)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout
    moved = [r for r in rows if r["shard"] == mover["shard"] and r["offset"] > mover["offset"]]
    assert moved
    for r in moved:
        assert f"{r['shard']}:{r['id']}: shard unreadable at offset {r['offset']}" in out
    assert f"{mover['shard']}:{mover['id']}: sample does not decode" in out
    assert "shards/shard-000007.tar: shard without its journal fragment" in out
    assert "shards/.shard-000008.tar.x.tmp: temporary file" in out
    assert "manifest.parquet: differs from the journals" in out
    first = [r for r in rows if r["shard"] == "shards/shard-000000.tar"]
    assert f"{first[0]['id']}: attempt 0 committed 2 times" in out

    committed = {p: p.read_bytes() for d in (run.shards, run.journal) for p in d.iterdir()
                 if p.name not in ("shard-000007.tar", ".shard-000008.tar.x.tmp")}
    code, out = in_process(capsys, "verify", run.path, "--repair")
    assert code == 1
    assert "repaired: removed shard-000007.tar" in out and "repaired: rebuilt manifest.parquet" in out
    assert "shard-000007" not in out.split("finding(s)")[1] and ".tmp" not in out.split("finding(s)")[1]
    assert "shard unreadable" in out and "committed 2 times" in out  # for a person to decide
    after = {p: p.read_bytes() for d in (run.shards, run.journal) for p in d.iterdir()}
    assert after == committed


def test_not_a_run_is_one_line_and_exit_2(tmp_path):
    proc = stepforge("verify", tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a stepforge run" in proc.stderr


def test_a_manifest_from_before_a_new_column_is_not_stale_but_a_changed_one_is(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.verify import verify_run
    from tests.manifests.test_run import _rows, _samples

    run = RunDir(tmp_path / "run")
    run.write_info({"stages": {}})
    run.commit_shard(0, _samples(["a1", "b2"]), _rows(["a1", "b2"]))
    table = run.consolidate()
    assert table.column("cer").null_count == 2  # never filtered: the column is all null
    pq.write_table(table.drop_columns(["cer"]), run.manifest)  # as written before "cer" existed
    assert not [f for f in verify_run(run).findings if f.where == "manifest.parquet"]
    pq.write_table(table.drop_columns(["cer"]).slice(0, 1), run.manifest)  # a row short
    assert [f for f in verify_run(run).findings if f.where == "manifest.parquet"]
