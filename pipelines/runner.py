"""The stage runner of ``stepforge run``: synthesize -> filter -> distill -> eval -> report on one run.

    run_pipeline(load_pipeline("pipelines/configs/pipeline_tiny.yaml"), RunDir("runs/p"))

Each stage calls the job the standalone command runs, in this process. The ledger,
``run.json["pipeline"]["stages"][name]``, keeps each stage's fingerprint: a hash of its config,
the digest of what it consumed (the tasks; the committed rows; the accepted rows; the student's
train.json and the prompts; the other stages' fingerprints for the report) and the code and
package versions. A stage whose fingerprint holds and that finished is skipped; any other runs
(and resumes what an interrupted attempt left), and the ledger says why (``did``). ``history``
keeps one line per stage per rerun.

Growing a run: when the spec differs from the run's only by a higher ``count`` and texts appended
to its sources, the new tasks are expanded from a spec of the added count over the added texts
(all texts when none were added; a task the run already has is dealt the next text instead, so
the run gets the whole added count) with a seed of its own, and appended to tasks.parquet: existing
task ids and rows stay as they are; run.json's ``spec_hash`` becomes ``grown:HASH`` (so that
`stepforge synthesize` refuses the run, whose tasks no spec expands to) and ``growth`` lists each
step. A finished student is kept as ``RUN/students/NNN`` and the
next one starts from it (``student.init``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from argparse import Namespace
from pathlib import Path

import pyarrow.compute as pc
import yaml

from engine import __version__
from engine.spec import GenerationSpec, read_tasks, write_tasks
from manifests import RunDir, RunError
from manifests.atomic import atomic_path
from pipelines.eval_lists import split_list_spec
from pipelines.filter_job import filter_run
from pipelines.identity import claim_run, identify, package_versions, utc_now
from pipelines.pipeline_config import Pipeline
from pipelines.synthesize import Lineage, next_work, run_synthesis

STAGES = ("synthesize", "filter", "distill", "eval", "report")
GROWN = "grown:"  # run.json spec_hash prefix of a run grown past its first spec (see the module docstring)


class RunBusy(RunError):
    """Another ``stepforge run`` (or job) holds the run directory."""


@contextlib.contextmanager
def hold(run: RunDir, wait: bool, poll_s: float = 2.0):
    """The run's exclusive lock; ``wait``: poll until it is free instead of failing."""
    while True:
        try:
            with run.lock():
                yield run
            return
        except RunError as exc:
            if "in use" not in str(exc):
                raise
            if not wait:
                raise RunBusy(f"{run.path} is in use by another stepforge process; "
                              "pass --wait to wait for it") from None
            time.sleep(poll_s)


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclasses.dataclass
class Context:
    pipeline: Pipeline
    run: RunDir
    ray_address: str | None
    progress: bool

    @property
    def student(self) -> Path:
        return self.run.path / "student"


def run_pipeline(pipeline: Pipeline, run: RunDir, *, ray_address=None, progress=True, wait=False) -> dict:
    """Run every stage whose fingerprint changed; returns the ledger. Holds the run's lock."""
    ctx = Context(pipeline, run, ray_address, progress)
    with hold(run, wait):
        versions = {"stepforge": __version__, **package_versions()}
        for name in STAGES:
            stage = STAGE_FUNCS[name]
            parts = {"config": digest(stage.config(ctx)), "input": stage.consumed(ctx), "versions": digest(versions)}
            previous = _ledger(run).get(name, {})
            why = _why(previous, parts, stage.present(ctx))
            if why is None:
                _record(run, name, {**previous, "did": "skipped: fingerprint holds"}, "skipped: fingerprint holds")
                print(f"run: {name}: skipped (fingerprint holds)", flush=True)
                continue
            print(f"run: {name}: {why}", flush=True)
            entry = {"fingerprint": digest(parts), "parts": parts, "status": "running", "did": why,
                     "started": utc_now(), "finished": None}
            _record(run, name, entry, None)
            try:
                result = stage.run(ctx)
            except BaseException as exc:
                _record(run, name, {**entry, "status": "failed", "error": str(exc).splitlines()[0] if str(exc) else
                                    type(exc).__name__, "finished": utc_now()}, f"failed: {why}")
                raise
            _record(run, name, {**entry, "status": "done", "finished": utc_now(), "result": result},
                    f"ran: {why}")
        return _ledger(run)


