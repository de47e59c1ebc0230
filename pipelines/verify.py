"""Check a run directory end to end: every committed row can be read back, nothing is duplicated,
missing or half written, the verdicts and the consolidated manifest agree with the journals, and a
student's train.json agrees with the corpus it names.

    report = verify_run(RunDir("RUN"), students=["RUN/student"])
    report.findings      # [] when healthy
    repair_run(RunDir("RUN"))   # removes only what a rerun regenerates

A finding says what is wrong and where; ``repairable`` findings are leftovers of interrupted writes
(temporaries, tars without their journal fragment, a stale manifest.parquet), which ``--repair``
removes or rebuilds. Committed data (shards with fragments, verdicts, students) is never touched:
a damaged shard is reported for a person to decide.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from engine.audio import from_flac
from engine.tokens import check_audio_ids
from manifests import RunDir, RunError, ShardReadError, npy_load, read_sample, sample_key
from manifests.atomic import TMP_SUFFIX
from manifests.shards import SHARD_RE


@dataclass
class Finding:
    """One inconsistency: ``where`` (a path relative to the run, or a row id), ``what``."""

    where: str
    what: str
    repairable: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.what}" + (" (--repair removes it)" if self.repairable else "")


@dataclass
class Report:
    """What :func:`verify_run` checked (counts) and found."""

    run: Path
    findings: list[Finding] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def add(self, where: str, what: str, repairable: bool = False) -> None:
        self.findings.append(Finding(where, what, repairable))

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"run": str(self.run), "ok": self.ok, "counts": dict(self.counts), "notes": self.notes,
                "findings": [{"where": f.where, "what": f.what, "repairable": f.repairable}
                             for f in self.findings]}


def verify_run(run: RunDir, students: list[str | Path] = (), decode: bool = True) -> Report:
    """Check ``run`` (and the given student dirs; ``run/student`` when it exists).

    Args:
        decode: also decode each sample's audio and tokens (else only read the members).
    Raises:
        RunError: ``run`` is not a run directory (no or corrupt run.json).
    """
    report = Report(run.path)
    info = run.info()
    tasks = _task_ids(run, report)
    _check_leftovers(run, report)
    rows = _check_journal(run, report, decode)
    _check_tasks(info, tasks, rows, report)
    _check_verdicts(run, info, rows, report)
    _check_manifest(run, report)
    default = run.path / "student"
    for student in [*students, *([default] if default.joinpath("train.json").exists() and not students else [])]:
        _check_student(Path(student), run, info, report)
    return report


def repair_run(run: RunDir) -> list[str]:
    """Remove leftovers of interrupted writes and rebuild a stale manifest.parquet; returns what
    was done, one line each. Committed shards, verdicts and students are kept as they are."""
    with run.lock():
        done = [f"removed {name} (no journal fragment: an interrupted write)" for name in run.recover()]
        if run.journal.exists() and _manifest_is_stale(run):
            run.consolidate()
            done.append("rebuilt manifest.parquet from the journals")
    return done


# -- the checks ----------------------------------------------------------------------------------

def _task_ids(run: RunDir, report: Report) -> list[str]:
    if not run.tasks.exists():
        report.add("tasks.parquet", "missing")
        return []
    try:
        ids = pq.read_table(run.tasks, columns=["id"]).column("id").to_pylist()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        report.add("tasks.parquet", f"unreadable ({exc})")
        return []
    for task_id, n in Counter(ids).items():
        if n > 1:
            report.add(f"tasks.parquet:{task_id}", f"task id listed {n} times")
    report.counts["tasks"] = len(ids)
    return ids


def _check_leftovers(run: RunDir, report: Report) -> None:
    for folder in (run.path, run.shards, run.journal, run.filter_journal):
        for tmp in sorted(folder.glob(f".*{TMP_SUFFIX}")) if folder.exists() else ():
            report.add(str(tmp.relative_to(run.path)), "temporary file of an interrupted write", repairable=True)
    committed = {p.stem for p in run.journal.glob("shard-*.parquet")}
    for tar in sorted(run.shards.glob("shard-*.tar")) if run.shards.exists() else ():
        if SHARD_RE.match(tar.name) and tar.stem not in committed:
            report.add(f"shards/{tar.name}", "shard without its journal fragment (half-written or orphan)",
                       repairable=True)


def _check_journal(run: RunDir, report: Report, decode: bool) -> list[dict]:
    rows = []
    for part in sorted(run.journal.glob("shard-*.parquet")) if run.journal.exists() else ():
        try:
            got = pq.read_table(part).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            report.add(f"manifest.d/{part.name}", f"unreadable journal fragment ({exc})")
            continue
        tar = run.shards / f"{part.stem}.tar"
        if any(r["shard"] for r in got) and not tar.exists():
            report.add(f"shards/{tar.name}", f"missing: {len(got)} committed rows point into it")
            rows += got
            continue
        for row in got:
            _check_row(run, row, report, decode)
        rows += got
    for (task_id, attempt), n in Counter((r["id"], r["attempt"]) for r in rows).items():
        if n > 1:
            report.add(task_id, f"attempt {attempt} committed {n} times")
    report.counts["rows"] = len(rows)
    report.counts["shards"] = len({r["shard"] for r in rows if r["shard"]})
    return rows


def _check_row(run: RunDir, row: dict, report: Report, decode: bool) -> None:
    where = f"{row['shard']}:{row['id']}" + (f" (attempt {row['attempt']})" if row["attempt"] else "")
    if row["status"] != "ok":
        report.counts["error_rows"] += 1
        return
    if not row["shard"]:
        report.add(where, "status ok but no shard")
        return
    try:
        members = read_sample(run.path / row["shard"], int(row["offset"]),
                              key=sample_key(row["id"], int(row["attempt"])), first="json")
    except (OSError, ShardReadError) as exc:
        report.add(where, str(exc))
        return
    missing = [m for m in ("json", "tokens.npy", "flac") if m not in members]
    if missing:
        report.add(where, f"sample lacks {', '.join(missing)}")
        return
    if not decode:
        return
    try:
        if json.loads(members["json"])["id"] != row["id"]:
            raise ValueError("its json names another id")
        ids = check_audio_ids(npy_load(members["tokens.npy"]))
        if len(ids) != row["n_tokens"]:
            raise ValueError(f"{len(ids)} tokens, the manifest says {row['n_tokens']}")
        wav, _ = from_flac(members["flac"])
        if not len(wav):
            raise ValueError("empty audio")
    except Exception as exc:  # json, numpy and libsndfile raise many types for damaged bytes
        report.add(where, f"sample does not decode ({type(exc).__name__}: {exc})")
        return
    report.counts["decoded"] += 1


def _check_tasks(info: dict, tasks: list[str], rows: list[dict], report: Report) -> None:
    known = set(tasks)
    strangers = sorted({r["id"] for r in rows} - known) if known else []
    for task_id in strangers[:20]:
        report.add(task_id, "row of a task that tasks.parquet does not list")
    attempts: dict[str, set[int]] = {}
    for r in rows:
        attempts.setdefault(r["id"], set()).add(int(r["attempt"]))
    for task_id, got in attempts.items():
        if got != set(range(max(got) + 1)):
            report.add(task_id, f"attempts {sorted(got)} have a gap")
    missing = [t for t in tasks if t not in attempts]
    status = info.get("stages", {}).get("synthesize", {}).get("status")
    if missing and status == "done":
        report.add("tasks.parquet", f"{len(missing)} tasks have no rows although synthesize is done "
                                    f"(first: {missing[0]})")
    elif missing:
        report.notes.append(f"synthesize is {status or 'not started'}: {len(missing)} of {len(tasks)} tasks "
                            "still to do (rerun synthesize)")


def _check_verdicts(run: RunDir, info: dict, rows: list[dict], report: Report) -> None:
    verdicts = run.verdict_table()
    if not verdicts.num_rows:
        return
    keys = {(r["id"], int(r["attempt"])) for r in rows}
    judged = set(zip(verdicts.column("id").to_pylist(), verdicts.column("attempt").to_pylist()))
    for task_id, attempt in sorted(judged - keys)[:20]:
        report.add(f"filter.d:{task_id}", f"verdict for attempt {attempt}, which no committed row has")
    stage = info.get("stages", {}).get("filter", {})
    if stage.get("status") != "done":
        report.notes.append("filter is not done: verdicts are partial (rerun filter)")
        return
    latest = {}
    for task_id, attempt, digest in zip(verdicts.column("id").to_pylist(), verdicts.column("attempt").to_pylist(),
                                        verdicts.column("filter_hash").to_pylist()):
        latest[(task_id, attempt)] = digest
    unjudged = [k for k in sorted(keys) if k not in latest]
    stale = [k for k in sorted(keys) if k in latest and latest[k] != stage.get("config_hash")]
    if unjudged:
        report.add("filter.d", f"{len(unjudged)} rows have no verdict although filter is done (first: {unjudged[0][0]})")
    if stale:
        report.add("filter.d", f"{len(stale)} verdicts were made under another filter config than run.json's "
                               f"(first: {stale[0][0]})")
    report.counts["verdicts"] = len(latest)


def _manifest_is_stale(run: RunDir) -> bool:
    if not run.manifest.exists():
        return True
    current = run.current_table()
    try:
        written = pq.read_table(run.manifest)
    except Exception:  # a damaged manifest.parquet is stale: it is rebuilt from the journals
        return True
    # columns added to the schema after the manifest was written are all null in the journals
    newer = [n for n in current.column_names if n not in written.column_names]
    if any(current.column(n).null_count != current.num_rows for n in newer):
        return True
    current = current.drop_columns(newer)
    try:  # Parquet keeps second timestamps as milliseconds: compare in the journals' types
        return not written.select(current.column_names).cast(current.schema).equals(current)
    except (KeyError, ValueError, TypeError, NotImplementedError):  # pyarrow: columns or types differ
        return True


def _check_manifest(run: RunDir, report: Report) -> None:
    if run.journal.exists() and any(run.journal.glob("shard-*.parquet")) and _manifest_is_stale(run):
        report.add("manifest.parquet", "differs from the journals (an interrupted consolidation)", repairable=True)


def _check_student(student: Path, run: RunDir, info: dict, report: Report) -> None:
    where = str(student)
    try:
        train = json.loads((student / "train.json").read_text())
    except FileNotFoundError:
        report.add(where, "no train.json (not a finished student)")
        return
    except json.JSONDecodeError as exc:
        report.add(where, f"corrupt train.json ({exc})")
        return
    if not (student / "config.json").exists() or not any(student.glob("*.safetensors")):
        report.add(where, "train.json is there but the exported weights are not")
    runs = [Path(r).resolve() for r in train.get("runs", [])]
    if run.path.resolve() not in runs:
        report.add(where, f"train.json does not name this run (it names {[str(r) for r in runs]})")
        return
    if train.get("codec") != info.get("codec"):
        report.add(where, f"trained on codec {train.get('codec')!r}, the run has {info.get('codec')!r}")
    accepted: set[str] = set()
    for path in runs:
        try:
            table = RunDir(path).current_table()
        except (RunError, OSError) as exc:
            report.add(where, f"its corpus {path} cannot be read ({exc})")
            return
        accepted |= {f"{path.name}/{r['id']}" for r in table.to_pylist() if r["accepted"] and r["status"] == "ok"}
    trained = int(train.get("train_rows", 0)) + int(train.get("heldout_rows", 0))
    if trained != len(accepted):
        report.add(where, f"train.json counts {trained} rows (train + held-out); its runs now accept "
                          f"{len(accepted)} tasks (the corpus changed after training: distill again)")
    report.counts["students"] += 1
