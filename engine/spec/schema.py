"""Parse and check the YAML of a generation spec into a :class:`SpecConfig`.

Only structure and vocabulary are checked here; files are read by :mod:`engine.spec.texts` and
:mod:`engine.speakers`. Every error names the spec file and the field (``texts[1].lang``).
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

from engine.instructions import DIALECTS, EMOTIONS, INTENSITIES, LANGUAGES, NEUTRAL, SPEEDS, STYLES
from engine.spec.errors import SpecError
from engine.spec.texts import BUILTIN_TEXTS, TextSource

NO_SPEAKER = "none"  # the speaker value of tasks that do not clone
DIMENSIONS = ("emotion", "intensity", "dialect", "style", "speed", "speaker")
ALLOWED = {
    "emotion": (NEUTRAL, *EMOTIONS),
    "intensity": tuple(INTENSITIES),
    "dialect": tuple(DIALECTS),
    "style": tuple(STYLES),
    "speed": tuple(SPEEDS),
}
TOP_KEYS = ("name", "description", "seed", "count", "texts", "categories", "quotas", "clone", "filter")
SOURCE_KEYS = {
    "builtin": ("builtin", "limit"),
    "file": ("file", "lang", "limit"),
    "dataset": ("dataset", "column", "lang", "lang_column", "split", "limit"),
}
QUOTA_KEYS = (*DIMENSIONS, "lang", "count")
# The driver expands every task of a spec in memory: past this, split the corpus into several specs.
MAX_TASKS = 10_000_000
CLONE_KEYS = ("speakers", "share")


@dataclass
class SpecConfig:
    """A checked spec. ``categories`` maps dimension -> {value: weight}; ``quotas`` holds dicts
    of explicit cell fields plus ``count``; ``count`` is None when the quotas alone give it."""

    file: str
    name: str
    seed: int
    count: int | None
    sources: list[TextSource]
    categories: dict[str, dict] | None = None
    quotas: list[dict] = field(default_factory=list)
    speakers: str = ""
    clone_share: float | None = None
    # thresholds for `stepforge filter`; not part of the spec hash (they don't change the tasks)
    filter: dict = field(default_factory=dict)

    def normalised(self) -> dict:
        """Plain data with every default made explicit: what the spec hash is taken over."""
        return {
            "name": self.name, "seed": self.seed, "count": self.count,
            # Paths become bare names: the contents are hashed separately, and a moved
            # checkout must keep its hash.
            "texts": [{**vars(s), "path": Path(s.path).name} for s in self.sources],
            "categories": self.categories, "quotas": self.quotas,
            "speakers": Path(self.speakers).name, "clone_share": self.clone_share,
        }


class _Checker:
    """Field checks that raise SpecError naming the spec file."""

    def __init__(self, file):
        self.file = file

    def fail(self, where: str, problem: str) -> SpecError:
        return SpecError.at(self.file, where, problem)

    def mapping(self, value, where: str, allowed) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise self.fail(f"{where}.{unknown[0]}" if where else str(unknown[0]),
                            f"unknown key (allowed: {', '.join(allowed)})")
        return value

    def integer(self, value, where: str, minimum: int | None = None, maximum: int | None = None) -> int:
        if (isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum)
                or (maximum is not None and value > maximum)):
            bound = f" >= {minimum}" if minimum is not None else ""
            bound += f" and <= {maximum:,}" if maximum is not None else ""
            raise self.fail(where, f"must be an integer{bound}, got {value!r}")
        return value

    def number(self, value, where: str) -> float:
        # NaN and infinity pass `< 0` but break the share arithmetic; 10**400 overflows a float
        try:
            ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= float(value) < math.inf
        except OverflowError:
            ok = False
        if not ok:
            raise self.fail(where, f"must be a finite number >= 0, got {value!r}")
        return float(value)

    def choice(self, value, where: str, allowed) -> object:
        if isinstance(value, str) and value.isdigit() and allowed and isinstance(allowed[0], int):
            value = int(value)  # YAML users may quote intensity keys
        if value not in allowed:
            raise self.fail(where, f"unknown value {value!r} (allowed: {', '.join(map(str, allowed))})")
        return value


def _filter(c: _Checker, value) -> dict:
    """The ``filter:`` section stays data here; ``stepforge synthesize`` validates its keys and
    values (the filters package owns them), naming this file."""
    if not isinstance(value, dict):
        raise c.fail("filter", f"expected a mapping, got {type(value).__name__}")
    return dict(value)


def parse(data, file, base_dir: Path) -> SpecConfig:
    """Check the loaded YAML ``data`` of ``file``; relative paths resolve against ``base_dir``."""
    c = _Checker(file)
    data = c.mapping(data, "", TOP_KEYS)
    if "texts" not in data:
        raise c.fail("texts", "missing (list at least one text source)")
    count = data.get("count")
    if count is not None or "quotas" not in data:
        count = c.integer(count, "count", 1, MAX_TASKS)
    cfg = SpecConfig(
        file=str(file), name=str(data.get("name") or Path(file).stem),
        seed=c.integer(data.get("seed", 0), "seed"), count=count,
        sources=_sources(c, data["texts"], base_dir),
    )
    if "filter" in data:
        cfg.filter = _filter(c, data["filter"])
    if "categories" in data:
        cfg.categories = _categories(c, data["categories"])
    if "quotas" in data:
        cfg.quotas = _quotas(c, data["quotas"])
    if "clone" in data:
        if isinstance(data["clone"], dict) and "share" in data["clone"] and "speaker" in (cfg.categories or {}):
            raise c.fail("clone.share", "give clone.share or categories.speaker, not both")
        named = any("speaker" in q for q in cfg.quotas) or "speaker" in (cfg.categories or {})
        cfg.speakers, cfg.clone_share = _clone(c, data["clone"], base_dir, named)
    elif cfg.categories and "speaker" in cfg.categories or any("speaker" in q for q in cfg.quotas):
        raise c.fail("clone.speakers", "speaker values are given but no clone speakers folder")
    return cfg


def _sources(c: _Checker, value, base_dir: Path) -> list[TextSource]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise c.fail("texts", "empty (list at least one text source)")
    return [_source(c, item, f"texts[{i}]", base_dir) for i, item in enumerate(items)]


def _source(c: _Checker, item, where: str, base_dir: Path) -> TextSource:
    if not isinstance(item, dict):
        raise c.fail(where, "expected a mapping with one of builtin, file, dataset")
    kinds = [k for k in SOURCE_KEYS if k in item]
    if len(kinds) != 1:
        raise c.fail(where, "give exactly one of builtin, file, dataset")
    kind = kinds[0]
    c.mapping(item, where, SOURCE_KEYS[kind])
    limit = c.integer(item["limit"], f"{where}.limit", 1) if "limit" in item else 0
    if kind == "builtin":
        langs = item["builtin"] if isinstance(item["builtin"], list) else [item["builtin"]]
        langs = tuple(c.choice(x, f"{where}.builtin", tuple(BUILTIN_TEXTS)) for x in langs)
        return TextSource("builtin", where, langs=langs, limit=limit)
    lang = c.choice(item["lang"], f"{where}.lang", LANGUAGES) if "lang" in item else ""
    path = item[kind]
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise c.fail(f"{where}.{kind}", "expected a path")
    path = str((base_dir / Path(path).expanduser()).resolve())
    if kind == "file" and not Path(path).is_file():
        raise c.fail(f"{where}.file", f"{path}: no such file")
    if kind == "file":
        return TextSource("file", where, path=path, lang=lang, limit=limit)
    strings = {k: item.get(k, d) for k, d in (("column", "text"), ("lang_column", ""), ("split", ""))}
    for k, v in strings.items():
        if not isinstance(v, str):
            raise c.fail(f"{where}.{k}", f"expected a string, got {v!r}")
    return TextSource("dataset", where, path=path, lang=lang, limit=limit, **strings)


def _categories(c: _Checker, value) -> dict[str, dict]:
    value = c.mapping(value, "categories", DIMENSIONS)
    out = {}
    for dim, shares in value.items():
        where = f"categories.{dim}"
        if isinstance(shares, list):  # a plain list means equal shares
            for v in shares:
                if not isinstance(v, Hashable):
                    raise c.fail(where, f"expected a list of values, got {v!r} in it")
            shares = {v: 1 for v in shares}
        if not isinstance(shares, dict) or not shares:
            raise c.fail(where, "expected a mapping of value: share (or a list of values)")
        allowed = ALLOWED.get(dim)
        weights = {}
        for key, w in shares.items():
            key = c.choice(key, where, allowed) if allowed else str(key)
            weights[key] = c.number(w, f"{where}.{key}")
        if sum(weights.values()) <= 0:
            raise c.fail(where, "shares sum to 0; give at least one value a share > 0")
        out[dim] = weights
    return out


def _quotas(c: _Checker, value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise c.fail("quotas", "expected a non-empty list of cells with a count")
    cells = []
    for i, item in enumerate(value):
        where = f"quotas[{i}]"
        item = c.mapping(item, where, QUOTA_KEYS)
        if "count" not in item:
            raise c.fail(f"{where}.count", "missing")
        cell = {"count": c.integer(item["count"], f"{where}.count", 1, MAX_TASKS)}
        for key in ("emotion", "intensity", "dialect", "style", "speed"):
            if key in item:
                cell[key] = c.choice(item[key], f"{where}.{key}", ALLOWED[key])
        if "lang" in item:
            cell["lang"] = c.choice(item["lang"], f"{where}.lang", LANGUAGES)
        if "speaker" in item:
            cell["speaker"] = str(item["speaker"])
        cells.append(cell)
    return cells


def _clone(c: _Checker, value, base_dir: Path, named: bool) -> tuple[str, float | None]:
    """Speaker folder and clone share; ``named`` says quotas or categories name speakers."""
    value = c.mapping(value, "clone", CLONE_KEYS)
    folder = value.get("speakers")
    if not isinstance(folder, str) or not folder.strip() or "\x00" in folder:
        raise c.fail("clone.speakers", "expected a folder path or builtin")
    if folder != "builtin":
        folder = str((base_dir / Path(folder).expanduser()).resolve())
    share = value.get("share")
    if share is not None:
        share = c.number(share, "clone.share")
        if share > 1:
            raise c.fail("clone.share", f"must be between 0 and 1, got {share}")
    elif not named:
        raise c.fail("clone.share", "missing (the fraction of tasks that clone, e.g. 0.1)")
    return folder, share
