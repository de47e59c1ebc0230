"""Fuzzed config parsers: the generation spec, the filter config, the distill config and the
pipeline YAML either parse or raise ``UserError`` with a one-line message (the pipeline's one
line per problem); never another exception, and via the CLI exit 2 with no traceback.

Inputs are YAML-shaped data (random keys, wrong types, nested junk, unicode, huge, negative and
NaN numbers) and mutations of the shipped configs (pipelines/configs/*.yaml), as data and as text.
``make test`` runs a bounded number of examples per property; more, for a long hunt:

    STEPFORGE_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest -q tests/pipelines/test_config_fuzz.py
"""
from __future__ import annotations

import copy
import datetime
import json
import math
import os
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[dev]')")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from distill.config import load_config as load_distill_config  # noqa: E402
from distill.config import resolve  # noqa: E402
from distill.preflight import student_config  # noqa: E402
from engine.spec import GenerationSpec  # noqa: E402
from filters.config import FilterConfig  # noqa: E402
from manifests.errors import UserError  # noqa: E402
from pipelines.cli import main as cli_main  # noqa: E402
from pipelines.filter_job import spec_filter_config  # noqa: E402
from pipelines.pipeline_config import load_pipeline  # noqa: E402
from tests.conftest import CONFIGS, stepforge  # noqa: E402

EXAMPLES = int(os.environ.get("STEPFORGE_FUZZ_EXAMPLES", "120"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize="STEPFORGE_FUZZ_SEED" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
SPEC_FILES = ["tiny.yaml", "builtin.yaml", "quotas_example.yaml", "corpus_en.yaml", "corpus_en_basic.yaml"]
PIPELINE_FILES = ["pipeline_tiny.yaml", "quickstart.yaml"]
DISTILL_FILES = ["distill_tiny.yaml", "distill_cpu.yaml", "distill_cpu_more.yaml"]
# A spec with every kind of source and cloning, beside texts the fixture writes.
CLONE_SPEC = {"name": "clone", "seed": 2, "count": 6,
              "texts": [{"file": "lines.txt", "lang": "en", "limit": 5}, {"file": "rows.jsonl"}],
              "categories": {"speaker": {"none": 1, "amy": 1}, "emotion": ["neutral", "sad"]},
              "quotas": [{"style": "rap", "lang": "en", "count": 1}],
              "clone": {"speakers": "builtin"}}
# words the parsers look for, so random data reaches past the first key check
WORDS = ["name", "seed", "count", "texts", "builtin", "file", "dataset", "lang", "limit", "column", "split",
         "categories", "emotion", "intensity", "dialect", "style", "speed", "speaker", "quotas", "clone",
         "speakers", "share", "filter", "max_cer", "min_ss", "per_style", "per_dialect", "min_dnsmos_ovrl",
         "adherence", "asr", "no_asr", "quality", "workers", "batch_size", "ss_threads", "score_rejected",
         "default_no_asr", "max_silence", "backend", "model", "tolerance_st", "spec", "synthesize", "distill",
         "eval", "teacher", "codec", "attempts", "prompts", "max_seconds", "temperature", "top_k", "top_p",
         "student", "arch", "preset", "init", "overrides", "data", "max_tokens", "heldout", "loss", "kd_ratio",
         "train", "steps", "lr", "warmup_steps", "betas", "zero_stage", "precision", "export", "sampling",
         "logging", "config", "en", "zh", "ja", "en-basic", "neutral", "happy", "rap", "humming", "cantonese",
         "english", "mandarin", "normal", "fast1", "none", "amy", "reject", "unscored", "tiny", "step1",
         "llama", "bf16", "best", "tiny.yaml", "distill_tiny.yaml", "lines.txt", "rows.jsonl", "../",
         "", " ", "null", "1e-3", "5", "-1", "\u4eca\u5929", "\x00", "\U0001f600", "\u202e"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-3, 300),
    st.sampled_from([10**30, -10**30, 2**63, 2**64 + 1, -(2**63) - 1]),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]),
    st.text(max_size=12), st.sampled_from(WORDS), st.dates(),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=6), st.integers(-2, 6), st.booleans(), st.none(),
                 st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=4)),
                      max_leaves=10)


def _load_yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))


