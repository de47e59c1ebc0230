"""The distillation config: YAML sections with defaults, command-line overrides, validation.

    cfg = load_config("pipelines/configs/distill_tiny.yaml", ["train.lr=1e-3", "train.steps=50"])
    cfg["train"]["steps"]  # -> 50
    write_resolved(cfg, runs, Path("student"), world=1)     # student/distill.yaml, for the recipe
    cfg, runs, out = load_resolved("student/distill.yaml")  # in the recipe: parsed once

Every check that can fail without touching data or a model happens here, before any process is
launched, and names the key (the checks that need the runs or the student: distill.preflight).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path

import yaml

from manifests.atomic import atomic_path
from manifests.errors import UserError
from manifests.values import is_number

DEFAULTS: dict = {
    "student": {
        "arch": "step1",          # step1 (sqrt-ALiBi, the TTS-3B architecture) | llama (RoPE)
        "preset": "tiny",         # tts-3b | small | tiny (ignored with init)
        "init": None,             # an HF checkpoint dir to start from instead of a preset
        "overrides": {},          # config fields over the preset, e.g. {num_hidden_layers: 2}
    },
    "data": {
        "max_tokens": 4096,       # tokens per packed micro-batch (one row of sequences)
        "buffer": 256,            # shuffle buffer after the shard-level shuffle
        "share_prefix": True,     # one copy of the system turn per packed row (same math, ~3x fewer tokens)
        "heldout": 16,            # rows held out (whole texts) for eval and the student eval
    },
    "loss": {
        "kd_ratio": 0.0,          # weight of token-level KD (needs teacher top-k); 0 = pure CE
        "restricted_head": True,  # score only the codebook rows the 2:3 pattern allows
    },
    "train": {
        "steps": 200,             # optimizer steps in total (a resume continues to this)
        "lr": 2e-3,
        "min_lr_ratio": 0.1,      # cosine decays to lr * min_lr_ratio
        "warmup_steps": 20,
        "weight_decay": 0.01,
        "betas": [0.9, 0.95],
        "grad_accum": 1,          # micro-batches per optimizer step
        "clip": 1.0,
        "seed": 0,
        "zero_stage": 0,          # 0-3
        "precision": "auto",      # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
        "log_every": 10,
        "eval_every": 50,
        "save_every": 50,
        "keep_checkpoints": 2,
        "dropout": 0.0,           # residual dropout on attention and MLP outputs while training
        "export": "best",         # best (lowest held-out loss) | last: the weights STUDENT gets
    },
    "eval": {
        "student_eval": True,     # after training: generate the held-out prompts and score them
        "max_seconds": 12.0,      # generation limit per held-out prompt
        "limit": None,            # score only the first N held-out prompts
        "sampling": {},           # decoding: temperature, top_k, top_p (default 0.7, off, off)
    },
    "logging": {
        "tensorboard": True,
        "wandb": None,            # a W&B project name (used when wandb is installed)
    },
}

ARCHES = ("step1", "llama")
FREE_FORM = ("overrides", "sampling")  # mappings taken whole (checked by validate), not merged by key
SAMPLING_KEYS = ("temperature", "top_k", "top_p")  # eval.sampling: the LM teacher's decoding options
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRESETS = ("tts-3b", "step-audio-tts-3b", "small", "tiny")  # engine.models.config
EXPORTS = ("best", "last")
RESOLVED = "distill.yaml"  # in STUDENT: the config the recipe trains with (write_resolved)


class ConfigError(UserError):
    """The distill config cannot work; the message names the key."""


def _merge(base: dict, over: dict, where: str = "") -> dict:
    out = copy.deepcopy(base)
    if over is not None and not isinstance(over, dict):
        raise ConfigError(f"{where.rstrip('.') or 'a distill config'} must be a mapping, got {over!r}")
    for key, value in (over or {}).items():
        if key not in base:
            raise ConfigError(f"unknown key {where}{_key(key)} (known: {', '.join(base)})")
        if isinstance(base[key], dict) and key not in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{_key(key)} must be a mapping")
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = _number(value) if isinstance(base[key], (int, float)) else value
    return out


def _key(key) -> str:
    """A key or path as it reads in a one-line message (control characters escaped)."""
    key = str(key)
    return key if key.isprintable() else key.encode("unicode_escape").decode("ascii")


def _number(value):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; numeric keys take it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _parse_override(item: str) -> dict:
    """``"train.lr=1e-3"`` -> ``{"train": {"lr": 0.001}}`` (the value read as YAML)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    path, value = item.split("=", 1)
    node: dict = {}
    root = node
    keys = path.split(".")
    if not all(keys):
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: not a YAML value ({str(exc).splitlines()[0]})") from None
    for key in keys[:-1]:
        node[key] = {}
        node = node[key]
    node[keys[-1]] = value
    return root


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """Defaults, then the YAML file, then ``section.key=value`` overrides; validated.

    ``train.warmup_steps`` that neither the file nor an override sets follows ``train.steps``
    (:func:`default_warmup`), so ``--steps 10`` alone is a config that works.

    Raises:
        ConfigError: an unreadable file, an unknown key or a bad value (the message names it).
    """
    layers = [read_config_file(path)] if path is not None else []
    return resolve(layers + [_parse_override(item) for item in overrides])


