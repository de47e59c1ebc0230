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
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.audio import to_flac
from engine.codec import absolute_spec, load_codec
from engine.teachers import error_kind, make_teacher
from engine.tokens import duration_seconds
from manifests import RunDir, json_bytes, npy_bytes
from manifests.record import Task
from manifests.shards import sample_key
from manifests.stage import Stage
from pipelines.actor_pool import map_stages

SHARD_SIZE = 64
BATCH_SIZE = 4


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
    """Buffers finished samples and commits them a shard at a time."""

    def __init__(self, run: RunDir, tasks: dict[str, Task], lineage: Lineage, shard_size: int):
        self.run, self.tasks, self.lineage, self.shard_size = run, tasks, lineage, shard_size
        self.samples: list = []
        self.rows: list[dict] = []
        self.written = self.errors = 0
        self.error_kinds: Counter = Counter()
        self.audio_seconds = 0.0

    def add(self, record: dict) -> None:
        task, attempt = self.tasks[record["id"]], int(record["attempt"])
        work = Work(task, attempt).row()
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
            self.samples.append((sample_key(task.id, attempt), {"json": json_bytes(meta), **record["members"]}))
            self.audio_seconds += row["duration_s"]
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        self.run.commit_shard(self.run.next_shard_index(), self.samples, self.rows)
        self.written += len(self.rows)
        self.samples, self.rows = [], []


def _absolute(codec: str) -> str:
    """A weights path as the actors must see it, whatever their working directory."""
    return absolute_spec(codec)


def run_synthesis(run: RunDir, todo: list[Work], teacher: str, lineage: Lineage, *,
                  codec: str = "melvq", resources: dict | None = None, shard_size: int = SHARD_SIZE,
                  batch_size: int = BATCH_SIZE, workers: int | None = None,
                  address: str | None = None, progress: bool = True,
                  stages=synthesis_stages, stage_kwargs: dict | None = None) -> dict:
    """Synthesize ``todo`` into ``run``; returns throughput figures and the failed rows counted
    by error kind (``errors_by_kind``: ``{"http 500": 2, "worker died": 1}``). The caller holds
    the lock. A task whose worker keeps dying becomes a ``worker died`` row (``map_stages``).

    ``stages`` builds each worker's stages from ``teacher``, ``codec`` and ``stage_kwargs``
    (``stepforge eval`` adds one that stores the teacher's rendering); its records must end as
    :class:`PackSample` leaves them."""
    start = time.perf_counter()
    committer = ShardCommitter(run, {w.task.id: w.task for w in todo}, lineage, shard_size)
    bar = tqdm(total=len(todo), unit="task", desc="synthesize", disable=not progress)
    try:
        kwargs = {"teacher": teacher, "codec": _absolute(codec), **(stage_kwargs or {})}
        for records in map_stages([w.row() for w in todo], stages, kwargs, resources or {"num_cpus": 1},
                                  batch_size=batch_size, workers=workers, address=address,
                                  on_death=worker_died):
            for record in records:
                committer.add(record)
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


def next_work(run: RunDir, tasks: list[Task], max_attempts: int = 1) -> list[Work]:
    """What to synthesize next: tasks without a row, then (with ``max_attempts`` > 1) a new
    attempt for each task whose latest attempt was rejected and that has attempts left. A task
    whose latest attempt awaits its verdict, or that has an accepted attempt, gets nothing."""
    latest: dict[str, dict] = {}
    accepted: set[str] = set()
    for row in run.current_table().select(["id", "attempt", "accepted"]).to_pylist():
        if row["accepted"]:
            accepted.add(row["id"])
        if row["id"] not in latest or row["attempt"] > latest[row["id"]]["attempt"]:
            latest[row["id"]] = row
    work = []
    for task in tasks:
        last = latest.get(task.id)
        if last is None:
            work.append(Work(task, 0))
        elif (max_attempts > 1 and task.id not in accepted and last["accepted"] is False
              and last["attempt"] + 1 < max_attempts):
            work.append(Work(task, last["attempt"] + 1))
    return work
