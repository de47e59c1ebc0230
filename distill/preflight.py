"""Pre-flight: every check that can refuse a distillation before a training process starts.

    ready = preflight(cfg, ["runs/a"], Path("STUDENT"), world=1)   # DataError: one line, bad input
    ready.train, ready.heldout, ready.plan, ready.model_config

``stepforge distill`` runs it in the driver, so bad input fails there in one line; the recipe's
setup runs the data part again (:func:`build_data`, :func:`check_checkpoint`) on every rank, so a
recipe launched by hand fails the same way. What is checked, and by whom:

- the config: unknown keys, types, ranges (``distill.config.load_config``, when it is parsed);
- the runs: missing, empty, unfiltered or all-rejected runs, runs tokenized by different codecs
  (``distill.data.Corpus.load``);
- the student against the data: audio codebooks that are not the shards' (``SequenceBuilder``),
  a vocab smaller than its token layout (:func:`check_vocab`), ``student.init`` of another
  architecture (:func:`student_config`);
- packing: a sequence longer than ``data.max_tokens`` (``PackPlan``), held-out rows that leave
  nothing to train on (``Corpus.split``), data that cannot fill ``train.grad_accum`` micro-batches
  (:func:`build_data`);
- resuming: a checkpoint in STUDENT trained as another student (:func:`check_checkpoint`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from distill.checkpoints import STAMP, CheckpointDir, read_stamp
from distill.config import ConfigError, model_fingerprint
from distill.data import Corpus, DataError, PackPlan, PreviousSplit, SequenceBuilder
from engine.lm.text_tokenizer import load_tokenizer
from engine.models import LlamaStudentConfig, Step1Config
from engine.models.export import model_type


@dataclass
class Ready:
    """What pre-flight found: the student's config and text side, and the data it trains on."""

    model_config: object  # Step1Config | LlamaStudentConfig
    tokenizer: object     # engine.prompts text tokenizer
    train: Corpus
    heldout: Corpus
    plan: PackPlan


def preflight(cfg: dict, runs: list[str], out: Path, world: int) -> Ready:
    """Run every check for training ``cfg`` on ``runs`` into ``out`` on ``world`` ranks.

    Raises:
        DataError: the student, the runs or a checkpoint in ``out`` cannot work together.
    """
    model_config = student_config(cfg)
    tokenizer, layout = student_text(model_config, cfg["student"]["init"])
    check_vocab(model_config, layout)
    train, heldout, plan = build_data(cfg, runs, tokenizer, layout, world)
    check_resume(out, cfg)
    return Ready(model_config, tokenizer, train, heldout, plan)


def student_config(cfg: dict):
    """The student's model config without building the model (cheap checks in the driver).

    Raises:
        DataError: ``student.init`` is no student dir, or one of another architecture.
    """
    s = cfg["student"]
    cls = Step1Config if s["arch"] == "step1" else LlamaStudentConfig
    if not s["init"]:
        check_overrides(cls, s["overrides"])
        try:
            return cls.preset(s["preset"], **s["overrides"])
        except (ValueError, ArithmeticError) as exc:  # fields that do not fit together
            raise ConfigError(f"student.overrides: {exc}") from None
    try:
        kind = model_type(s["init"])
    except ValueError as exc:
        raise DataError(f"student.init: {exc}") from None
    if (kind == "step1") != (s["arch"] == "step1"):
        raise DataError(f"student.init {s['init']} is a {kind or 'non-student'} checkpoint but "
                        f"student.arch is {s['arch']}")
    return cls.from_pretrained(s["init"])


def check_overrides(cls, overrides: dict) -> None:
    """Each of ``student.overrides`` names a field of ``cls`` and has its default's type (numbers
    >= 0: sizes, ids and epsilons)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name != "extra"}
    for key, value in overrides.items():
        if key not in defaults:
            raise ConfigError(f"student.overrides: unknown field {key!r} (known: {', '.join(defaults)})")
        default = defaults[key]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, (int, float)):
            kinds = int if isinstance(default, int) else (int, float)
            ok = isinstance(value, kinds) and not isinstance(value, bool) and 0 <= value < 2**31
        else:
            ok = default is None or isinstance(value, type(default))
        if not ok:
            raise ConfigError(f"student.overrides.{key} must look like {default!r}, got {value!r}")


def student_text(model_config, init: str | None):
    """``(tokenizer, layout)`` of the student: its text tokenizer and audio id layout."""
    return load_tokenizer(init, model_config.to_dict())


def check_vocab(model_config, layout) -> None:
    if model_config.vocab_size < layout.vocab_size:
        raise DataError(f"the student's vocab_size {model_config.vocab_size} is smaller than its "
                        f"token layout ({layout.vocab_size} ids)")


def build_data(cfg: dict, runs: list[str], tokenizer, layout, world: int):
    """``(train, heldout, plan)`` for this config on ``world`` ranks.

    Raises:
        DataError: the runs cannot feed this student, or cannot fill one optimizer step.
    """
    d = cfg["data"]
    corpus = Corpus.load(runs, SequenceBuilder(layout, tokenizer))
    # a student continued from another keeps its held-out texts (distill.data module docstring)
    train, heldout = corpus.split(d["heldout"], cfg["train"]["seed"], PreviousSplit.read(cfg["student"]["init"]))
    plan = PackPlan(train, d["max_tokens"], cfg["train"]["seed"], d["buffer"], d["share_prefix"])
    have, need = plan.steps_per_epoch(world), cfg["train"]["grad_accum"]
    if have < need:
        raise DataError(f"{len(train)} training rows pack into {have} micro-batch(es) per rank per "
                        f"epoch on {world} rank(s), fewer than train.grad_accum={need}; lower "
                        "train.grad_accum or data.max_tokens")
    return train, heldout, plan


def check_resume(out: Path, cfg: dict) -> None:
    """The checkpoint a rerun into ``out`` would resume from (if any) is this config's student."""
    checkpoints = CheckpointDir(Path(out) / "checkpoints")
    tag = checkpoints.latest()
    if tag is not None:
        check_checkpoint(checkpoints.root / tag, cfg)


def check_checkpoint(tag_dir: Path, cfg: dict) -> dict:
    """The checkpoint's stamp; DataError when it was trained with another student section."""
    stamp = read_stamp(tag_dir)
    if stamp is None:
        raise DataError(f"{tag_dir} is not a stepforge checkpoint (no readable {STAMP})")
    if stamp.get("fingerprint") != model_fingerprint(cfg):
        raise DataError(f"{tag_dir} was trained as student {stamp.get('student')}, not "
                        f"{cfg['student']}; use another --out or the same student section")
    return stamp