def _why(previous: dict, parts: dict, present: bool) -> str | None:
    """Why a stage must run, or None when its fingerprint holds."""
    if not previous.get("fingerprint"):
        return "first run of this stage"
    if previous.get("status") != "done" and previous.get("status") != "skipped":
        return f"resuming: the last attempt ended {previous.get('status')}"
    if not present:
        return "its output is missing"
    changed = [k for k in ("config", "input", "versions") if previous.get("parts", {}).get(k) != parts[k]]
    if not changed:
        return None
    names = {"config": "its config changed", "input": "its input changed",
             "versions": "code or package versions changed"}
    return ", ".join(names[k] for k in changed)


def _ledger(run: RunDir) -> dict:
    if not run.exists():
        return {}
    return run.info().get("pipeline", {}).get("stages", {})


def _record(run: RunDir, name: str, entry: dict, history: str | None) -> None:
    info = run.info() if run.exists() else None
    if info is None:  # the synthesize stage creates the run; nothing to record before it exists
        return
    pipe = info.setdefault("pipeline", {})
    pipe.setdefault("stages", {})[name] = entry
    if history:
        pipe.setdefault("history", []).append({"at": utc_now(), "stage": name, "did": history})
    run.write_info(info)


# -- synthesize ------------------------------------------------------------------------------------
class Synthesize:
    @staticmethod
    def config(ctx: Context) -> dict:
        s = ctx.pipeline.synthesize
        return {"spec": ctx.pipeline.spec.hash, "teacher": s["teacher"], "codec": s["codec"],
                "attempts": s["attempts"], "limit": s["limit"]}

    @staticmethod
    def consumed(ctx: Context) -> str:
        return ctx.pipeline.spec.hash  # covers the texts read and the speaker prompts

    @staticmethod
    def present(ctx: Context) -> bool:
        return ctx.run.exists() and ctx.run.manifest.exists()

    @staticmethod
    def run(ctx: Context) -> dict:
        p, run, s = ctx.pipeline, ctx.run, ctx.pipeline.synthesize
        teacher, codec = identify(s["teacher"], s["codec"])
        tasks, grew = _claim(run, p, teacher, codec)
        if run.recover():
            print("recovered: removed uncommitted shards of an interrupted run", file=sys.stderr)
        lineage = Lineage(spec_hash=p.spec.hash, teacher_id=teacher.id, codec_version=codec.version,
                          stepforge_version=__version__)
        config = p.filter_config() if s["attempts"] > 1 else None
        total = {"tasks": 0, "errors": 0}
        while todo := next_work(run, None, s["attempts"], limit=s["limit"]):  # tasks.parquet, streamed
            stats = run_synthesis(run, todo, s["teacher"], lineage, codec=s["codec"], resources=teacher.resources,
                                  shard_size=s["shard_size"], batch_size=s["batch_size"] or teacher.batch_size,
                                  workers=s["workers"], address=ctx.ray_address, progress=ctx.progress)
            total = {k: total[k] + stats[k] for k in total}
            if config is not None:
                filter_run(run, config, ctx.ray_address, ctx.progress, quiet=True)
        rows = run.merge_manifest()
        done = pc.count_distinct(run.read_manifest(["id"]).column("id")).as_py()
        run.update_stage("synthesize", status="done" if done >= len(tasks) else "partial", tasks_done=done,
                         rows=rows, total=len(tasks), last=total, finished_at=utc_now())
        print(f"synthesize: {total['tasks']} attempts synthesized ({total['errors']} errors); "
              f"{done}/{len(tasks)} tasks in the manifest", flush=True)
        return {**total, "tasks_total": len(tasks), "new_tasks": grew}


