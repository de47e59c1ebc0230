"""Score a distilled student the way its teacher was scored: the same LM engine stack, codec and
filters, on held-out prompts that carry the teacher's scores.

    stepforge eval student/ --prompts heldout.jsonl --out runs/eval [--max-seconds 20] \
        [--samples 3 --teacher reference]
    stepforge eval student/ --list seedtts/zh/meta.lst --out runs/eval-zh    # seed-tts-eval test lists
    report = evaluate_student("student/", "heldout.jsonl", "runs/eval")   # also OUT/eval.json

OUT is an ordinary run directory (tasks.parquet from the prompts; run.json records the student,
its fingerprint and the prompts hash), so synthesize's resume and the filter job apply unchanged:
a rerun generates only prompts without a manifest row, and an OUT made for another student,
other prompts or another engine / length cap is refused. The prompts format is in
:mod:`pipelines.eval_prompts`, the report in :mod:`pipelines.eval_report`.

Speaker similarity needs a reference: a clone row uses its prompt wav (as for the teacher); any
other row uses the teacher's rendering of the same task (its ``src.flac``, else its decoded audio),
which this job stores as the sample's ``src.flac``. With the reference teacher that is exactly
what the teacher's own SS was measured against, so the two figures compare.

Less noise: ``samples=K`` generates each prompt K times with seeds of its own
(:func:`pipelines.eval_prompts.with_samples`), and ``teacher=SPEC`` has the teacher voice the same
prompts and seeds through the same codec into ``OUT/teacher`` (a run of its own, filtered with the
same config and speaker references), so the student-vs-teacher ratio compares like with like.
A packed Whisper reads every row of both twice, in its packed window and alone, and the better
read scores it (:func:`filters.asr.read_twice`): a packed window can hand a row its neighbour's
words, and tiny.en reads a short clip alone worse than in context.
``eval.json["stats"]`` holds each metric's mean over prompts with a 95% interval and the ratio's
(:mod:`pipelines.eval_stats`).
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from distill.config import SAMPLING_KEYS
from engine import __version__
from engine.device import has_cuda
from engine.lm.vllm_engine import VLLM_HINT
from filters.asr import read_twice
from filters.config import FilterConfig
from manifests import RunDir, RunError, UserError, read_sample, write_json
from manifests.digest import model_dir_fingerprint
from manifests.stage import Stage
from pipelines.eval_lists import NORMALISATION, lists_report, read_inputs
from pipelines.eval_prompts import Prompt, prompts_hash, with_samples
from pipelines.eval_report import aggregate, eval_rows
from pipelines.eval_stats import score_stats
from pipelines.filter_job import filter_run, load_config
from pipelines.identity import claim_run, identify, utc_now
from pipelines.synthesize import Lineage, next_work, run_synthesis, synthesis_stages

ENGINES = ("auto", "torch", "vllm")
STUDENT_TYPES = ("step1", "llama")


class TeacherReference(Stage):
    """Stores the teacher's rendering of each task as the sample's ``src.flac`` (the speaker
    reference of non-clone rows).

    Args:
        references: task id -> ``[teacher shard path, byte offset]``.
    """

    name = "teacher-reference"

    def __init__(self, references: dict):
        self.references = references

    def process(self, records: list[dict]) -> list[dict]:
        out = []
        for r in records:
            where = self.references.get(r["id"])
            if where and not r["error"]:
                r = {**r, "members": {**r["members"], "src.flac": teacher_audio(*where)}}
            out.append(r)
        return out


def evaluation_stages(teacher: str, codec: str = "melvq", references: dict | None = None) -> list[Stage]:
    """The synthesize stages plus :class:`TeacherReference`."""
    return synthesis_stages(teacher, codec) + [TeacherReference(references or {})]


def teacher_audio(shard: str, offset: int) -> bytes:
    """The teacher's source rendering of a sample, else its decoded audio (b"" when unreadable)."""
    try:
        members = read_sample(shard, int(offset))
    except (OSError, ValueError, KeyError):
        return b""
    return members.get("src.flac") or members.get("flac") or b""


