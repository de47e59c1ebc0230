"""GenerationSpec: a checked spec with its texts and speakers loaded, expandable into tasks.

    >>> spec = GenerationSpec.load("pipelines/configs/tiny.yaml")    # doctest: +SKIP
    >>> tasks = spec.expand()                                         # doctest: +SKIP
    >>> write_tasks(tasks, "RUN/tasks.parquet")                       # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from functools import cached_property
from pathlib import Path

import yaml

from engine.instructions import DEFAULT_DIALECT, DIALECTS, INTENSITIES, NEUTRAL, Instruction, InstructionError
from engine.spec.allocate import Cell, allocate_shares
from engine.spec.assign import assign_texts
from engine.spec.errors import SpecError
from engine.spec.schema import MAX_TASKS, NO_SPEAKER, SpecConfig, parse
from engine.spec.textfile import read_utf8
from engine.spec.texts import load_source
from engine.task import Task

log = logging.getLogger(__name__)
# Bump when expansion changes what a spec produces, so old runs do not pass for new ones.
EXPANSION_VERSION = 1


class GenerationSpec:
    """A loaded spec. Build with :meth:`load` (a YAML file) or :meth:`from_dict`.

    Attributes:
        config: the checked :class:`~engine.spec.schema.SpecConfig`.
        texts: language -> unique texts in source order.
        speakers: clone speakers (``engine.speakers.Speaker``), empty without ``clone``.
        count: number of tasks :meth:`expand` aims for.
    """

    def __init__(self, config: SpecConfig, rows: list[tuple[str, str]], speakers: list):
        self.config = config
        self.texts = _pools(rows)
        self._text_digest = hashlib.sha256("".join(f"{t}\t{l}\n" for t, l in rows).encode()).hexdigest()
        self.speakers = speakers
        self.quota_cells = [(self._quota_cell(q, i), q["count"]) for i, q in enumerate(config.quotas)]
        quota_total = sum(n for _, n in self.quota_cells)
        self.count = config.count if config.count is not None else quota_total
        self.shares_total = self.count - quota_total
        self._check_totals(quota_total)
        self.shares = self._shares() if self.shares_total else {}

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def seed(self) -> int:
        return self.config.seed

    @classmethod
    def load(cls, path) -> "GenerationSpec":
        """Read and check the YAML spec at ``path``; texts and speakers are read now.

        Raises:
            SpecError: one line naming the file and the field (or YAML line) at fault.
        """
        path = Path(path)
        raw = read_utf8(path)
        try:
            data = yaml.safe_load(raw)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f"line {mark.line + 1}" if mark else ""
            raise SpecError.at(path, line, f"malformed YAML ({exc.problem or exc.context})") from None
        except yaml.YAMLError as exc:
            raise SpecError.at(path, "", f"malformed YAML ({exc})") from None
        return cls.from_dict(data, file=path, base_dir=path.parent)

    @classmethod
    def from_dict(cls, data: dict, file="<spec>", base_dir=".") -> "GenerationSpec":
        """Build from already-parsed YAML data; relative paths resolve against ``base_dir``."""
        config = parse(data, file, Path(base_dir))
        rows = [row for src in config.sources for row in load_source(src, file)]
        return cls(config, rows, _load_speakers(config))

    @cached_property
    def hash(self) -> str:
        """16 hex digits over the normalised spec, the texts read and the speaker prompts."""
        payload = {
            "expansion": EXPANSION_VERSION, "spec": self.config.normalised(), "texts": self._text_digest,
            "speakers": [[s.name, s.text, s.wav_sha256()] for s in self.speakers],
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """The normalised spec as JSON-ready data (for run.json); ``file`` is the spec's path."""
        data = {"file": str(self.config.file), **self.config.normalised(), "filter": self.config.filter}
        return json.loads(json.dumps(data,
                                     ensure_ascii=False, default=str))

    def expand(self, exclude: frozenset = frozenset()) -> list[Task]:
        """The tasks of this spec, sorted by id; the same spec always gives the same list.

        ``exclude``: task ids that must not come back (a grown run's tasks); a cell dealt one of
        them takes its next text instead. Fewer than ``count`` come back only when a cell has used
        up every text of its language (a warning says how many are missing).
        """
        rng = random.Random(f"stepforge:{self.seed}:cells")
        cells = [cell for cell, n in self.quota_cells for _ in range(n)]
        cells += allocate_shares(self.shares, self.shares_total, rng)
        tasks = assign_texts(cells, self.texts, self.speakers, self.seed, exclude)
        if len(tasks) < self.count:
            log.warning("%s: %d of %d tasks could not get a text not already used with the same "
                        "instruction; add texts", self.config.file, self.count - len(tasks), self.count)
        return sorted(tasks, key=lambda t: t.id)

    def _fail(self, field: str, problem: str) -> SpecError:
        return SpecError.at(self.config.file, field, problem)

    def _check_totals(self, quota_total: int) -> None:
        if self.count > MAX_TASKS:
            raise self._fail("quotas", f"quota counts sum to {quota_total:,}, more than {MAX_TASKS:,} tasks")
        if self.shares_total < 0:
            raise self._fail("quotas", f"quota counts sum to {quota_total}, more than count {self.count}")
        if self.quota_cells and self.shares_total and self.config.categories is None:
            raise self._fail("count", f"{self.count} but quotas sum to {quota_total}; add categories "
                             "to fill the rest or drop count")

    def _quota_cell(self, q: dict, i: int) -> Cell:
        where = f"quotas[{i}]"
        dialect = q.get("dialect") or DEFAULT_DIALECT.get(q.get("lang") or self._only_lang(where))
        lang = DIALECTS[dialect][1]
        if q.get("lang", lang) != lang:
            raise self._fail(where, f"dialect {dialect} reads {lang} text, not {q['lang']}")
        if lang not in self.texts:
            raise self._fail(f"{where}.dialect", f"{dialect} needs {lang} texts; the texts have {self._langs()}")
        cell = (q.get("emotion", NEUTRAL), q.get("intensity", 0), dialect, q.get("style", "speech"),
                q.get("speed", "normal"), self._speaker_value(q.get("speaker", NO_SPEAKER), f"{where}.speaker"))
        try:
            Instruction(*cell)
        except InstructionError as exc:
            raise self._fail(where, str(exc)) from None
        return cell

    def _only_lang(self, where: str) -> str:
        if len(self.texts) != 1:
            raise self._fail(where, f"give dialect or lang (the texts are in {self._langs()})")
        return next(iter(self.texts))

    def _langs(self) -> str:
        return ", ".join(self.texts) or "no language"

    def _speaker_value(self, name: str, where: str) -> str:
        if name == NO_SPEAKER:
            return ""
        names = [s.name for s in self.speakers]
        if name not in names:
            raise self._fail(where, f"unknown speaker {name!r} (allowed: {NO_SPEAKER}, {', '.join(names)})")
        return name

    def _shares(self) -> dict[str, dict]:
        """All six dimensions' weights for the shares part, defaults filled in."""
        cats = self.config.categories or {}
        shares = {
            "emotion": cats.get("emotion", {NEUTRAL: 1.0}),
            "intensity": cats.get("intensity", {i: 1.0 for i in INTENSITIES}),
            "dialect": self._dialect_shares(cats.get("dialect")),
            "style": cats.get("style", {"speech": 1.0}),
            "speed": cats.get("speed", {"normal": 1.0}),
        }
        if "speaker" in cats:
            shares["speaker"] = {self._speaker_value(k, "categories.speaker"): w for k, w in cats["speaker"].items()}
        else:
            share = self.config.clone_share or 0.0
            shares["speaker"] = {"": 1.0 - share, **{s.name: share / len(self.speakers) for s in self.speakers}}
        return shares

    def _dialect_shares(self, given: dict | None) -> dict:
        if given is None:  # one default dialect per text language, equal shares
            return {DEFAULT_DIALECT[lang]: 1.0 for lang in self.texts}
        # Rule: a dialect whose language has no texts is dropped from the shares (with a warning),
        # since the shares are a wish list over whatever texts the spec reads.
        kept = {d: w for d, w in given.items() if DIALECTS[d][1] in self.texts and w > 0}
        for d in given:
            if d not in kept and given[d] > 0:
                log.warning("%s: categories.dialect.%s dropped: no %s texts", self.config.file, d, DIALECTS[d][1])
        if not kept:
            raise self._fail("categories.dialect", f"no dialect with a share reads the texts' languages ({self._langs()})")
        return kept


def _pools(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Language -> its texts in source order, each once (a text listed twice would be a duplicate
    task waiting to happen)."""
    pools: dict[str, dict[str, None]] = {}
    for text, lang in rows:
        pools.setdefault(lang, {})[text] = None  # a dict keeps the order while de-duplicating
    return {lang: list(texts) for lang, texts in pools.items()}


def _load_speakers(config: SpecConfig) -> list:
    if not config.speakers:
        return []
    from engine.speakers import load_speakers  # here, not at the top: engine.speakers imports this package

    try:
        speakers = load_speakers(config.speakers)
    except SpecError as exc:
        raise SpecError.at(config.file, "clone.speakers", str(exc)) from None
    if any(s.name == NO_SPEAKER for s in speakers):
        raise SpecError.at(config.file, "clone.speakers", f"a speaker may not be named {NO_SPEAKER!r}")
    return speakers
