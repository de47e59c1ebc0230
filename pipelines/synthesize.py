"""The synthesize job: tasks -> teacher -> Step-Audio tokens -> shards + manifest.

    stepforge synthesize pipelines/configs/builtin.yaml --out runs/demo --teacher reference

Each task attempt is one record that passes through the stages :func:`synthesis_stages` builds
(the teacher, the codec that decodes its tokens, :class:`PackSample`) on a pool of generic Ray
workers; the driver commits results a shard at a time (tar, then journal fragment), so a crash
loses at most the shard in flight and a rerun redoes exactly the tasks without a committed row.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from engine.audio import to_flac
from engine.codec import absolute_spec, load_codec
from engine.spec import task_batches, tasks_to_table
from engine.teachers import error_kind, make_teacher
from engine.tokens import duration_seconds
from manifests import RunDir, json_bytes, npy_bytes
from manifests.record import Task
from manifests.shards import sample_key
from manifests.stage import Stage
from pipelines.actor_pool import map_stages

SHARD_SIZE = 64
BATCH_SIZE = 4
TASK_BATCH = 1024  # tasks read from tasks.parquet at a time


class PackSample(Stage):
    """Encodes a synthesized record's payloads as shard members (``members``: extension -> bytes):
    ``tokens.npy`` (int32 ids), ``flac`` (the decoded audio), ``src.flac`` (the teacher's own
    rendering) and ``topk.npz``; the arrays themselves are dropped, and ``info`` becomes JSON."""

    name = "pack"
    PAYLOADS = ("tokens", "audio", "source_audio", "topk")

    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def process(self, records: list[dict]) -> list[dict]:
        return [self._pack(r) for r in records]

    def _pack(self, record: dict) -> dict:
        members = {}
        if not record["error"]:
            members = {"tokens.npy": npy_bytes(record["tokens"]), "flac": to_flac(record["audio"], self.sample_rate)}
            if record.get("source_audio") is not None:
                members["src.flac"] = to_flac(record["source_audio"])
            if record.get("topk") is not None:
                members["topk.npz"] = npz_bytes(record["topk"])
        out = {k: v for k, v in record.items() if k not in self.PAYLOADS}
        return {**out, "info": json.dumps(record.get("info") or {}, default=str), "members": members}


def npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def worker_died(record: dict, reason: str) -> dict:
    """The record of a task whose worker kept dying on it, as :class:`PackSample` leaves one."""
    return {**record, "error": reason, "n_tokens": 0, "info": "{}", "members": {}}


def synthesis_stages(teacher: str, codec: str = "melvq") -> list[Stage]:
    """The stages of one synthesize worker: the teacher (tokenising with the codec the job decodes
    with, so the two always agree), the codec, then :class:`PackSample`."""
    codec_ = load_codec(codec)
    return [make_teacher(teacher, codec=codec_), codec_, PackSample(codec_.sample_rate)]


@dataclasses.dataclass
class Lineage:
    spec_hash: str
    teacher_id: str
    codec_version: str
    stepforge_version: str


def attempt_seed(seed: int, attempt: int) -> int:
    """The seed of a regenerated attempt: attempt 0 keeps the task's seed."""
    if attempt == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclasses.dataclass(frozen=True)
class Work:
    """One attempt at one task."""

    task: Task
    attempt: int = 0

    def row(self) -> dict:
        return {**self.task.to_row(), "seed": attempt_seed(self.task.seed, self.attempt), "attempt": self.attempt}


