"""The pipeline YAML of ``stepforge run``: one file for every stage, or references to the usual ones.

    spec: tiny.yaml                 # a generation spec: a path (relative to this file) or inline
    synthesize:                     # optional; the `stepforge synthesize` flags
      teacher: reference
      codec: melvq
      attempts: 1                   # > 1: regenerate rejected tasks up to N attempts (filtering between)
    filter: {max_cer: 0.35}         # optional; over the spec's filter: section
    distill:                        # optional: config (a path) and/or sections that override it
      config: distill_tiny.yaml
      train: {steps: 20}
    eval:                           # optional; prompts default to the student's held-out rows
      prompts: prompts.jsonl
      lists: [seedtts/zh/meta.lst]  # seed-tts-eval test lists (FILE.lst[:LANG]), besides the prompts
      max_seconds: 10
      samples: 3                    # seeded generations per prompt: means with 95% CIs
      teacher: true                 # the teacher voices the same prompts in the eval (true: the
                                    # synthesize teacher; or a teacher spec)

Every error found is reported, one line each, in one :class:`~manifests.errors.UserError`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from distill.config import read_config_file, resolve
from engine.spec import GenerationSpec
from filters.config import FilterConfig
from manifests.errors import UserError
from pipelines.eval_lists import split_list_spec

TOP_KEYS = ("spec", "synthesize", "filter", "distill", "eval")
SYNTH_KEYS = {"teacher": str, "codec": str, "attempts": int, "limit": int, "workers": int,
              "batch_size": int, "shard_size": int}
EVAL_KEYS = {"prompts": str, "engine": str, "limit": int, "max_seconds": (int, float),
             "temperature": (int, float), "top_k": int, "top_p": (int, float), "codec": str,
             "samples": int, "teacher": (str, bool), "lists": list}


@dataclasses.dataclass
class Pipeline:
    """A checked pipeline. ``spec`` is loaded; ``distill`` is the resolved distill config."""

    path: Path
    spec: GenerationSpec
    spec_source: str            # the spec file, or the pipeline file for an inline spec
    synthesize: dict
    filter: dict                # the pipeline's filter keys (over the spec's)
    distill: dict
    eval: dict

    def filter_config(self) -> FilterConfig:
        return FilterConfig.from_dict({**(self.spec.config.filter or {}), **self.filter},
                                      f"{self.path}: filter")


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check the pipeline YAML at ``path``.

    Raises:
        UserError: one line per problem found (the file and the key named in each).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such pipeline file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read pipeline file ({exc.strerror if isinstance(exc, OSError) else exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a pipeline is a mapping with keys {', '.join(TOP_KEYS)}")
    errors = [f"{path}: unknown key {k!r} (allowed: {', '.join(TOP_KEYS)})" for k in data if k not in TOP_KEYS]
    base = path.parent
    spec, source = _spec(data.get("spec"), path, base, errors)
    synth = _flat(data.get("synthesize"), SYNTH_KEYS, f"{path}: synthesize", errors)
    synth = {"teacher": "reference", "codec": "melvq", "attempts": 1, "limit": None, "workers": None,
             "batch_size": None, "shard_size": 64, **synth}
    filt = _mapping(data.get("filter"), f"{path}: filter", errors)
    distill = _distill(data.get("distill"), path, base, errors)
    ev = _flat(data.get("eval"), EVAL_KEYS, f"{path}: eval", errors)
    if ev.get("prompts") and not ev["prompts"].isprintable():  # a NUL or newline: no file name
        errors.append(f"{path}: eval.prompts: not a file name: {ev['prompts']!r}")
    elif ev.get("prompts"):
        ev["prompts"] = str((base / ev["prompts"]).resolve())
        if not Path(ev["prompts"]).is_file():
            errors.append(f"{path}: eval.prompts: no such file {ev['prompts']}")
    if ev.get("lists") is not None:
        ev["lists"] = _lists(ev["lists"], f"{path}: eval.lists", base, errors)
    pipeline = Pipeline(path, spec, source, synth, filt, distill, ev)
    if spec is not None and not errors:
        try:
            pipeline.filter_config()
        except UserError as exc:
            errors.append(str(exc))
    if errors:
        raise UserError("\n".join(errors))
    return pipeline


def _spec(value, path: Path, base: Path, errors: list):
    try:
        if isinstance(value, str):
            return GenerationSpec.load(base / value), str((base / value).resolve())
        if isinstance(value, dict):
            return GenerationSpec.from_dict(value, file=f"{path}: spec", base_dir=base), str(path.resolve())
    except UserError as exc:
        errors.append(str(exc))
        return None, ""
    errors.append(f"{path}: spec must be a generation spec file or an inline spec mapping, got {value!r}")
    return None, ""


def _mapping(value, where: str, errors: list) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{where}: expected a mapping, got {value!r}")
        return {}
    return dict(value)


def _flat(value, types: dict, where: str, errors: list) -> dict:
    out = {}
    for key, v in _mapping(value, where, errors).items():
        if key not in types:
            errors.append(f"{where}: unknown key {key!r} (allowed: {', '.join(types)})")
        elif v is not None and ((isinstance(v, bool) and types[key] != (str, bool))
                                or not isinstance(v, types[key])):
            errors.append(f"{where}.{key}: expected {_type_name(types[key])}, got {v!r}")
        elif isinstance(v, int) and not isinstance(v, bool) and key not in ("temperature", "top_p") and v < 1:
            errors.append(f"{where}.{key}: must be at least 1, got {v}")
        else:
            out[key] = v
    return out


def _lists(value: list, where: str, base: Path, errors: list) -> list[str]:
    """``eval.lists`` entries ``FILE.lst[:LANG]`` with FILE made absolute (relative to ``base``)."""
    out = []
    for item in value:
        if not isinstance(item, str) or not item:
            errors.append(f"{where}: expected test list paths (FILE.lst or FILE.lst:LANG), got {item!r}")
            continue
        try:
            file, lang = split_list_spec(str(base / item))
        except UserError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if not file.is_file():
            errors.append(f"{where}: no such file {file.resolve()}")
        out.append(str(file.resolve()) + (f":{lang}" if lang else ""))
    return out


def _type_name(t) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _distill(value, path: Path, base: Path, errors: list) -> dict:
    sections = _mapping(value, f"{path}: distill", errors)
    layers = []
    config = sections.pop("config", None)
    try:
        if config is not None:
            layers.append(read_config_file(base / str(config)))
        layers.append(sections)
        cfg = resolve(layers)
    except UserError as exc:
        errors.append(f"{path}: distill: {exc}")
        return {}
    if cfg["student"]["init"]:
        cfg["student"]["init"] = str((base / cfg["student"]["init"]).resolve())
    return cfg
