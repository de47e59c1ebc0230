"""The streaming manifest merge: manifest.parquet is written a row group at a time from the
journal fragments, each row with its last verdict, and equals the journals' current table; verdict
parts keep their order when two RunDir objects append to one run."""
from __future__ import annotations

import pyarrow.parquet as pq

import manifests.run
from filters.summary import YieldTally, yield_summary
from manifests import RunDir
from manifests.merge import KeySet, VerdictIndex, row_keys


def _rows(ids, attempt=0):
    return [{"id": i, "text": f"text {i}", "lang": "en", "dialect": "english", "status": "ok", "error": "",
             "attempt": attempt, "speaker": ""} for i in ids]


def _verdict(i, accepted, reason="", attempt=0):
    return {"id": i, "attempt": attempt, "accepted": accepted, "reject_reason": reason, "cer": 0.1,
            "quality_flags": [], "filter_hash": "h"}


def _run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.commit_shard(0, [], _rows(["a", "b", "c"]))
    run.commit_shard(1, [], _rows(["d", "e"]) + _rows(["a"], attempt=1))
    run.commit_shard(2, [], _rows(["f"]))
    run.commit_verdicts([_verdict("a", False, "first"), _verdict("b", True), _verdict("a", True, attempt=1)])
    run.commit_verdicts([_verdict("a", False, "second"), _verdict("d", True)])  # a's attempt 0 again
    return run


def test_merge_streams_row_groups_and_equals_the_current_table(tmp_path, monkeypatch):
    monkeypatch.setattr(manifests.run, "ROW_GROUP", 3)
    run = _run(tmp_path)
    seen = []
    assert run.merge_manifest(lambda t: seen.append(t.num_rows)) == 7
    assert seen == [3, 3, 1]  # one fragment past ROW_GROUP at a time, never the whole manifest
    assert pq.ParquetFile(run.manifest).metadata.num_row_groups == 3
    merged = run.consolidate()
    assert merged.equals(run.current_table())
    assert run.read_manifest().num_rows == 7
    verdicts = {(r["id"], r["attempt"]): (r["accepted"], r["reject_reason"]) for r in merged.to_pylist()}
    assert verdicts[("a", 0)] == (False, "second")  # the last verdict of an attempt wins
    assert verdicts[("a", 1)] == (True, "") and verdicts[("b", 0)] == (True, "")
    assert verdicts[("c", 0)] == (None, None) and verdicts[("f", 0)] == (None, None)  # not filtered yet


def test_empty_journal_merges_to_an_empty_manifest(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.merge_manifest() == 0
    assert run.read_manifest().num_rows == 0


def test_key_set_and_index_answer_per_row(tmp_path):
    run = _run(tmp_path)
    journal = run.journal_table()
    keys = KeySet(row_keys(run.verdict_table()))
    assert len(keys) == 4
    assert keys.contains(journal).tolist() == [True, True, False, True, False, True, False]
    assert len(VerdictIndex(run.verdict_table())) == 4
    assert len(KeySet(row_keys(journal.slice(0, 0)))) == 0


def test_verdict_parts_of_two_run_objects_never_overwrite_each_other(tmp_path):
    first, second = RunDir(tmp_path / "run"), RunDir(tmp_path / "run")
    first.commit_verdicts([_verdict("a", True)])
    second.commit_verdicts([_verdict("a", False, "later")])
    first.commit_verdicts([_verdict("b", True)])
    assert sorted(p.name for p in first.filter_journal.iterdir()) == [f"part-00000{i}.parquet" for i in range(3)]
    assert first.verdict_table().column("id").to_pylist() == ["a", "a", "b"]
    assert first.clear_verdicts() == 3
    first.commit_verdicts([_verdict("c", True)])
    assert [p.name for p in first.filter_journal.iterdir()] == ["part-000000.parquet"]


def test_yield_tally_over_row_groups_equals_the_whole_table(tmp_path, monkeypatch):
    monkeypatch.setattr(manifests.run, "ROW_GROUP", 2)
    run = _run(tmp_path)
    tally = YieldTally()
    run.merge_manifest(tally.add)
    whole = yield_summary(run.read_manifest())
    assert tally.summary() == whole
    assert whole["all"]["all"] == {"attempted": 4, "accepted": 3, "yield": 0.75, "mean_cer": 0.1, "mean_ss": None,
                                   "unscored_cer": 0}