class ShardCommitter:
    """Buffers finished samples and commits them a shard at a time, numbering shards on from
    ``first_index`` (the caller holds the run's lock, so no other writer takes a number): a commit
    costs the same however many shards the run already has."""

    def __init__(self, run: RunDir, lineage: Lineage, shard_size: int, first_index: int):
        self.run, self.lineage, self.shard_size, self.index = run, lineage, shard_size, first_index
        self.samples: list = []
        self.rows: list[dict] = []
        self.written = self.errors = 0
        self.error_kinds: Counter = Counter()
        self.audio_seconds = 0.0

    def add(self, work: dict, record: dict) -> None:
        """Buffer one finished ``record`` of the attempt ``work`` (:meth:`Work.row`)."""
        row = {**work, **dataclasses.asdict(self.lineage), "status": "error" if record["error"] else "ok",
               "error": record["error"], "n_tokens": record["n_tokens"],
               "duration_s": duration_seconds(record["n_tokens"]), "created_at": datetime.now(timezone.utc)}
        self.rows.append(row)
        if record["error"]:
            self.errors += 1
            self.error_kinds[error_kind(record["error"])] += 1
        else:
            meta = {**work, "teacher": self.lineage.teacher_id, "codec": self.lineage.codec_version,
                    "n_tokens": record["n_tokens"], "duration_s": row["duration_s"],
                    "teacher_info": json.loads(record["info"])}
            key = sample_key(work["id"], work["attempt"])
            self.samples.append((key, {"json": json_bytes(meta), **record["members"]}))
            self.audio_seconds += row["duration_s"]
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        self.run.commit_shard(self.index, self.samples, self.rows)
        self.index += 1
        self.written += len(self.rows)
        self.samples, self.rows = [], []


def _absolute(codec: str) -> str:
    """A weights path as the actors must see it, whatever their working directory."""
    return absolute_spec(codec)


def run_synthesis(run: RunDir, todo: Iterable[Work], teacher: str, lineage: Lineage, *,
                  codec: str = "melvq", resources: dict | None = None, shard_size: int = SHARD_SIZE,
                  batch_size: int = BATCH_SIZE, workers: int | None = None,
                  address: str | None = None, progress: bool = True,
                  stages=synthesis_stages, stage_kwargs: dict | None = None) -> dict:
    """Synthesize ``todo`` into ``run``; returns throughput figures and the failed rows counted
    by error kind (``errors_by_kind``: ``{"http 500": 2, "worker died": 1}``). The caller holds
    the lock. A task whose worker keeps dying becomes a ``worker died`` row (``map_stages``).

    ``todo`` is read lazily (a :class:`WorkPlan` streams it from tasks.parquet): the driver holds
    the attempts in flight and the shard being filled, never the whole list.

    ``stages`` builds each worker's stages from ``teacher``, ``codec`` and ``stage_kwargs``
    (``stepforge eval`` adds one that stores the teacher's rendering); its records must end as
    :class:`PackSample` leaves them."""
    start = time.perf_counter()
    committer = ShardCommitter(run, lineage, shard_size, run.next_shard_index())
    in_flight: dict[tuple[str, int], dict] = {}  # (id, attempt) -> the attempt's row, until committed

    def rows() -> Iterator[dict]:
        for work in todo:
            row = work.row()
            in_flight[(row["id"], row["attempt"])] = row
            yield row

    total = len(todo) if isinstance(todo, Sized) else None
    bar = tqdm(total=total, unit="task", desc="synthesize", disable=not progress)
    try:
        kwargs = {"teacher": teacher, "codec": _absolute(codec), **(stage_kwargs or {})}
        for records in map_stages(rows(), stages, kwargs, resources or {"num_cpus": 1},
                                  batch_size=batch_size, workers=workers, address=address,
                                  on_death=worker_died):
            for record in records:
                committer.add(in_flight.pop((record["id"], int(record["attempt"]))), record)
                bar.update(1)
    finally:
        committer.flush()  # keep what finished, also on Ctrl-C
        bar.close()
    wall = time.perf_counter() - start
    return {"tasks": committer.written, "errors": committer.errors,
            "errors_by_kind": dict(committer.error_kinds.most_common()), "wall_s": round(wall, 2),
            "tasks_per_s": round(committer.written / wall, 3),
            "audio_s_per_wall_s": round(committer.audio_seconds / wall, 3),
            "audio_s": round(committer.audio_seconds, 2)}


