"""The filter job: score every synthesized row of a run and decide keep or (reject, reason).

    stepforge filter RUN [--max-cer 0.2] [--min-ss 0.6] [--config filter.yaml]

Each row is a record that passes through the stages :func:`filter_stages` builds on a pool of
generic Ray workers: :class:`LoadSample` (the row's payloads from its shard), the filter chain
(quality checks, then CER, then speaker similarity, instruction adherence, DNSMOS: a row
rejected early never reaches the expensive models; the adherence checks' per-voice baselines come
from a pre-pass over the run's neutral rows, :func:`run_baselines`), then :class:`Verdicts`
(just the verdict columns go back to the driver). The
driver streams the rows to score from the journal a fragment at a time (:class:`PendingRows`),
journals verdicts in parts and merges them into manifest.parquet in one streaming pass; a rerun
scores only rows without a verdict under the same config, and a changed config rescores everything.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from filters import FilterChain, reject
from filters.adherence import is_baseline_row, voice_baselines
from filters.config import FilterConfig
from filters.summary import YieldTally, format_yield
from manifests import RunDir, read_sample, sample_key
from manifests.errors import UserError
from manifests.merge import KeySet, row_keys
from manifests.record import TASK_FIELDS
from manifests.schema import FILTER_COLUMNS, MANIFEST_SCHEMA
from manifests.stage import Stage, combined_resources
from pipelines.actor_pool import map_stages

# what a filter worker needs of a manifest row: the task, which attempt, where its sample lives
ROW_FIELDS = (*TASK_FIELDS, "attempt", "shard", "offset")
COMMIT_EVERY = 32


class LoadSample(Stage):
    """Adds a row's payloads from its shard as bytes (``audio``, ``tokens``, ``source_audio``;
    filters decode and check them). A sample that cannot be read is rejected with the reason."""

    name = "load-sample"

    def __init__(self, run_path: str | Path):
        self.run_path = Path(run_path)

    def process(self, records: list[dict]) -> list[dict]:
        return [self._load(r) for r in records]

    def _load(self, row: dict) -> dict:
        try:
            members = read_sample(self.run_path / row["shard"], int(row["offset"]),
                                  key=sample_key(row["id"], int(row["attempt"])), first="json")
        except (OSError, ValueError, KeyError, TypeError) as exc:  # ShardReadError is a ValueError
            return {**row, "accepted": False, "quality_flags": [],
                    "reject_reason": f"cannot read sample from {row.get('shard')}: {exc}"}
        return {**row, "audio": members.get("flac"), "tokens": members.get("tokens.npy"),
                "source_audio": members.get("src.flac")}


class Verdicts(Stage):
    """Keeps only the verdict columns of scored records (:data:`FILTER_COLUMNS`, id, attempt)."""

    name = "verdicts"

    def __init__(self, config_hash: str):
        self.config_hash = config_hash

    def process(self, records: list[dict]) -> list[dict]:
        return [verdict_row(r, self.config_hash) for r in records]


def verdict_row(record: dict, config_hash: str) -> dict:
    """The verdict of one scored record: id, attempt and every filter column (None if unscored)."""
    out = {"id": record["id"], "attempt": int(record["attempt"]), "accepted": bool(record["accepted"]),
           "reject_reason": record.get("reject_reason") or "", "filter_hash": config_hash}
    for name in FILTER_COLUMNS:
        if name not in out:
            out[name] = record.get(name)
    out["quality_flags"] = list(record.get("quality_flags") or [])
    return out


def filter_stages(run: str, config: dict, baselines: dict | None = None) -> list[Stage]:
    """The stages of one filter worker (see the module docstring)."""
    config_ = FilterConfig.from_dict(config)
    chain = FilterChain(config_.build_chain(baselines), config_.score_rejected)
    return [LoadSample(run), chain, Verdicts(config_.hash)]


def run_baselines(run: RunDir, config: FilterConfig) -> dict:
    """The adherence checks' voice baselines (:func:`filters.adherence.voice_baselines`) from
    every neutral, normal-speed speech row of the run, scored or not: a pre-pass in the driver
    (F0 and speech span of those rows only, a few ms each, read one at a time), handed to every
    worker as data."""
    if config.adherence is None:
        return {}
    load = LoadSample(run.path)

    def samples() -> Iterator[dict]:
        for part in run.journal_parts():
            table = pq.read_table(part, schema=MANIFEST_SCHEMA, columns=[*ROW_FIELDS, "status"])
            for row in table.to_pylist():
                if row["status"] == "ok" and is_baseline_row(row):
                    yield load.process([row])[0]
    return voice_baselines(samples())


def load_config(run: RunDir, path: str | None, **overrides) -> FilterConfig:
    """The run's filter config: its spec's ``filter:`` section, then the YAML at ``path``, then the
    non-None ``overrides`` (CLI flags)."""
    data = (run.info().get("spec") or {}).get("filter") or {}
    where = f"{run.run_json}: spec.filter"
    if path:
        try:
            given = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(f"{path}: cannot read filter config ({str(exc).splitlines()[0]})") from None
        if not isinstance(given, dict):
            raise UserError(f"{path}: expected a mapping of filter keys, got {type(given).__name__}")
        data, where = {**data, **given}, path
    return FilterConfig.from_dict(data, where).overridden(**overrides)


def spec_filter_config(spec) -> FilterConfig:
    """Validate a generation spec's ``filter:`` section (one line naming the spec file)."""
    try:
        return FilterConfig.from_dict(spec.config.filter, f"{spec.config.file}: filter")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def filter_run(run: RunDir, config: FilterConfig, address=None, progress=True, quiet=False,
               stages: Callable[..., list] | None = None) -> dict:
    """Filter, merge the manifest, store and print the yield table; returns the summary.
    ``stages``: as for :func:`run_filter`."""
    stats = run_filter(run, config, address=address, progress=progress, stages=stages or filter_stages)
    tally = YieldTally()
    run.merge_manifest(tally.add)
    summary = tally.summary()
    run.update_stage("filter", status="done", last=stats, yield_summary=summary)
    if not quiet:
        print(format_yield(summary))
    if stats["scored"]:
        print(f"filter: scored {stats['scored']} rows in {stats['wall_s']} s "
              f"({stats['audio_s_per_wall_s']} audio s per wall s)")
    return summary