def evaluate_student(student: str | Path, prompts: str | Path | None, out: str | Path, *, engine: str = "auto",
                     filter_config=None, limit: int | None = None, max_seconds: float | None = None,
                     sampling: dict | None = None, progress: bool = True, ray_address=None,
                     codec: str = "melvq", samples: int = 1, teacher: str | None = None, lists=None) -> dict:
    """Generate the prompts with the student, decode, filter, and write ``out/eval.json``.

    Args:
        student: a student checkpoint dir (``engine.models.export``: step1 or llama).
        prompts: JSONL of tasks with optional teacher scores (:mod:`pipelines.eval_prompts`),
            or None when ``lists`` are given.
        out: the eval run directory (created, or resumed).
        engine: ``auto`` (vllm on CUDA; on CPU vllm for a RoPE student when vLLM is installed,
            else the torch engine), ``torch`` or ``vllm``.
        filter_config: a filter YAML path, a dict of filter keys or a ``FilterConfig``; it
            overrides the thresholds of the teacher run's spec (the default), else the defaults.
        limit: evaluate only the first N prompts. max_seconds: audio length cap per prompt
            (default: the LM teacher's, 30 s).
        sampling: decoding options of the LM teacher (``temperature``, ``top_k``, ``top_p``;
            default upstream's: temperature 0.7, no top-k or nucleus).
        codec: the codec that decodes the student's tokens: ``melvq`` (shipped) or a weights
            file. It must be the one the student's corpus was tokenized with, which distill
            records in ``STUDENT/train.json``; another one is refused.
        lists: seed-tts-eval test lists (``FILE.lst`` or ``FILE.lst:LANG``, see
            :mod:`pipelines.eval_lists`): their lines are clone prompts after the prompts file's,
            and ``eval.json["lists"]`` gives each list's seed-tts-eval WER/CER and SS.
        samples: seeded generations per prompt (sample 0 is the prompt's own seed).
        teacher: a teacher spec (``reference``, ``torch:DIR``, ...) that voices the same prompts
            and seeds in ``out/teacher``; it should be the one that made the prompts' runs.
    Returns:
        the eval.json content (see :mod:`pipelines.eval_report` for ``rows`` and ``aggregate``).
    Raises:
        UserError: bad prompts, not a student dir, an engine that cannot run it, or an ``out``
            made for another student, prompts or generation settings (one line each).
    """
    student, student_type = check_student(student)
    if limit is not None and limit < 1:
        raise UserError(f"limit must be at least 1, got {limit}")
    if max_seconds is not None and not max_seconds > 0:
        raise UserError(f"max_seconds must be > 0, got {max_seconds}")
    records, skipped, tests = read_inputs(prompts, lists)
    everything = with_samples(records, samples)
    kind = pick_engine(student_type, engine)
    spec = generator_spec(kind, student, max_seconds, sampling)
    generator, codec_ = identify(spec, codec)
    check_codec(student, codec_)
    runs = teacher_runs(records, Path(prompts or "."))
    run = RunDir(out)
    identity = {**_identity(student, student_type, prompts, records, generator, kind, codec_), "samples": samples}
    if tests:
        identity["lists"] = [f"{t.path}:{t.lang}" for t in tests]
    voicing = identify(teacher, codec)[0] if teacher else None
    if voicing is not None:
        _check_teacher(voicing, runs)
    with run.lock():
        _claim(run, identity, everything, runs)
        if run.recover():
            print("recovered: removed uncommitted shards of an interrupted eval", file=sys.stderr)
        config = _filter_config(run, filter_config)  # a bad config fails before any generation
        wanted = with_samples(records[:limit] if limit else records, samples)
        refs = _references(wanted, runs)
        generated = _generate(run, wanted, len(everything), spec, generator, codec_, codec, refs, progress,
                              ray_address)
        filter_run(run, config, ray_address, progress, quiet=True)
        voiced = None
        if voicing is not None:
            voiced = _voice_teacher(run, teacher, voicing, identity, everything, wanted, codec_, codec, refs,
                                    config, progress, ray_address)
        report = {**_report(run, identity, records, wanted, skipped, config, voiced), "generated_now": generated}
        report.update(lists=lists_report(tests, report["rows"]), normalisation=NORMALISATION)
        write_json(run.path / "eval.json", report)
        run.update_stage("eval", status="done", rows=len(report["rows"]), eval_json="eval.json",
                         finished_at=utc_now())
    return report


# -- inputs --------------------------------------------------------------------------------------

def generator_spec(kind: str, student: Path, max_seconds: float | None, sampling: dict | None) -> str:
    """The LM teacher spec that generates with the student, e.g. ``torch:/s?temperature=0.3``."""
    options = {**({"max_seconds": f"{max_seconds:g}"} if max_seconds else {}), **_sampling(sampling)}
    return f"{kind}:{student}" + ("?" + "&".join(f"{k}={v}" for k, v in options.items()) if options else "")