def load_resolved(path: str | Path) -> tuple[dict, list[str], str]:
    """``(cfg, runs, out)`` from STUDENT/distill.yaml as :func:`write_resolved` wrote it (read once).

    Raises:
        ConfigError: not such a file, or a bad config in it.
    """
    data = read_config_file(path, keep_resolved=True)
    runs, out = data.pop("runs", None), data.pop("out", None)
    if not runs or not out:
        raise ConfigError(f"{path}: not a resolved distill config (no runs/out); "
                          "`stepforge distill` writes one into STUDENT")
    return resolve([data]), [str(r) for r in runs], str(out)


def write_resolved(cfg: dict, runs: list[str], out: Path, world: int) -> Path:
    """Write STUDENT/distill.yaml: ``cfg`` plus the run dirs and STUDENT, with the command that
    trains from it in its header. Returns its path (what the recipe's ``--config`` takes)."""
    path = Path(out) / RESOLVED
    resolved = {**cfg, "runs": runs, "out": str(Path(out).resolve())}
    text = ("# Resolved by `stepforge distill`; the recipe reads it:\n"
            f"#   deepspeed --num_gpus {world} --module distill.recipe --config {path}\n"
            + yaml.safe_dump(resolved, sort_keys=False))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def read_config_file(path: str | Path, keep_resolved: bool = False) -> dict:
    """The YAML mapping in ``path`` (``runs``/``out``, which the CLI writes into resolved configs,
    dropped unless ``keep_resolved``). Raises ConfigError naming the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{_key(path)}: no such distill config") from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        raise ConfigError(f"{_key(path)}: cannot read distill config "
                          f"({exc.strerror if isinstance(exc, OSError) else exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_key(path)}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{_key(path)}: a distill config is a mapping of sections")
    if not keep_resolved:
        data.pop("runs", None), data.pop("out", None)
    return data


def resolve(layers: list[dict]) -> dict:
    """The defaults with each layer (a partial config mapping) merged over them in turn; validated."""
    cfg = copy.deepcopy(DEFAULTS)
    for layer in layers:
        cfg = _merge(cfg, layer)
    if not any(isinstance((layer or {}).get("train"), dict) and "warmup_steps" in layer["train"] for layer in layers):
        cfg["train"]["warmup_steps"] = default_warmup(cfg["train"]["steps"])
    validate(cfg)
    return cfg


def default_warmup(steps) -> int:
    """The warmup of a config that sets none: the default's, or a tenth of ``steps`` when that
    is less (a short run still warms up, and ends after its warmup)."""
    default = DEFAULTS["train"]["warmup_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        return default  # validate() names the bad train.steps
    return min(default, steps // 10)


def _positive(cfg: dict, section: str, key: str, integer: bool = True) -> None:
    value = cfg[section][key]
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else is_number(value)
    if not ok or value <= 0:
        raise ConfigError(f"{section}.{key} must be a positive {'integer' if integer else 'number'}, "
                          f"got {value!r}")


def _within(cfg: dict, section: str, key: str, low: float, high: float, integer: bool = False) -> None:
    value = cfg[section][key]
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else is_number(value)
    if not ok or not low <= value <= high:
        raise ConfigError(f"{section}.{key} must be within {low}..{high}, got {value!r}")


def _flag(cfg: dict, section: str, key: str) -> None:
    if not isinstance(cfg[section][key], bool):
        raise ConfigError(f"{section}.{key} must be true or false, got {cfg[section][key]!r}")


def validate(cfg: dict) -> None:
    s, t = cfg["student"], cfg["train"]
    if s["arch"] not in ARCHES:
        raise ConfigError(f"student.arch must be one of {', '.join(ARCHES)}, got {s['arch']!r}")
    if s["preset"] not in PRESETS:
        raise ConfigError(f"student.preset must be one of {', '.join(PRESETS)}, got {s['preset']!r}")
    if s["init"] is not None and (not isinstance(s["init"], str) or "\x00" in s["init"]):
        raise ConfigError(f"student.init must be a checkpoint dir or null, got {s['init']!r}")
    _check_overrides(s)
    if t["precision"] not in PRECISIONS:
        raise ConfigError(f"train.precision must be one of {', '.join(PRECISIONS)}")
    if t["zero_stage"] not in (0, 1, 2, 3) or isinstance(t["zero_stage"], (bool, float)):
        raise ConfigError(f"train.zero_stage must be 0, 1, 2 or 3, got {t['zero_stage']!r}")
    for key in ("steps", "grad_accum", "log_every", "eval_every", "save_every", "keep_checkpoints"):
        _positive(cfg, "train", key)
    _positive(cfg, "train", "lr", integer=False)
    _positive(cfg, "data", "max_tokens")
    _positive(cfg, "data", "buffer")
    _positive(cfg, "eval", "max_seconds", integer=False)
    if cfg["eval"]["limit"] is not None:
        _positive(cfg, "eval", "limit")
    _within(cfg, "loss", "kd_ratio", 0, 1)
    t_steps = t["steps"]
    if isinstance(t["warmup_steps"], bool) or not isinstance(t["warmup_steps"], int) \
            or t["warmup_steps"] < 0 or t["warmup_steps"] >= t_steps:
        raise ConfigError(f"train.warmup_steps must be within 0..train.steps-1, got {t['warmup_steps']!r}")
    _within(cfg, "train", "min_lr_ratio", 0, 1)
    _within(cfg, "train", "weight_decay", 0, math.inf)
    _within(cfg, "train", "clip", 0, math.inf)
    _within(cfg, "train", "seed", 0, 2**32 - 1, integer=True)  # numpy's seed range
    betas = t["betas"]
    if not isinstance(betas, list) or len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"train.betas must be two numbers within 0..1 (exclusive), got {betas!r}")
    if not is_number(t["dropout"]) or not 0 <= t["dropout"] < 1:
        raise ConfigError(f"train.dropout must be within 0..1 (exclusive), got {t['dropout']!r}")
    if t["export"] not in EXPORTS:
        raise ConfigError(f"train.export must be one of {', '.join(EXPORTS)}, got {t['export']!r}")
    _within(cfg, "data", "heldout", 0, math.inf, integer=True)
    sampling = cfg["eval"]["sampling"]
    if not isinstance(sampling, dict) or set(map(str, sampling)) - set(SAMPLING_KEYS) \
            or not all(isinstance(k, str) and is_number(v) for k, v in sampling.items()):
        raise ConfigError(f"eval.sampling takes temperature, top_k and top_p, got {sampling!r}")
    for section, key in (("data", "share_prefix"), ("loss", "restricted_head"), ("eval", "student_eval"),
                         ("logging", "tensorboard")):
        _flag(cfg, section, key)
    if cfg["logging"]["wandb"] is not None and not isinstance(cfg["logging"]["wandb"], str):
        raise ConfigError(f"logging.wandb must be a W&B project name or null, got {cfg['logging']['wandb']!r}")


def _check_overrides(student: dict) -> None:
    """``student.overrides`` is a mapping of config field names (distill.preflight.student_config
    checks the fields and values against the student config)."""
    overrides = student["overrides"]
    if not isinstance(overrides, dict) or not all(isinstance(k, str) for k in overrides):
        raise ConfigError(f"student.overrides must be a mapping of config fields, got {overrides!r}")


def model_fingerprint(cfg: dict) -> str:
    """What a checkpoint must match to resume: the student section (architecture and init)."""
    return hashlib.sha256(json.dumps(cfg["student"], sort_keys=True).encode()).hexdigest()[:12]
