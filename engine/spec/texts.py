"""Text sources of a generation spec: built-in sentences, .txt, .jsonl and `datasets` folders.

Each source yields ``(text, lang)`` pairs with whitespace collapsed. A source's ``lang`` applies
to all its texts; a .jsonl row's own ``"lang"`` (or a dataset's ``lang_column``) wins over it, and
texts with neither get their language from their script (kana -> ja, hangul -> ko, han -> zh,
latin -> en).

    >>> detect_lang("今天天气很好"), detect_lang("It is sunny."), detect_lang("こんにちは")
    ('zh', 'en', 'ja')
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.instructions import LANGUAGES
from engine.spec.errors import SpecError
from engine.spec.textfile import read_utf8

# Built-in text sets and their language: the sentences written for this project (en, zh), and
# en-basic, 12,000 short sentences over ~250 words for small students (engine/data/basic_en.py).
BUILTIN_LANGS = {"en": "en", "zh": "zh", "en-basic": "en"}
BUILTIN_TEXTS = {name: Path(__file__).parent.parent / "data" / f"sentences_{name}.txt" for name in BUILTIN_LANGS}
_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class TextSource:
    """One entry of ``texts:``. ``kind`` is builtin|file|dataset; ``path`` is absolute for files
    and folders; ``langs`` names the built-in sets; ``field`` names it in errors."""

    kind: str
    field: str
    path: str = ""
    langs: tuple[str, ...] = ()
    lang: str = ""
    column: str = "text"
    lang_column: str = ""
    split: str = ""
    limit: int = 0


def detect_lang(text: str) -> str | None:
    """Language of ``text`` from its script (one of en/zh/ja/ko), or None for other scripts."""
    kana = hangul = han = latin = False
    for ch in text:
        o = ord(ch)
        kana |= 0x3040 <= o <= 0x30FF
        hangul |= 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F
        han |= 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF
        latin |= ch.isascii() and ch.isalpha()
    # Japanese mixes han with kana, so kana decides first.
    for found, lang in ((kana, "ja"), (hangul, "ko"), (han, "zh"), (latin, "en")):
        if found:
            return lang
    return None


def load_source(src: TextSource, spec_file) -> list[tuple[str, str]]:
    """Read one source; returns ``[(text, lang)]`` in source order.

    Raises:
        SpecError: naming ``spec_file``, the source field and the text file, for a missing or
            non-UTF-8 file, bad JSON, an empty text, an unknown language, or no texts at all.
    """
    try:
        if src.kind == "builtin":
            # limit is per language here: "the first N of each" is what a mixed source means.
            rows = [row for name in src.langs
                    for row in _lines(BUILTIN_TEXTS[name], BUILTIN_LANGS[name])[: src.limit or None]]
        elif src.kind == "dataset":
            rows = _dataset_rows(src)
        elif src.path.endswith((".jsonl", ".json")):
            rows = _jsonl_rows(Path(src.path), src.lang)
        else:
            rows = _lines(Path(src.path), src.lang)
            if not src.lang:
                rows = _detect_all(rows, src.path)
    except SpecError as exc:
        raise SpecError.at(spec_file, _where(src), str(exc)) from None
    if src.limit and src.kind != "builtin":
        rows = rows[: src.limit]
    if not rows:
        raise SpecError.at(spec_file, _where(src), f"{src.path or 'builtin'}: no texts")
    return rows


def _where(src: TextSource) -> str:
    return f"{src.field}.{src.kind}"


def _lines(path: Path, lang: str) -> list[tuple[str, str]]:
    # Blank lines separate nothing and carry no text, so they are skipped rather than rejected.
    return [(" ".join(line.split()), lang) for line in read_utf8(path).splitlines() if line.strip()]


def _detect_all(rows: list[tuple[str, str]], path: str) -> list[tuple[str, str]]:
    out = []
    for n, (text, _) in enumerate(rows, 1):
        out.append((text, _detected(text, f"{path}: text {n}")))
    return out


def _detected(text: str, where: str) -> str:
    lang = detect_lang(text)
    if lang is None:
        raise SpecError.at(where, "", f"cannot tell the language of {text[:30]!r}; give lang ({', '.join(LANGUAGES)})")
    return lang


def _row_lang(value, default: str, text: str, where: str) -> str:
    if value in (None, ""):
        return default or _detected(text, where)
    if value not in LANGUAGES:
        raise SpecError.at(where, "lang", f"unknown language {value!r} (allowed: {', '.join(LANGUAGES)})")
    return value


def _jsonl_rows(path: Path, lang: str) -> list[tuple[str, str]]:
    rows = []
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError.at(where, "", f"not valid JSON ({exc.msg})") from None
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SpecError.at(where, "text", "missing or empty")
        text = " ".join(text.split())
        rows.append((text, _row_lang(row.get("lang"), lang, text, where)))
    return rows


def _open_dataset(path: Path, split: str):
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a core dependency
        raise SpecError.at(path, "", "the datasets package is needed: pip install datasets") from None
    try:
        if any((path / m).is_file() for m in _SAVED_MARKERS):
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path))
    except Exception as exc:  # datasets raises many types for unreadable folders
        raise SpecError.at(path, "", f"cannot load dataset ({type(exc).__name__}: {exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = sorted(ds)
        pick = split or ("train" if "train" in ds else names[0] if len(names) == 1 else "")
        if pick not in ds:
            raise SpecError.at(path, "split", f"choose a split from {', '.join(names)}")
        ds = ds[pick]
    return ds


def _dataset_rows(src: TextSource) -> list[tuple[str, str]]:
    path = Path(src.path)
    if not path.is_dir():
        raise SpecError.at(path, "", "no such dataset folder")
    ds = _open_dataset(path, src.split)
    for col in filter(None, (src.column, src.lang_column)):
        if col not in ds.column_names:
            raise SpecError.at(path, "column", f"no column {col!r} (columns: {', '.join(ds.column_names)})")
    texts = ds[src.column]
    langs = ds[src.lang_column] if src.lang_column else [None] * len(texts)
    rows = []
    for n, (text, lang) in enumerate(zip(texts, langs)):
        where = f"{path}: row {n}"
        if not isinstance(text, str) or not text.strip():
            raise SpecError.at(where, src.column, "missing or empty")
        text = " ".join(text.split())
        rows.append((text, _row_lang(lang, src.lang, text, where)))
    return rows