def _identity(student: Path, student_type: str, prompts, records: list[Prompt], generator, kind: str,
              codec) -> dict:
    """What an eval run is made of (its run.json identity; a rerun must match it)."""
    return {"kind": "eval", "student": str(student), "student_type": student_type,
            "student_fingerprint": student_fingerprint(student), "prompts_path": prompts and str(prompts),
            "prompts_hash": prompts_hash(records), "teacher": generator.id, "engine": kind,
            "max_seconds": generator.options["max_seconds"], "codec": codec.version,
            "sampling": {k: generator.options[k] for k in SAMPLING_KEYS}}


def _sampling(sampling: dict | None) -> dict[str, str]:
    """Decoding options as LM teacher spec options; ValueError on an unknown one."""
    out = {}
    for key, value in (sampling or {}).items():
        if key not in SAMPLING_KEYS:
            raise UserError(f"unknown sampling option {key!r} (choose {', '.join(SAMPLING_KEYS)})")
        if value is not None:
            out[key] = f"{value:g}" if isinstance(value, float) else str(value)
    return out


def check_student(path: str | Path) -> tuple[Path, str]:
    """(absolute dir, model type) of a student checkpoint; ValueError when it is not one."""
    path = Path(path)
    config = path / "config.json"
    if not path.is_dir():
        raise UserError(f"{path}: no such student directory")
    if not config.is_file():
        raise UserError(f"{path} is not a student checkpoint (no config.json)")
    try:
        kind = json.loads(config.read_text()).get("model_type", "")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        raise UserError(f"{config}: not a valid config.json") from None
    if kind not in STUDENT_TYPES:
        raise UserError(f"{path} is not a student checkpoint (model_type {kind!r}, expected "
                         f"{' or '.join(STUDENT_TYPES)})")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise UserError(f"{path} is not a student checkpoint (no weights)")
    return path.resolve(), kind


def check_codec(student: Path, codec) -> None:
    """Refuse a codec other than the one the student's training corpus was tokenized with: the same
    ids mean different sounds under other codebooks. The codec is recorded in
    ``STUDENT/train.json`` by distill; for students trained before that record, the ``run.json``
    of the corpus runs that train.json lists. A student with neither is not checked."""
    try:
        info = json.loads((Path(student) / "train.json").read_text())
        trained = info.get("codec")
        if not trained and info.get("runs"):
            trained = json.loads((Path(info["runs"][0]) / "run.json").read_text()).get("codec")
    except (OSError, ValueError, AttributeError, TypeError):
        return
    if trained and trained != codec.version:
        raise UserError(f"{student} was distilled from {trained} tokens, but the codec is {codec.version}; "
                         f"pass the --codec whose version is {trained} (a melvq weights file or stepaudio:DIR)")


def pick_engine(student_type: str, engine: str = "auto") -> str:
    """The LM engine kind for a student: see :func:`evaluate_student`."""
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r} (choose {', '.join(ENGINES)})")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if engine == "vllm" and not has_vllm:
        raise UserError(f"engine vllm: vLLM is not installed; {VLLM_HINT}")
    if engine != "auto":
        return engine
    if has_vllm and (has_cuda() or student_type == "llama"):
        return "vllm"
    return "torch"


def student_fingerprint(path: Path) -> str:
    """A hash of config.json, the tokenizer and the weights (as LM teacher ids fingerprint them)."""
    return model_dir_fingerprint(path)


def teacher_runs(prompts: list[Prompt], prompts_path: Path) -> dict[str, RunDir | None]:
    """Each ``teacher.run`` of the prompts -> its run dir (relative paths: from the working dir,
    then from the prompts file's folder); None, with one warning, when it is not a run."""
    runs: dict[str, RunDir | None] = {}
    for p in prompts:
        name = p.teacher.get("run")
        if not name or name in runs:
            continue
        path = Path(name)
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, prompts_path.parent / path]
        runs[name] = next((RunDir(c.resolve()) for c in candidates if (c / "run.json").is_file()), None)
        if runs[name] is None:
            print(f"eval: teacher run {name} not found; its rows get no speaker reference "
                  "and the default filter thresholds", file=sys.stderr)
    return runs


def _references(prompts: list[Prompt], runs: dict) -> dict[str, list]:
    """task id -> [teacher shard, offset] of the teacher's sample (accepted attempt first); every
    seeded sample of a prompt gets its prompt's."""
    rows: dict[str, dict] = {}
    for name, run in runs.items():
        if run is None:
            continue
        for r in run.current_table().to_pylist():
            if r["status"] != "ok" or not r["shard"]:
                continue
            key = (name, r["id"])
            best = rows.get(key)
            if best is None or (bool(r["accepted"]), r["attempt"]) > (bool(best["accepted"]), best["attempt"]):
                rows[key] = {**r, "path": str(run.path / r["shard"])}
    out = {}
    for p in prompts:
        row = rows.get((p.teacher.get("run"), p.prompt_id or p.task.id))
        if row:
            out[p.task.id] = [row["path"], int(row["offset"])]
    return out