@st.composite
def mutated(draw, bases: dict):
    """One of ``bases`` (name -> data) with 1-4 random edits anywhere in the tree: a node
    replaced or deleted, or a key added."""
    doc = copy.deepcopy(draw(st.sampled_from(sorted(bases.items())))[1])
    for _ in range(draw(st.integers(1, 4))):
        _edit(draw, doc)
    return doc


def _edit(draw, node) -> None:
    """Edit inside the container ``node``: walk down to a random depth, then change one child."""
    while True:
        children = list(node) if isinstance(node, dict) else list(range(len(node)))
        action = draw(st.sampled_from(["descend"] * 3 + ["replace", "replace", "delete", "add"])) if children else "add"
        if action == "descend":
            key = draw(st.sampled_from(children))
            if isinstance(node[key], (dict, list)):
                node = node[key]
                continue
            action = "replace"
        if action == "add":
            value = draw(values)
            node.__setitem__(draw(keys), value) if isinstance(node, dict) else node.append(value)
        else:
            key = draw(st.sampled_from(children))
            if action == "replace":
                node[key] = draw(st.one_of(values, st.sampled_from(WORDS)))
            else:
                del node[key]
        return


@st.composite
def mangled_text(draw, names: list[str]):
    """A shipped YAML file's text with a few characters inserted, deleted or replaced."""
    text = (CONFIGS / draw(st.sampled_from(names))).read_text(encoding="utf-8")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 8))
        text = text[:i] + draw(st.one_of(st.text(max_size=6), st.sampled_from([":", "- ", "{", "]", "\n  ", "'", "&a", "*a", "!!python/object:os.system"]))) + text[i + cut:]
    return text


def user_error_line(exc: UserError, lines: str = "one") -> str:
    msg = str(exc)
    assert msg.strip(), "empty UserError message"
    if lines == "one":
        assert "\n" not in msg, f"UserError message spans lines: {msg!r}"
    else:
        assert all(line.strip() for line in msg.split("\n")), f"empty line in {msg!r}"
    return msg


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz-spec")
    (d / "lines.txt").write_text("The first line.\nA second line here.\n\nThird one.\n", encoding="utf-8")
    (d / "rows.jsonl").write_text('{"text": "One row."}\n{"text": "\u4eca\u5929\u5929\u6c14\u5f88\u597d", "lang": "zh"}\n',
                                  encoding="utf-8")
    for name in ["tiny.yaml", "distill_tiny.yaml", "builtin.yaml"]:
        (d / name).write_text((CONFIGS / name).read_text(encoding="utf-8"), encoding="utf-8")
    return d


SPEC_BASES = {**{n: _load_yaml(n) for n in SPEC_FILES}, "clone": CLONE_SPEC}


def check_spec(data, base_dir: Path, file="<fuzz>"):
    """The property for one spec: what synthesize does before touching the run directory."""
    try:
        spec = GenerationSpec.from_dict(data, file=file, base_dir=base_dir)
        spec_filter_config(spec)
        spec.hash, spec.to_dict()
        if spec.count <= 300:
            spec.expand()
    except UserError as exc:
        return user_error_line(exc)
    return None


@FUZZ
@given(data=st.one_of(mutated(SPEC_BASES), values))
@example(data={"count": 3, "texts": [{"builtin": "en"}], "categories": {"emotion": {"happy": math.nan}}})
@example(data={"count": 3, "texts": [{"builtin": "en"}], "\n": None})  # a two-line message
@example(data={"count": 3, "texts": [{"file": "a\x00b"}]})
def test_spec_data(spec_dir, data):
    check_spec(data, spec_dir)


@FUZZ
@given(text=mangled_text(SPEC_FILES))
def test_spec_text(spec_dir, text):
    path = spec_dir / "fuzz-spec.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        GenerationSpec.load(path)
    except UserError as exc:
        user_error_line(exc)


FILTER_BASES = {"default": {}, "tiny": _load_yaml("tiny.yaml")["filter"],
                "full": {"max_cer": 0.3, "per_style": {"rap": 0.5, "humming": None}, "per_dialect": {"mandarin": 0.9},
                         "min_ss": 0.5, "min_dnsmos_ovrl": 2.0, "adherence": {"emotion": {"tolerance_st": 1.5}, "rap": None},
                         "asr": {"en": {"backend": "faster-whisper", "model": "tiny.en"}}, "no_asr": {"fr": "unscored"},
                         "quality": {"max_silence": 0.6, "max_clipping": 0.01}, "workers": 2, "score_rejected": True}}


