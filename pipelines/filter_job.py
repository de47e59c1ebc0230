"""The filter job: score every synthesized row of a run and decide keep or (reject, reason).

    stepforge filter RUN [--max-cer 0.2] [--min-ss 0.6] [--config filter.yaml]

Rows go through a pool of ``FilterWorker`` actors, each holding the whole chain (quality checks,
then CER, then speaker similarity: a row rejected early never reaches the expensive models).
The driver journals verdicts in parts and merges them into manifest.parquet; a rerun scores only
rows without a verdict under the same config, and a changed config rescores everything.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from filters.config import FilterConfig
from manifests import RunDir, read_sample
from manifests.schema import FILTER_COLUMNS
from pipelines.actor_pool import batch_rows, map_pool

ROW_FIELDS = ("id", "attempt", "text", "lang", "dialect", "style", "speaker", "speaker_wav", "shard", "offset")
COMMIT_EVERY = 32


def load_sample(run_path: Path, row: dict) -> dict:
    """A manifest row plus its payloads from the shard (bytes; filters decode and check them)."""
    sample = dict(row)
    try:
        members = read_sample(run_path / row["shard"], int(row["offset"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        members = {}
        sample["load_error"] = f"cannot read sample from {row.get('shard')}: {exc}"
    sample["audio"] = members.get("flac")
    sample["tokens"] = members.get("tokens.npy")
    sample["source_audio"] = members.get("src.flac")
    return sample


class FilterWorker:
    """Runs the filter chain over batches of manifest rows (one Ray actor)."""

    def __init__(self, run: str, config: dict):
        self.run_path = Path(run)
        self.config = FilterConfig.from_dict(config)
        self.chain = self.config.build_chain()
        for f in self.chain:
            f.setup()

    def __call__(self, batch: dict) -> dict:
        from filters import reject, run_chain

        rows = [{k: row[k] for k in ROW_FIELDS} for row in batch_rows(batch)]
        samples = [load_sample(self.run_path, r) for r in rows]
        good = [i for i, s in enumerate(samples) if "load_error" not in s]
        verdicts = [reject(s.get("load_error", "")) for s in samples]
        chained = run_chain(self.chain, [samples[i] for i in good], self.config.score_rejected)
        for i, v in zip(good, chained):
            verdicts[i] = v
        # one JSON column: Ray would turn None scores into NaN in typed columns
        out = [json.dumps(verdict_row(r, v, self.config.hash)) for r, v in zip(rows, verdicts)]
        return {"id": np.array([r["id"] for r in rows], dtype=object), "verdict": np.array(out, dtype=object)}


def verdict_row(row: dict, verdict, config_hash: str) -> dict:
    scores = verdict.scores
    out = {"id": row["id"], "attempt": int(row["attempt"]), "accepted": bool(verdict.keep),
           "reject_reason": verdict.reason, "filter_hash": config_hash}
    for name in FILTER_COLUMNS:
        if name not in out:
            out[name] = scores.get(name)
    out["quality_flags"] = list(scores.get("quality_flags") or [])
    return out


def pending_rows(run: RunDir, table, config: FilterConfig) -> tuple[list[dict], list[dict]]:
    """(rows of the synth journal ``table`` to score, verdicts decided without scoring: teacher
    errors)."""
    verdicts = run.verdict_table()
    done = {(i, a) for i, a, h in zip(verdicts.column("id").to_pylist(), verdicts.column("attempt").to_pylist(),
                                      verdicts.column("filter_hash").to_pylist()) if h == config.hash}
    todo, errors = [], []
    for row in table.select(list(ROW_FIELDS) + ["status", "error"]).to_pylist():
        if (row["id"], row["attempt"]) in done:
            continue
        if row["status"] != "ok":
            from filters import reject

            verdict = reject(f"teacher error: {row['error']}", quality_flags=["teacher_error"])
            errors.append(verdict_row(row, verdict, config.hash))
        else:
            todo.append({k: row[k] for k in ROW_FIELDS})
    return todo, errors


def run_filter(run: RunDir, config: FilterConfig, *, address: str | None = None, progress: bool = True) -> dict:
    """Score the run's unscored rows; returns counts and throughput. The caller holds the lock."""
    from tqdm import tqdm

    info = run.info()
    previous = info.get("stages", {}).get("filter", {}).get("config_hash")
    if previous and previous != config.hash:
        run.clear_verdicts()
    run.update_stage("filter", status="running", config_hash=config.hash)
    table = run.journal_table()
    todo, errors = pending_rows(run, table, config)
    if errors:
        run.commit_verdicts(errors)
    start, audio_s, buffer = time.perf_counter(), 0.0, []
    durations = dict(zip(table.column("id").to_pylist(), table.column("duration_s").to_pylist()))
    bar = tqdm(total=len(todo), unit="row", desc="filter", disable=not progress)
    try:
        if todo:
            chain = config.build_chain()
            resources = {"num_cpus": max(f.resources.get("num_cpus", 1) for f in chain),
                         "num_gpus": max(f.resources.get("num_gpus", 0) for f in chain)}
            for batch in map_pool(todo, FilterWorker, {"run": str(run.path), "config": vars(config)},
                                  resources, batch_size=config.batch_size, workers=config.workers,
                                  address=address):
                for i in range(len(batch["id"])):
                    buffer.append(json.loads(batch["verdict"][i]))
                    audio_s += durations.get(buffer[-1]["id"]) or 0.0
                    bar.update(1)
                if len(buffer) >= COMMIT_EVERY:
                    run.commit_verdicts(buffer)
                    buffer = []
    finally:
        if buffer:
            run.commit_verdicts(buffer)
        bar.close()
    wall = time.perf_counter() - start
    return {"scored": len(todo), "teacher_errors": len(errors), "wall_s": round(wall, 2),
            "audio_s_per_wall_s": round(audio_s / wall, 3) if todo else None}