# -- the run -------------------------------------------------------------------------------------

def _claim(run: RunDir, identity: dict, prompts: list[Prompt], runs: dict) -> None:
    """Create the eval run, or check that ``run`` was made for this student, prompts and engine."""
    section, source = _teacher_filter(runs)
    claim_run(run, [p.task for p in prompts], {**identity, "spec_hash": identity["prompts_hash"]},
              lambda info: _check_same(run, info, identity),
              refresh={"spec": {"filter": section}, "filter_from": source})


def _teacher_filter(runs: dict) -> tuple[dict, str | None]:
    """The filter section of the first teacher run whose spec has one, and that run's path."""
    for run in runs.values():
        section = (run.info().get("spec") or {}).get("filter") if run is not None else None
        if section:
            return section, str(run.path)
    return {}, None


def _check_same(run: RunDir, info: dict, identity: dict) -> None:
    if info.get("kind") != "eval":
        raise RunError(f"{run.path} is a stepforge run that is not an eval; use another --out")
    if info.get("student_fingerprint") != identity["student_fingerprint"]:
        raise RunError(f"{run.path} evaluates another student ({info.get('student')}, fingerprint "
                       f"{info.get('student_fingerprint')}; this is {identity['student_fingerprint']}); "
                       "use another --out")
    if info.get("samples", 1) != identity["samples"]:
        raise RunError(f"{run.path} was made with {info.get('samples', 1)} sample(s) per prompt, not "
                       f"{identity['samples']}; use the same --samples or another --out")
    if info.get("prompts_hash") != identity["prompts_hash"]:
        raise RunError(f"{run.path} was made from other prompts ({info.get('prompts_path')}, hash "
                       f"{info.get('prompts_hash')}; these hash {identity['prompts_hash']}); use another --out")
    if info.get("teacher") != identity["teacher"]:
        raise RunError(f"{run.path} was generated with {info.get('teacher')} (engine {info.get('engine')}, "
                       f"max_seconds {info.get('max_seconds')}, sampling {info.get('sampling')}), not "
                       f"{identity['teacher']}; use the same --engine, --max-seconds and sampling, or another --out")


def _generate(run: RunDir, wanted: list[Prompt], total_prompts: int, spec: str, generator, codec,
              codec_spec: str, references: dict, progress: bool, address) -> int:
    """Generate the prompts without a manifest row; returns how many were generated."""
    todo = next_work(run, [p.task for p in wanted])
    if todo:
        lineage = Lineage(spec_hash=run.info()["prompts_hash"], teacher_id=generator.id,
                          codec_version=codec.version, stepforge_version=__version__)
        stats = run_synthesis(run, todo, spec, lineage, codec=codec_spec, resources=generator.resources,
                              batch_size=generator.batch_size, address=address, progress=progress,
                              stages=evaluation_stages, stage_kwargs={"references": references})
        total = run.info().get("stages", {}).get("eval", {}).get("generation") or {}
        for key in ("tasks", "errors", "wall_s", "audio_s"):
            total[key] = round(total.get(key, 0) + stats[key], 2)
        total["audio_s_per_wall_s"] = round(total["audio_s"] / total["wall_s"], 3) if total["wall_s"] else None
        run.update_stage("eval", status="generated", generation=total)
        print(f"eval: generated {stats['tasks']} prompts ({stats['errors']} errors) with {generator.id} in "
              f"{stats['wall_s']} s: {stats['audio_s_per_wall_s']} audio s per wall s")
    else:
        print("eval: nothing to generate, every prompt has a manifest row")
    table = run.consolidate()
    done = len(set(table.column("id").to_pylist()))
    run.update_stage("synthesize", status="done" if done >= total_prompts else "partial",
                     tasks_done=done, rows=table.num_rows, total=total_prompts, finished_at=utc_now())
    return len(todo)


def _check_teacher(teacher, runs: dict) -> None:
    """Warn when the teacher voicing the prompts is not the one that made the prompts' runs."""
    made = {run.info().get("teacher") for run in runs.values() if run is not None}
    if made and made != {teacher.id}:
        print(f"eval: the teacher voicing the prompts is {teacher.id}, the prompts' runs were made by "
              f"{', '.join(sorted(map(str, made)))}", file=sys.stderr)