def check_filter(data):
    try:
        config = FilterConfig.from_dict(data, "fuzz.yaml")
        config.hash
        config.build_chain()
        config.overridden(max_cer=0.5, workers=1)
    except UserError as exc:
        return user_error_line(exc)
    return None


@FUZZ
@given(data=st.one_of(mutated(FILTER_BASES), values))
def test_filter_config(data):
    check_filter(data)


DISTILL_BASES = {"empty": {}, **{n: _load_yaml(n) for n in DISTILL_FILES}}
overrides = st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["train.lr", "train.steps", "train", "student.overrides",
                                                        "data.heldout", "loss.kd_ratio", "a..b", "", "eval.sampling"]),
              st.one_of(st.text(max_size=8), st.sampled_from(["1e-3", "[1, {", "{a: 1}", "-5", ".nan", "null", "'"]))),
    st.text(max_size=10)), max_size=3)


@FUZZ
@given(data=st.one_of(mutated(DISTILL_BASES), values), items=overrides)
def test_distill_config(tmp_path_factory, data, items):
    path = tmp_path_factory.mktemp("fuzz-distill", numbered=True) / "distill.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    for call in (lambda: resolve([data]), lambda: load_distill_config(path, items)):
        try:
            student_config(call())  # the driver's check of the student fields
        except UserError as exc:
            user_error_line(exc)


PIPELINE_BASES = {n: _load_yaml(n) for n in PIPELINE_FILES}
PIPELINE_BASES["inline"] = {**_load_yaml("pipeline_tiny.yaml"), "spec": _load_yaml("tiny.yaml")}


def check_pipeline(path: Path):
    try:
        load_pipeline(path)
    except UserError as exc:
        return user_error_line(exc, lines="many")
    return None


@FUZZ
@given(data=st.one_of(mutated(PIPELINE_BASES), values))
@example(data={"spec": "\x00"})  # ValueError: embedded null byte
@example(data={"spec": "tiny.yaml", "eval": {"prompts": "a\x00"}})
@example(data={"spec": "tiny.yaml", "distill": {"config": "\x00", "student": {"init": "\x00"}}})
@example(data={"spec": "tiny.yaml", "distill": {"train\n": 1}})
def test_pipeline_config(spec_dir, data):
    path = spec_dir / "fuzz-pipeline.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    check_pipeline(path)


@FUZZ
@given(text=mangled_text(PIPELINE_FILES + DISTILL_FILES))
def test_pipeline_and_distill_text(spec_dir, text):
    path = spec_dir / "fuzz-text.yaml"
    path.write_text(text, encoding="utf-8")
    check_pipeline(path)
    try:
        load_distill_config(path)
    except UserError as exc:
        user_error_line(exc)