class PendingRows:
    """The synthesized rows without a verdict under ``config_hash``, streamed from the journal
    one fragment at a time: :meth:`tables` yields each fragment's pending rows (``ROW_FIELDS``,
    ``status``, ``error``, ``duration_s``). Holds the keys of the verdicts already made, not
    the rows. ``len()``: how many there are; ``ok``: how many of them are to be scored (the
    others are teacher errors, rejected unscored)."""

    COLUMNS = [*ROW_FIELDS, "status", "error", "duration_s"]

    def __init__(self, run: RunDir, config_hash: str):
        self.run = run
        verdicts = run.verdict_table(["id", "attempt", "filter_hash"])
        done = verdicts.filter(pc.equal(verdicts.column("filter_hash"), config_hash))
        self.done = KeySet(row_keys(done))
        self.count = self.ok = 0
        for table in self.tables(["id", "attempt", "status"]):
            self.count += table.num_rows
            self.ok += pc.sum(pc.equal(table.column("status"), "ok")).as_py() or 0

    def __len__(self) -> int:
        return self.count

    def tables(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for part in self.run.journal_parts():
            table = pq.read_table(part, schema=MANIFEST_SCHEMA, columns=columns or self.COLUMNS)
            if len(self.done):
                table = table.filter(pa.array(~self.done.contains(table)))
            if table.num_rows:
                yield table


def commit_teacher_errors(run: RunDir, pending: PendingRows, config_hash: str, part: int = 4096) -> int:
    """Reject the pending rows whose teacher failed, unscored, with the error as the reason
    (committed in parts of ``part`` verdicts); returns how many."""
    if pending.ok == len(pending):
        return 0
    buffer, count = [], 0
    for table in pending.tables():
        for row in table.filter(pc.not_equal(table.column("status"), "ok")).to_pylist():
            verdict = reject(f"teacher error: {row['error']}", quality_flags=["teacher_error"])
            buffer.append(verdict_row({**row, **verdict.scores, "accepted": False,
                                       "reject_reason": verdict.reason}, config_hash))
            if len(buffer) >= part:
                run.commit_verdicts(buffer)
                count, buffer = count + len(buffer), []
    if buffer:
        run.commit_verdicts(buffer)
    return count + len(buffer)


def run_filter(run: RunDir, config: FilterConfig, *, address: str | None = None, progress: bool = True,
               stages: Callable[..., list] = filter_stages) -> dict:
    """Score the run's unscored rows; returns counts and throughput. The caller holds the lock.

    The rows stream from the journal (:class:`PendingRows`) into the actor pool; the driver holds
    the rows in flight and the verdicts not yet committed. ``stages``: builds each worker's
    stages from ``run``, ``config`` and ``baselines`` (default :func:`filter_stages`)."""
    info = run.info()
    previous = info.get("stages", {}).get("filter", {}).get("config_hash")
    if previous and previous != config.hash:
        run.clear_verdicts()
    run.update_stage("filter", status="running", config_hash=config.hash)
    pending = PendingRows(run, config.hash)
    errors = commit_teacher_errors(run, pending, config.hash)
    start, audio_s, buffer = time.perf_counter(), 0.0, []
    in_flight: dict[tuple[str, int], float] = {}  # (id, attempt) -> duration_s, until its verdict

    def rows() -> Iterator[dict]:
        for table in pending.tables():
            for row in table.filter(pc.equal(table.column("status"), "ok")).to_pylist():
                in_flight[(row["id"], row["attempt"])] = row["duration_s"] or 0.0
                yield {k: row[k] for k in ROW_FIELDS}

    bar = tqdm(total=pending.ok, unit="row", desc="filter", disable=not progress)
    scored = 0
    try:
        if pending.ok:
            resources = combined_resources(config.build_chain())
            params = {"run": str(run.path), "config": vars(config), "baselines": run_baselines(run, config)}
            for verdicts in map_stages(rows(), stages, params, resources, batch_size=config.batch_size,
                                       workers=config.workers, address=address):
                for verdict in verdicts:
                    buffer.append(verdict)
                    audio_s += in_flight.pop((verdict["id"], int(verdict["attempt"])), 0.0)
                    scored += 1
                    bar.update(1)
                if len(buffer) >= COMMIT_EVERY:
                    run.commit_verdicts(buffer)
                    buffer = []
    finally:
        if buffer:
            run.commit_verdicts(buffer)
        bar.close()
    wall = time.perf_counter() - start
    return {"scored": scored, "teacher_errors": errors, "wall_s": round(wall, 2),
            "audio_s_per_wall_s": round(audio_s / wall, 3) if scored else None}