def _voice_teacher(run: RunDir, spec: str, teacher, identity: dict, everything: list[Prompt],
                   wanted: list[Prompt], codec, codec_spec: str, references: dict, config, progress: bool,
                   address) -> list[dict]:
    """The teacher voices the eval's prompts and seeds into ``run/teacher`` (the same stages,
    codec, speaker references and filter config as the student); returns its manifest rows."""
    sub = RunDir(run.path / "teacher")
    mine = {**{k: identity[k] for k in ("prompts_path", "prompts_hash", "codec", "samples")},
            "kind": "eval-teacher", "teacher": teacher.id, "spec_hash": identity["prompts_hash"]}

    def same(info: dict) -> None:
        changed = [k for k, v in mine.items() if info.get(k) != v]
        if changed:
            raise RunError(f"{sub.path} was voiced with other {', '.join(changed)} "
                           f"({', '.join(f'{k}={info.get(k)}' for k in changed)}); use another --out")

    with sub.lock():
        claim_run(sub, [p.task for p in everything], mine, same,
                  refresh={"spec": {"filter": run.info().get("spec", {}).get("filter") or {}}})
        if sub.recover():
            print("recovered: removed uncommitted shards of an interrupted teacher eval", file=sys.stderr)
        _generate(sub, wanted, len(everything), spec, teacher, codec, codec_spec, references, progress, address)
        filter_run(sub, config, address, progress, quiet=True)
        return sub.read_manifest().to_pylist()


def _filter_config(run: RunDir, filter_config):
    """The filter config: ``filter_config`` over the teacher run's thresholds (run.json spec.filter)."""
    if filter_config is None or isinstance(filter_config, (str, Path)):
        config = load_config(run, str(filter_config) if filter_config else None)
    elif isinstance(filter_config, FilterConfig):
        config = filter_config
    elif isinstance(filter_config, dict):
        base = run.info().get("spec", {}).get("filter") or {}
        config = FilterConfig.from_dict({**base, **filter_config}, "filter_config")
    else:
        raise TypeError(f"filter_config must be a path, a dict or a FilterConfig, not "
                        f"{type(filter_config).__name__}")
    source = str(filter_config) if isinstance(filter_config, (str, Path)) else (
        "filter_config" if filter_config is not None else None)
    run.update_stage("eval", filter_from=source or run.info().get("filter_from") or "defaults")
    # a data filter stops at the first rejection; an eval wants every score of every row, each
    # row read twice (packed and alone) so that no row's score hangs on the rows packed beside it
    return config.overridden(score_rejected=True, asr=read_twice(config.asr))


def _report(run: RunDir, identity: dict, records: list[Prompt], wanted: list[Prompt], skipped: int,
            config, voiced: list[dict] | None = None) -> dict:
    info = run.info()
    manifest = run.read_manifest().to_pylist()
    rows = eval_rows(wanted, manifest, voiced)
    mine = {p.task.id for p in wanted}
    scored = [r for r in manifest if r["id"] in mine]
    return {
        **{k: identity[k] for k in ("student", "student_type", "student_fingerprint", "engine",
                                    "max_seconds", "prompts_hash", "codec", "sampling")},
        "generator": identity["teacher"], "prompts": identity["prompts_path"],
        "n_prompts": len({r["prompt_id"] for r in rows}), "n_prompts_in_file": len(records),
        "duplicates_skipped": skipped, "samples": identity["samples"], "n_rows": len(rows),
        "run": str(run.path),
        "filter": {"config_hash": config.hash, "max_cer": config.max_cer, "min_ss": config.min_ss,
                   "from": info["stages"]["eval"]["filter_from"], "asr": config.asr},
        "asr_models": sorted({r["asr_model"] for r in scored if r["asr_model"]}),
        "ss_model": next((r["ss_model"] for r in scored if r["ss_model"]), None),
        "generation": info.get("stages", {}).get("eval", {}).get("generation") or {},
        "aggregate": aggregate(rows),
        "teacher_eval": None if voiced is None else _voiced_summary(run),
        "stats": score_stats(rows, identity["samples"], "teacher" if voiced is None else "teacher_eval"),
        "rows": rows,
        "created_at": utc_now(),
    }


def _voiced_summary(run: RunDir) -> dict:
    info = RunDir(run.path / "teacher").info()
    return {"teacher": info.get("teacher"), "run": str(run.path / "teacher"),
            "generation": info.get("stages", {}).get("eval", {}).get("generation") or {}}