def attempt_state(run: RunDir) -> pa.Table:
    """One row per task with a manifest row: ``id``, ``last`` (its latest attempt),
    ``last_accepted`` (that attempt's verdict; null until filtered) and ``ever`` (some attempt was
    accepted). Arrow columns read from the journals' id/attempt/accepted columns alone: a few
    dozen bytes per row, not the rows."""
    rows = run.journal_table(["id", "attempt"])
    verdicts = run.verdict_table(["id", "attempt", "accepted"])
    if verdicts.num_rows:  # the last verdict of each attempt counts (as in the manifest)
        verdicts = verdicts.append_column("n", pa.array(np.arange(verdicts.num_rows)))
        last = verdicts.group_by(["id", "attempt"], use_threads=False).aggregate([("n", "max")])
        verdicts = verdicts.take(last.column("n_max")).select(["id", "attempt", "accepted"])
        rows = rows.join(verdicts, ["id", "attempt"], join_type="left outer", use_threads=False)
    else:
        rows = rows.append_column("accepted", pa.nulls(rows.num_rows, pa.bool_()))
    rows = rows.append_column("ok", pc.fill_null(rows.column("accepted"), False))
    per_task = rows.group_by("id", use_threads=False).aggregate([("attempt", "max"), ("ok", "any")])
    per_task = per_task.rename_columns(["id", "last", "ever"])
    latest = rows.rename_columns(["id", "last", "last_accepted", "ok"]).select(["id", "last", "last_accepted"])
    return per_task.join(latest, ["id", "last"], join_type="left outer", use_threads=False)


class WorkPlan:
    """What to synthesize next (:func:`next_work`): sized, iterable more than once, and lazy: each
    pass streams the tasks in batches and decides per batch against the run's
    :func:`attempt_state`, so it holds one batch of tasks at a time."""

    def __init__(self, state: pa.Table, tasks: Callable[[], Iterator[pa.Table]], max_attempts: int):
        self.tasks, self.max_attempts = tasks, max_attempts
        self.ids = state.column("id")
        last = state.column("last").to_numpy(zero_copy_only=False).astype(np.int64)
        again = (~state.column("ever").to_numpy(zero_copy_only=False).astype(bool)
                 & (pc.fill_null(pc.equal(state.column("last_accepted"), False), False).to_numpy(zero_copy_only=False))
                 & (last + 1 < max_attempts) & (max_attempts > 1))
        self.next_attempt = np.where(again, last + 1, -1)  # per state row; -1: nothing to do
        self.count = sum(int((self._attempts(batch.column("id")) >= 0).sum())
                         for batch in tasks())

    def _attempts(self, ids: pa.ChunkedArray) -> np.ndarray:
        """The attempt to make at each task of ``ids``, -1 for none."""
        if not len(self.next_attempt):
            return np.zeros(len(ids), dtype=np.int64)
        where = pc.index_in(ids, value_set=self.ids)
        known = where.is_valid().to_numpy(zero_copy_only=False)
        return np.where(known, self.next_attempt[pc.fill_null(where, 0).to_numpy(zero_copy_only=False)], 0)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Work]:
        for batch in self.tasks():
            attempts = self._attempts(batch.column("id"))
            chosen = np.flatnonzero(attempts >= 0)
            for row, attempt in zip(batch.take(chosen).to_pylist(), attempts[chosen]):
                yield Work(Task.from_row(row), int(attempt))


def next_work(run: RunDir, tasks: list[Task] | None = None, max_attempts: int = 1,
              limit: int | None = None) -> WorkPlan:
    """What to synthesize next: tasks without a row, then (with ``max_attempts`` > 1) a new
    attempt for each task whose latest attempt was rejected and that has attempts left. A task
    whose latest attempt awaits its verdict, or that has an accepted attempt, gets nothing.

    Args:
        tasks: the tasks to consider; None: the run's tasks.parquet, streamed (``limit``: its
            first ``limit`` tasks).
    """
    if tasks is None:
        def source() -> Iterator[pa.Table]:
            return task_batches(run.tasks, rows=TASK_BATCH, limit=limit)
    else:
        table = tasks_to_table(list(tasks)[:limit])

        def source() -> Iterator[pa.Table]:
            return (pa.Table.from_batches([b]) for b in table.to_batches(TASK_BATCH))
    return WorkPlan(attempt_state(run), source, max_attempts)
