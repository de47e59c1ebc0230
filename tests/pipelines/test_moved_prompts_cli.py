"""A run whose tasks name a built-in speaker prompt by the absolute path of a checkout that is gone
(as runs made before prompts were stored by name do) still filters: the prompt resolves to the
packaged one. A user's prompt that is gone still fails, with its path."""
from __future__ import annotations

import pyarrow.parquet as pq

from engine.speakers import BUILTIN_SPEAKERS
from manifests import RunDir
from manifests.schema import MANIFEST_SCHEMA
from tests.conftest import copy_run, stepforge

GONE_BUILTIN = "/tmp/base/engine/data/speakers/amy.wav"
GONE_USER = "/tmp/base/voices/amy.wav"


def rewrite_prompts(run: RunDir, paths: dict[str, str]) -> None:
    """Make the rows ``paths`` names clone rows of speaker amy with the given speaker_wav, in the
    journals and tasks.parquet, and drop their verdicts (so that filter scores them again)."""
    text = (BUILTIN_SPEAKERS / "amy.txt").read_text(encoding="utf-8").strip()

    def clone(row: dict) -> dict:
        return {**row, "speaker": "amy", "speaker_wav": paths[row["id"]], "speaker_text": text} if row["id"] in paths \
            else row

    for part in run.journal.glob("shard-*.parquet"):
        rows = [clone(r) for r in pq.read_table(part, schema=MANIFEST_SCHEMA).to_pylist()]
        pq.write_table(pq.read_table(part, schema=MANIFEST_SCHEMA).from_pylist(rows, MANIFEST_SCHEMA), part)
    tasks = pq.read_table(run.tasks)
    pq.write_table(tasks.from_pylist([clone(r) for r in tasks.to_pylist()], tasks.schema), run.tasks)
    kept = [v for v in run.verdict_table().to_pylist() if v["id"] not in paths]
    run.clear_verdicts()
    run.commit_verdicts(kept)


def test_filter_reads_a_builtin_prompt_stored_under_a_gone_checkout(filtered_run, tmp_path):
    run = RunDir(copy_run(filtered_run, tmp_path / "run"))
    english = [r["id"] for r in run.read_manifest().to_pylist() if r["lang"] == "en" and r["status"] == "ok"]
    moved, lost = english[:2]
    rewrite_prompts(run, {moved: GONE_BUILTIN, lost: GONE_USER})
    proc = stepforge("filter", run.path, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["id"]: r for r in run.read_manifest().to_pylist()}
    assert "scored 2 rows" in proc.stdout
    assert rows[moved]["ss_ref"] == "prompt" and rows[moved]["ss"] is not None, rows[moved]
    assert "unreadable" not in (rows[moved]["reject_reason"] or "")
    assert rows[lost]["accepted"] is False and f"unreadable speaker prompt {GONE_USER}" in rows[lost]["reject_reason"]
    assert rows[moved]["speaker_wav"] == GONE_BUILTIN  # the run is read as it is, not rewritten
