import webdataset as wds

from manifests import RunDir, RunError, ShardReadError, read_sample
from manifests.atomic import atomic_path
import pytest


def _rows(ids):
    return [{"id": i, "text": f"text {i}", "lang": "en", "status": "ok", "error": "", "attempt": 0} for i in ids]


def _samples(ids):
    return [(i, {"json": f'{{"id": "{i}"}}'.encode(), "flac": bytes([len(i)]) * 100}) for i in ids]


def test_commit_then_read_by_offset_and_with_webdataset(tmp_path):
    run = RunDir(tmp_path / "run")
    run.commit_shard(0, _samples(["a1", "b2"]), rows := _rows(["a1", "b2"]))
    assert [r["shard"] for r in rows] == ["shards/shard-000000.tar"] * 2
    assert read_sample(run.path / rows[1]["shard"], rows[1]["offset"])["json"] == b'{"id": "b2"}'
    keys = [s["__key__"] for s in wds.WebDataset(str(run.shards / "shard-000000.tar"), shardshuffle=False)]
    assert keys == ["a1", "b2"]
    assert run.consolidate().column("id").to_pylist() == ["a1", "b2"]


def test_recover_removes_uncommitted_shards_and_temporaries(tmp_path):
    run = RunDir(tmp_path / "run")
    run.commit_shard(0, _samples(["a"]), _rows(["a"]))
    (run.shards / "shard-000001.tar").write_bytes(b"half a shard")  # crash before its fragment
    (run.shards / ".shard-000002.tar.abc.tmp").write_bytes(b"x")
    assert run.recover() == ["shard-000001.tar"]
    assert sorted(p.name for p in run.shards.iterdir()) == ["shard-000000.tar"]
    assert run.next_shard_index() == 1


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half written")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_second_writer_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunError, match="in use"):
            with RunDir(tmp_path / "run").lock():
                pass


def test_info_errors_are_one_line(tmp_path):
    with pytest.raises(RunError, match="not a stepforge run"):
        RunDir(tmp_path).info()


def test_read_sample_refuses_an_offset_that_no_longer_holds_its_sample(tmp_path):
    run = RunDir(tmp_path / "run")
    run.commit_shard(0, _samples(["a1", "b2", "c3"]), rows := _rows(["a1", "b2", "c3"]))
    shard = run.path / rows[1]["shard"]
    assert read_sample(shard, rows[1]["offset"], key="b2", first="json")["flac"] == bytes([2]) * 100
    with pytest.raises(ShardReadError, match=f"^shard unreadable at offset {rows[2]['offset'] - 1024}: found sample 'b2'"):
        read_sample(shard, rows[2]["offset"] - 1024, key="c3")  # b2.flac's header: the samples moved
    with pytest.raises(ShardReadError, match="found 'b2.flac' where a sample's 'json' member"):
        read_sample(shard, rows[2]["offset"] - 1024, first="json")
    with pytest.raises(ShardReadError, match=f"^shard unreadable at offset {rows[1]['offset'] + 100}: "):
        read_sample(shard, rows[1]["offset"] + 100)  # not a header