CLI = settings(FUZZ, max_examples=max(10, EXAMPLES // 4))


def assert_cli_error(code: int, err: str, command: str, lines: str = "one"):
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith(f"stepforge {command}: error: "), err
    if lines == "one":
        assert len(err.strip().splitlines()) == 1, err


@CLI
@given(data=mutated(SPEC_BASES))
def test_cli_synthesize_and_filter_bad_configs(spec_dir, tmp_path_factory, capsys, data):
    """What fails to parse fails the CLI with exit 2 and one line (only bad inputs reach the CLI
    here: a good spec would start synthesizing)."""
    if check_spec(data, spec_dir, file=str(spec_dir / "cli-spec.yaml")) is not None:
        (spec_dir / "cli-spec.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        out = tmp_path_factory.mktemp("cli-run")
        code = cli_main(["synthesize", str(spec_dir / "cli-spec.yaml"), "--out", str(out / "run"), "--no-progress"])
        assert_cli_error(code, capsys.readouterr().err, "synthesize")
        assert not (out / "run").exists()  # refused before anything was written
    filt = data.get("filter") if isinstance(data.get("filter"), dict) else data
    if check_filter(filt) is not None:
        run = tmp_path_factory.mktemp("cli-filter")
        (run / "run.json").write_text(json.dumps({"spec": {"filter": {}}}), encoding="utf-8")
        (run / "filter.yaml").write_text(yaml.safe_dump(filt, allow_unicode=True), encoding="utf-8")
        code = cli_main(["filter", str(run), "--config", str(run / "filter.yaml"), "--no-progress"])
        assert_cli_error(code, capsys.readouterr().err, "filter")


@CLI
@given(data=mutated(PIPELINE_BASES))
def test_cli_run_and_distill_bad_configs(spec_dir, tmp_path_factory, capsys, data):
    path = spec_dir / "cli-pipeline.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    if check_pipeline(path) is not None:
        code = cli_main(["run", str(path), "--out", str(tmp_path_factory.mktemp("cli-pipe") / "run"), "--no-progress"])
        # a pipeline names every problem it found, one line each
        assert_cli_error(code, capsys.readouterr().err, "run", lines="many")
    distill = data.get("distill") if isinstance(data.get("distill"), dict) else data
    config = tmp_path_factory.mktemp("cli-distill") / "distill.yaml"
    config.write_text(yaml.safe_dump(distill, allow_unicode=True), encoding="utf-8")
    # no such run: a good config fails there, also with exit 2
    code = cli_main(["distill", str(config.parent / "no-run"), "--out", str(config.parent / "student"),
                     "--config", str(config)])
    assert_cli_error(code, capsys.readouterr().err, "distill")


# Inputs that once raised something else than UserError (found by the properties above), through
# the real CLI in a subprocess: exit 2, one line, no traceback.
REGRESSIONS = [
    ("synthesize", {"count": 3, "texts": [{"builtin": "en"}], "categories": {"emotion": {"happy": math.nan}}}),
    ("synthesize", {"count": 3, "texts": [{"builtin": "en"}], "categories": {"emotion": [[]]}}),
    ("synthesize", {"count": 10**30, "texts": [{"builtin": "en"}]}),
    ("filter", {"name": None, 0: None}),
    ("filter", True),
    ("filter", {"per_style": {"rap": "loose"}}),  # failed later, inside a filter actor
    ("distill", {"loss": {"kd_ratio": "high"}}),
    ("distill", {"train": {"warmup_steps": None}}),
    ("distill", {"student": {"overrides": {"num_attention_heads": 0}}}),
]


def test_cli_regressions_exit_2_with_one_line(tmp_path):
    for i, (command, data) in enumerate(REGRESSIONS):
        path = tmp_path / f"input-{i}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        if command == "synthesize":
            args = ["synthesize", path, "--out", tmp_path / f"run-{i}"]
        elif command == "filter":
            run = tmp_path / f"run-{i}"
            run.mkdir()
            (run / "run.json").write_text(json.dumps({"spec": {"filter": {}}}), encoding="utf-8")
            args = ["filter", run, "--config", path]
        else:
            args = ["distill", tmp_path / "no-run", "--out", tmp_path / f"student-{i}", "--config", path]
        if i == 0:
            proc = stepforge(*args)
            code, err = proc.returncode, proc.stderr
        else:  # the rest in-process: the same main(), without a second interpreter start
            import contextlib
            import io
            buf = io.StringIO()
            with contextlib.redirect_stderr(buf):
                code = cli_main(list(map(str, args)))
            err = buf.getvalue()
        assert_cli_error(code, err, command)


@pytest.mark.parametrize("kind", ["not-utf8", "directory"])
def test_unreadable_config_files_exit_2(tmp_path, capsys, kind):
    bad = tmp_path / "bad.yaml"
    if kind == "directory":
        bad.mkdir()
    else:
        bad.write_bytes(b"max_cer: \xff\xfe0.3\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"spec": {"filter": {}}}), encoding="utf-8")
    for command, args in (("run", [bad, "--out", tmp_path / "pipe"]), ("filter", [run, "--config", bad]),
                          ("distill", [run, "--out", tmp_path / "student", "--config", bad]),
                          ("synthesize", [bad, "--out", tmp_path / "synth"])):
        code = cli_main([command, *map(str, args)])
        assert_cli_error(code, capsys.readouterr().err, command)
