"""Value checks of the filter config's nested sections, so a bad value fails in the driver with
one line naming it instead of inside a filter actor halfway through a run.

    check_sections(FilterConfig(per_style={"rap": "loose"}), "filter.yaml")
    # UserError: filter.yaml: per_style.rap must be a number >= 0 or null, got 'loose'
"""
from __future__ import annotations

import inspect

from filters.adherence import DEFAULT_ADHERENCE
from filters.asr import BACKENDS
from filters.cer import POLICIES
from filters.paraformer import ParaformerASR
from filters.quality import QualityFilter
from filters.whisper import WhisperASR, check_recheck
from manifests.errors import UserError
from manifests.values import is_number

ASR_CLASSES = {"faster-whisper": WhisperASR, "paraformer": ParaformerASR}


def mapping(value, where: str) -> dict:
    """``value`` as a dict with string keys (YAML may give ints, bools or null as keys)."""
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping, got {value!r}")
    for key in value:
        if not isinstance(key, str):
            raise UserError(f"{where}: keys are names, got {key!r}")
    return value


def count(value, where: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where} must be an integer >= 1{' or null' if optional else ''}, got {value!r}")


def thresholds(value, where: str) -> None:
    """A ``{name: number >= 0 or null}`` section (per_style, per_dialect)."""
    for key, limit in mapping(value, where).items():
        if limit is not None and not (is_number(limit) and limit >= 0):
            raise UserError(f"{where}.{key} must be a number >= 0 or null, got {limit!r}")


def like(value, default, where: str) -> None:
    """``value`` has the shape of ``default``: a number, a string, a bool, or a list of the same
    length whose items are numbers or null (the adherence speed bounds, quality rate bounds)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = is_number(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)) and default and not isinstance(default[0], str):
        ok = isinstance(value, (list, tuple)) and len(value) == len(default) and all(
            v is None or is_number(v) for v in value)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    else:
        return  # no default to compare with (None): the component checks it
    if not ok:
        raise UserError(f"{where} must look like {default!r}, got {value!r}")


def keyword_options(options: dict, cls, where: str, skip=()) -> None:
    """Each option is a parameter of ``cls`` and looks like its default."""
    params = inspect.signature(cls).parameters
    for key, value in mapping(options, where).items():
        if key in skip:
            continue
        if key not in params:
            raise UserError(f"{where}: unknown option {key!r} (allowed: {', '.join(params)})")
        like(value, params[key].default, f"{where}.{key}")


def check_asr(value, where: str) -> None:
    for lang, cfg in mapping(value, where).items():
        backend = mapping(cfg, f"{where}.{lang}").get("backend", "faster-whisper")
        if backend not in BACKENDS:
            raise UserError(f"{where}.{lang}.backend: unknown ASR backend {backend!r} (choose from {', '.join(BACKENDS)})")
        keyword_options(cfg, ASR_CLASSES[backend], f"{where}.{lang}", skip=("backend",))
        if backend == "faster-whisper":
            check_recheck(cfg.get("recheck"), f"{where}.{lang}.recheck")


def check_quality(value, where: str) -> None:
    keyword_options(value, QualityFilter, where, skip=("rate_bounds",))
    bounds = value.get("rate_bounds")
    if bounds is not None:
        for lang, pair in mapping(bounds, f"{where}.rate_bounds").items():
            like(pair, (0.0, 0.0), f"{where}.rate_bounds.{lang}")


def check_adherence(value: dict, where: str) -> None:
    """Value types of an ``adherence:`` section (its keys: filters.adherence.adherence_settings)."""
    for check, settings in mapping(value, where).items():
        if not isinstance(settings, dict):
            continue  # null disables the check; anything else adherence_settings names
        for key, setting in mapping(settings, f"{where}.{check}").items():
            default = DEFAULT_ADHERENCE.get(check, {}).get(key)
            like(setting, default, f"{where}.{check}.{key}")


def check_sections(config, where: str) -> None:
    """Raise UserError naming ``where`` and the key for a bad nested value of ``config``."""
    thresholds(config.per_style, f"{where}: per_style")
    thresholds(config.per_dialect, f"{where}: per_dialect")
    if config.asr is not None:
        check_asr(config.asr, f"{where}: asr")
    for lang, policy in mapping(config.no_asr, f"{where}: no_asr").items():
        if policy not in POLICIES:
            raise UserError(f"{where}: no_asr.{lang} must be one of {', '.join(POLICIES)}, got {policy!r}")
    if config.default_no_asr not in POLICIES:
        raise UserError(f"{where}: default_no_asr must be one of {', '.join(POLICIES)}, got {config.default_no_asr!r}")
    check_quality(config.quality, f"{where}: quality")
    count(config.ss_threads, f"{where}: ss_threads")
    count(config.workers, f"{where}: workers", optional=True)
    if not isinstance(config.score_rejected, bool):
        raise UserError(f"{where}: score_rejected must be true or false, got {config.score_rejected!r}")