def _claim(run: RunDir, p: Pipeline, teacher, codec) -> tuple[list, int]:
    """The run's tasks after claiming it for this spec: the spec's own, or (a grown spec) the
    run's tasks plus the new ones. Returns (tasks, number of tasks added now)."""
    identity = {"spec_path": p.spec_source, "spec_hash": p.spec.hash, "seed": p.spec.seed,
                "teacher": teacher.id, "codec": codec.version}
    refresh = {"spec": p.spec.to_dict()}

    def same_inputs(info: dict) -> None:
        for key, value in (("teacher", teacher.id), ("codec", codec.version)):
            if info.get(key) != value:
                raise RunError(f"{run.path} was synthesized with {key} {info.get(key)}, not {value}; "
                               "use another --out")

    if run.exists() and run.info().get("spec_hash") == GROWN + p.spec.hash:  # grown before by this spec
        same_inputs(run.info())
        run.write_info({**run.info(), **refresh})
        return read_tasks(run.tasks), 0
    if not run.exists() or run.info().get("spec_hash") == p.spec.hash:
        tasks = p.spec.expand()
        claim_run(run, tasks, identity, lambda info: (same_inputs(info), _same_spec(run, info, p)),
                  refresh=refresh)
        return read_tasks(run.tasks), 0
    info = run.info()
    same_inputs(info)
    old = read_tasks(run.tasks)
    added = _grown_tasks(run, info, p, old)
    tasks = sorted(old + added, key=lambda t: t.id)
    write_tasks(tasks, run.tasks)
    growth = info.get("growth", []) + [{"at": utc_now(), "from_spec_hash": info.get("spec_hash").removeprefix(GROWN),
                                        "to_spec_hash": p.spec.hash, "new_tasks": len(added)}]
    # a grown run's tasks are no spec's expansion: `stepforge synthesize` must not take it for one
    run.write_info({**info, **refresh, "spec_hash": GROWN + p.spec.hash, "spec_path": p.spec_source,
                    "growth": growth})
    print(f"synthesize: the spec grew: {len(added)} new tasks, {len(old)} existing ones kept", flush=True)
    return tasks, len(added)


def _same_spec(run: RunDir, info: dict, p: Pipeline) -> None:
    if info.get("spec_hash") not in (p.spec.hash, GROWN + p.spec.hash):
        raise RunError(f"{run.path} belongs to a different spec (hash {info.get('spec_hash')}, "
                       f"this spec {p.spec.hash}); use another --out")


