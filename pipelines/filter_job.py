"""The filter job: score every synthesized row of a run and decide keep or (reject, reason).

    stepforge filter RUN [--max-cer 0.2] [--min-ss 0.6] [--config filter.yaml]

Each row is a record that passes through the stages :func:`filter_stages` builds on a pool of
generic Ray workers: :class:`LoadSample` (the row's payloads from its shard), the filter chain
(quality checks, then CER, then speaker similarity, instruction adherence, DNSMOS: a row
rejected early never reaches the expensive models; the adherence checks' per-voice baselines come
from a pre-pass over the run's neutral rows, :func:`run_baselines`), then :class:`Verdicts`
(just the verdict columns go back to the driver). The
driver journals verdicts in parts and merges them into manifest.parquet; a rerun scores only rows
without a verdict under the same config, and a changed config rescores everything.
"""
from __future__ import annotations

import time
from pathlib import Path

import yaml
from tqdm import tqdm

from filters import FilterChain, reject
from filters.adherence import is_baseline_row, voice_baselines
from filters.config import FilterConfig
from filters.summary import format_yield, yield_summary
from manifests import RunDir, read_sample, sample_key
from manifests.errors import UserError
from manifests.record import TASK_FIELDS
from manifests.schema import FILTER_COLUMNS
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


def run_baselines(run: RunDir, table, config: FilterConfig) -> dict:
    """The adherence checks' voice baselines (:func:`filters.adherence.voice_baselines`) from
    every neutral, normal-speed speech row of the run, scored or not: a pre-pass in the driver
    (F0 and speech span of those rows only, a few ms each), handed to every worker as data."""
    if config.adherence is None:
        return {}
    rows = [r for r in table.select(list(ROW_FIELDS) + ["status"]).to_pylist()
            if r["status"] == "ok" and is_baseline_row(r)]
    return voice_baselines(LoadSample(run.path).process(rows))


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


def filter_run(run: RunDir, config: FilterConfig, address=None, progress=True, quiet=False) -> dict:
    """Filter, consolidate the manifest, store and print the yield table; returns the summary."""
    stats = run_filter(run, config, address=address, progress=progress)
    table = run.consolidate()
    summary = yield_summary(table)
    run.update_stage("filter", status="done", last=stats, yield_summary=summary)
    if not quiet:
        print(format_yield(summary))
    if stats["scored"]:
        print(f"filter: scored {stats['scored']} rows in {stats['wall_s']} s "
              f"({stats['audio_s_per_wall_s']} audio s per wall s)")
    return summary


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
            verdict = reject(f"teacher error: {row['error']}", quality_flags=["teacher_error"])
            errors.append(verdict_row({**row, **verdict.scores, "accepted": False,
                                       "reject_reason": verdict.reason}, config.hash))
        else:
            todo.append({k: row[k] for k in ROW_FIELDS})
    return todo, errors


def run_filter(run: RunDir, config: FilterConfig, *, address: str | None = None, progress: bool = True) -> dict:
    """Score the run's unscored rows; returns counts and throughput. The caller holds the lock."""
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
            resources = combined_resources(config.build_chain())
            params = {"run": str(run.path), "config": vars(config), "baselines": run_baselines(run, table, config)}
            for verdicts in map_stages(todo, filter_stages, params,
                                       resources, batch_size=config.batch_size, workers=config.workers,
                                       address=address):
                for verdict in verdicts:
                    buffer.append(verdict)
                    audio_s += durations.get(verdict["id"]) or 0.0
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
