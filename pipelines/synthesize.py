"""The synthesize job: tasks -> teacher -> Step-Audio tokens -> shards + manifest.

    stepforge synthesize pipelines/configs/builtin.yaml --out runs/demo --teacher reference

Tasks go through a pool of ``SynthesisWorker`` actors (one teacher and one codec each); the
driver commits results a shard at a time (tar, then journal fragment), so a crash loses at most
the shard in flight and a rerun redoes exactly the tasks without a committed row.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.task import Task
from engine.tokens import check_audio_ids, duration_seconds
from manifests import RunDir, json_bytes, npy_bytes
from manifests.shards import sample_key
from pipelines.actor_pool import batch_rows, map_pool

SHARD_SIZE = 64
# shard member extension -> worker result column (empty bytes = absent)
MEMBERS = {"tokens.npy": "tokens", "flac": "flac", "src.flac": "src_flac", "topk.npz": "topk"}
BATCH_SIZE = 4


class SynthesisWorker:
    """One teacher plus the codec that turns its tokens back into the audio the filters score."""

    def __init__(self, teacher: str, codec: str = "melvq"):
        from engine.codec import load_codec
        from engine.teachers import make_teacher

        self.codec = load_codec(codec)
        self.teacher = make_teacher(teacher, codec=self.codec)  # tokenise with what decodes

    def __call__(self, batch: dict) -> dict:
        rows = batch_rows(batch)
        tasks = [Task.from_row(row) for row in rows]
        outputs = self.teacher.synthesize(tasks)
        results = [{**self._package(task, out), "attempt": row["attempt"]}
                   for row, task, out in zip(rows, tasks, outputs)]
        return {key: np.array([r[key] for r in results], dtype=object) for key in results[0]}

    def _package(self, task: Task, out) -> dict:
        from engine.audio import to_flac

        result = {"id": task.id, "error": out.error, "n_tokens": 0, "info": json.dumps(out.info, default=str)}
        result.update({column: b"" for column in MEMBERS.values()})
        if out.error:
            return result
        try:
            ids = check_audio_ids(out.tokens).astype(np.int32)
            if ids.size == 0:
                raise ValueError("no audio tokens")
            wav = self.codec.detokenize(ids)
        except ValueError as exc:
            result["error"] = f"invalid teacher tokens: {exc}"
            return result
        result.update(n_tokens=int(ids.size), tokens=npy_bytes(ids), flac=to_flac(wav, self.codec.sample_rate))
        if out.source_audio is not None:
            result["src_flac"] = to_flac(out.source_audio)
        if out.topk is not None:
            result["topk"] = _npz_bytes(out.topk)
        return result


def _npz_bytes(arrays: dict) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


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
        self.audio_seconds = 0.0

    def add(self, result: dict) -> None:
        task = self.tasks[result["id"]]
        attempt = int(result["attempt"])
        row = {**Work(task, attempt).row(), **dataclasses.asdict(self.lineage), "attempt": attempt,
               "status": "error" if result["error"] else "ok", "error": result["error"],
               "n_tokens": result["n_tokens"], "duration_s": duration_seconds(result["n_tokens"]),
               "created_at": datetime.now(timezone.utc)}
        self.rows.append(row)
        if result["error"]:
            self.errors += 1
        else:
            meta = {**Work(task, attempt).row(), "teacher": self.lineage.teacher_id, "codec": self.lineage.codec_version,
                    "n_tokens": result["n_tokens"], "duration_s": row["duration_s"],
                    "teacher_info": json.loads(result["info"])}
            members = {ext: bytes(result[col]) for ext, col in MEMBERS.items() if len(result[col])}
            self.samples.append((sample_key(task.id, attempt), {"json": json_bytes(meta), **members}))
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
    return codec if codec == "melvq" else str(Path(codec).resolve())


def run_synthesis(run: RunDir, todo: list[Work], teacher: str, lineage: Lineage, *,
                  codec: str = "melvq", resources: dict | None = None, shard_size: int = SHARD_SIZE,
                  batch_size: int = BATCH_SIZE, workers: int | None = None,
                  address: str | None = None, progress: bool = True,
                  worker: type = SynthesisWorker, worker_kwargs: dict | None = None) -> dict:
    """Synthesize ``todo`` into ``run``; returns throughput figures. The caller holds the lock.

    ``worker`` is the actor class (a ``SynthesisWorker`` subclass may add shard members, as
    ``stepforge eval`` adds the teacher's rendering); ``worker_kwargs`` go to its constructor
    beside ``teacher`` and ``codec``."""
    from tqdm import tqdm

    start = time.perf_counter()
    committer = ShardCommitter(run, {w.task.id: w.task for w in todo}, lineage, shard_size)
    bar = tqdm(total=len(todo), unit="task", desc="synthesize", disable=not progress)
    try:
        results = map_pool([w.row() for w in todo], worker,
                           {"teacher": teacher, "codec": _absolute(codec), **(worker_kwargs or {})},
                           resources or {"num_cpus": 1},
                           batch_size=batch_size, workers=workers, address=address)
        for batch in results:
            for result in batch_rows(batch):
                committer.add(result)
                bar.update(1)
    finally:
        committer.flush()  # keep what finished, also on Ctrl-C
        bar.close()
    wall = time.perf_counter() - start
    return {"tasks": committer.written, "errors": committer.errors, "wall_s": round(wall, 2),
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