def _grown_tasks(run: RunDir, info: dict, p: Pipeline, old: list) -> list:
    """The tasks a grown spec adds (see the module docstring); RunError when the spec changed
    in another way than growing."""
    before, now = dict(info.get("spec") or {}), p.spec.to_dict()
    refuse = RunError(f"{run.path} belongs to a different spec (hash {info.get('spec_hash')}, this spec "
                      f"{p.spec.hash}), and not a grown one (only count and appended texts may change); "
                      "use another --out")
    keep = ("file", "filter", "count", "texts")
    if {k: v for k, v in before.items() if k not in keep} != {k: v for k, v in now.items() if k not in keep}:
        raise refuse
    if (before.get("texts") != now.get("texts")) or (now.get("count") or 0) < (before.get("count") or 0):
        raise refuse
    known = {t.text for t in old}
    rows = [(text, lang) for lang, texts in p.spec.texts.items() for text in texts]
    if not known <= {text for text, _ in rows}:
        raise refuse  # a text the run voiced is gone: not an appended source
    added = (now.get("count") or 0) - (before.get("count") or 0)
    if added == 0:
        return []
    fresh = [(text, lang) for text, lang in rows if text not in known] or rows
    seed = int(hashlib.sha256(f"{p.spec.seed}:grow:{p.spec.hash}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
    config = dataclasses.replace(p.spec.config, count=added, quotas=[], seed=seed)
    delta = GenerationSpec(config, fresh, p.spec.speakers)
    return delta.expand(exclude=frozenset(t.id for t in old))


# -- filter ----------------------------------------------------------------------------------------
class Filter:
    @staticmethod
    def config(ctx: Context) -> dict:
        return {"filter": ctx.pipeline.filter_config().hash}

    @staticmethod
    def consumed(ctx: Context) -> str:
        rows = ctx.run.journal_table().select(["id", "attempt", "status"]).to_pylist()
        return digest(sorted((r["id"], r["attempt"], r["status"]) for r in rows))

    @staticmethod
    def present(ctx: Context) -> bool:
        return ctx.run.filter_journal.exists()

    @staticmethod
    def run(ctx: Context) -> dict:
        info = ctx.run.info()
        # the thresholds the run is filtered with, for `filter`, `verify` and eval to read back
        spec = {**info.get("spec", {}), "filter": {**(info.get("spec", {}).get("filter") or {}),
                                                   **ctx.pipeline.filter}}
        ctx.run.write_info({**info, "spec": spec})
        filter_run(ctx.run, ctx.pipeline.filter_config(), ctx.ray_address, ctx.progress)
        scored = ctx.run.info()["stages"]["filter"].get("last", {}).get("scored")
        return {"rows": ctx.run.journal_table().num_rows, "scored": scored, "accepted": len(_accepted(ctx.run))}


def _accepted(run: RunDir) -> list:
    table = run.current_table().select(["id", "attempt", "accepted"]).to_pylist()
    return sorted((r["id"], r["attempt"]) for r in table if r["accepted"])


# -- distill ---------------------------------------------------------------------------------------
class Distill:
    @staticmethod
    def config(ctx: Context) -> dict:
        return ctx.pipeline.distill

    @staticmethod
    def consumed(ctx: Context) -> str:
        return digest(_accepted(ctx.run))

    @staticmethod
    def present(ctx: Context) -> bool:
        return (ctx.student / "config.json").is_file()

    @staticmethod
    def run(ctx: Context) -> dict:
        from pipelines.commands import distill as command  # torch, deepspeed launcher

        if ctx.ray_address:  # Ray Train joins with its own runtime env (DS_ACCELERATOR on CPU)
            import ray

            ray.shutdown()
        init = _continue_from(ctx)
        cfg = json.loads(json.dumps(ctx.pipeline.distill))
        if init:
            cfg["student"]["init"] = str(init)
        config = ctx.student.parent / ".distill.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        try:
            command.main(Namespace(runs=[str(ctx.run.path)], out=str(ctx.student), config=str(config), steps=None,
                                   set=[], gpus=None, ray_address=ctx.ray_address, workers=1, no_eval=True))
        finally:
            config.unlink(missing_ok=True)
        train = json.loads((ctx.student / "train.json").read_text())
        return {"step": train.get("step"), "train_rows": train.get("train_rows"),
                "heldout_rows": train.get("heldout_rows"), "init": str(init) if init else None}


def _continue_from(ctx: Context) -> Path | None:
    """Keep a finished student of older inputs as RUN/students/NNN and return it (the new one
    starts from it); a student of these inputs (an interrupted attempt) is resumed in place."""
    students = ctx.run.path / "students"
    previous = sorted(students.glob("[0-9][0-9][0-9]")) if students.exists() else []
    train = ctx.student / "train.json"
    ledger = _ledger(ctx.run).get("distill", {})
    resuming = ledger.get("did", "").startswith("resuming") and ctx.student.exists()
    if resuming:
        return _recorded_init(ctx.student) or (previous[-1].resolve() if previous else None)
    if train.is_file() and json.loads(train.read_text()).get("status") == "done":
        students.mkdir(exist_ok=True)
        target = students / f"{len(previous):03d}"
        ctx.student.rename(target)
        print(f"distill: kept the previous student as {target}; the new one continues from it", flush=True)
        return target.resolve()
    if ctx.student.exists():
        shutil.rmtree(ctx.student)  # an unfinished student of other inputs
    return previous[-1].resolve() if previous else None


def _recorded_init(student: Path) -> Path | None:
    try:
        cfg = yaml.safe_load((student / "distill.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    init = (cfg or {}).get("student", {}).get("init")
    return Path(init) if init else None


# -- eval ------------------------------------------------------------------------------------------
class Eval:
    @staticmethod
    def config(ctx: Context) -> dict:
        return {k: v for k, v in ctx.pipeline.eval.items() if k != "prompts"}

    @staticmethod
    def consumed(ctx: Context) -> str:
        prompts = _prompts(ctx)
        train = ctx.student / "train.json"
        lists = [_file_digest(split_list_spec(spec)[0]) for spec in ctx.pipeline.eval.get("lists") or []]
        return digest([_file_digest(train), _file_digest(prompts), *lists])

    @staticmethod
    def present(ctx: Context) -> bool:
        return (ctx.run.path / "eval" / "eval.json").is_file()

    @staticmethod
    def run(ctx: Context) -> dict:
        from pipelines.evaluate import evaluate_student  # torch (the LM engines)

        out = ctx.run.path / "eval"
        ledger = _ledger(ctx.run).get("eval", {})
        if out.exists() and not ledger.get("did", "").startswith("resuming"):
            shutil.rmtree(out)  # made for an older student or other prompts: eval refuses it
        e = ctx.pipeline.eval
        report = evaluate_student(ctx.student, _prompts(ctx), out, engine=e.get("engine", "auto"),
                                  limit=e.get("limit"), max_seconds=e.get("max_seconds"),
                                  sampling={k: e.get(k) for k in ("temperature", "top_k", "top_p")},
                                  progress=ctx.progress, ray_address=ctx.ray_address,
                                  codec=e.get("codec", ctx.pipeline.synthesize["codec"]),
                                  samples=e.get("samples", 1), teacher=_eval_teacher(ctx), lists=e.get("lists"))
        with atomic_path(ctx.student / "eval.json") as tmp:  # kept with the student in RUN/students/NNN
            shutil.copyfile(out / "eval.json", tmp)
        lists = {name: {k: v for k, v in block.items() if k in ("cer", "wer", "ss", "normalisation")}
                 for name, block in report["lists"].items()}
        return {"prompts": report["n_prompts"], "aggregate": report["aggregate"]["all"],
                "stats": {k: v for k, v in report["stats"].items() if k in ("wer", "cer", "samples")},
                "lists": lists}


def _eval_teacher(ctx: Context) -> str | None:
    """The teacher spec that voices the eval's prompts: ``eval.teacher: true`` is the synthesize one."""
    given = ctx.pipeline.eval.get("teacher")
    return ctx.pipeline.synthesize["teacher"] if given is True else (given or None)


def _file_digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _prompts(ctx: Context) -> Path:
    given = ctx.pipeline.eval.get("prompts")
    return Path(given) if given else ctx.student / "heldout.jsonl"


# -- report ----------------------------------------------------------------------------------------
class Report:
    @staticmethod
    def config(ctx: Context) -> dict:
        return {}

    @staticmethod
    def consumed(ctx: Context) -> str:
        ledger = _ledger(ctx.run)
        return digest([ledger.get(name, {}).get("fingerprint") for name in STAGES if name != "report"])

    @staticmethod
    def present(ctx: Context) -> bool:
        return (ctx.run.path / "report.html").is_file()

    @staticmethod
    def run(ctx: Context) -> dict:
        from pipelines.report import write_report  # matplotlib

        path = write_report(ctx.run.path)
        print(f"report: {path}", flush=True)
        return {"path": str(path)}


STAGE_FUNCS = {"synthesize": Synthesize, "filter": Filter, "distill": Distill, "eval": Eval, "report": Report}
