"""seed-tts-eval's error rate: the normalisation and per-utterance WER/CER of its ``run_wer.py``
(github.com/BytedanceSpeech/seed-tts-eval), for figures that are reported as seed-tts-eval figures.

    >>> seed_tts_error_rate("Don’t stop!", "don't stop", "en")   # the curly apostrophe is deleted
    0.5
    >>> seed_tts_units("我用iPhone", "zh")                         # Chinese keeps its case
    ['我', '用', 'i', 'P', 'h', 'o', 'n', 'e']
    >>> list_mean([0.0, 0.5, None])                              # a list's figure
    0.25

What the script does (run_wer.py at 752f429, with jiwer 3.1 and zhon 2.1 as installed by its
requirements), and so what this module does:

- every character of ``zhon.hanzi.punctuation + string.punctuation`` is deleted except the ASCII
  apostrophe: curly and fullwidth apostrophes, the ideographic space and ``·`` are deleted too;
  other symbols (``«»``, ``¿``) stay.
- ``en``: lowercase; words are what jiwer's default transform makes: runs of two or more
  whitespace characters become one space, the ends are stripped, and the text is split on spaces,
  so a lone tab or no-break space stays inside a word.
- ``zh``: no lowercasing and no traditional -> simplified on the reference; the ASR hypothesis is
  converted to simplified (``zhconv`` zh-cn) before scoring; every non-whitespace code point is a
  unit (no Unicode normalisation: a decomposed accent is two units).
- the rate is the word edit distance over the reference's units, per utterance, not clipped; a
  test list's figure is the plain mean of its utterances' rates (average_wer.py).

The script handles ``zh`` and ``en`` only; here the character languages
(:data:`filters.normalize.CHAR_LANGS`) take the ``zh`` rules and every other language the ``en``
ones. A reference with no units left makes the script fail; here its rate is None (unscored).
The project's own normalisation (:mod:`filters.normalize`, used by the filters) is more lenient:
it keeps curly apostrophes as ASCII ones, lowercases Chinese, simplifies the reference too,
applies NFC and strips all Unicode punctuation.
"""
from __future__ import annotations

import re
import string

import jiwer

from filters.normalize import CHAR_LANGS, to_simplified

NAME = "seed-tts-eval"

# zhon 2.1's hanzi.punctuation as code point ranges (checked against zhon by the goldens)
_ZHON_RANGES = ((0x00B7, 0x00B7), (0x2013, 0x2014), (0x2018, 0x2019), (0x201B, 0x201F), (0x2026, 0x2027),
                (0x3000, 0x3003), (0x3008, 0x3011), (0x3014, 0x301F), (0x3030, 0x3030), (0x303E, 0x303F),
                (0xFE4F, 0xFE4F), (0xFE51, 0xFE51), (0xFE54, 0xFE54), (0xFF01, 0xFF0F), (0xFF1A, 0xFF20),
                (0xFF3B, 0xFF40), (0xFF5B, 0xFF64))
ZHON_PUNCTUATION = frozenset(chr(c) for lo, hi in _ZHON_RANGES for c in range(lo, hi + 1))
DELETED = (ZHON_PUNCTUATION | frozenset(string.punctuation)) - {"'"}
_DELETE = str.maketrans(dict.fromkeys(DELETED))
_WHITESPACE_RUN = re.compile(r"\s\s+")


def seed_tts_units(text: str, lang: str, *, hypothesis: bool = False) -> list[str]:
    """The units seed-tts-eval counts errors on: words (lowercase), or characters for
    :data:`CHAR_LANGS` (case kept). ``hypothesis``: the text is an ASR transcript (Chinese
    transcripts are converted to simplified, references are not)."""
    text = (text or "").translate(_DELETE)
    if lang in CHAR_LANGS:
        if hypothesis:
            text = to_simplified(text)
        return [ch for ch in text if not ch.isspace()]
    return [w for w in _WHITESPACE_RUN.sub(" ", text.lower()).strip().split(" ") if w]


def seed_tts_error_rate(reference: str, hypothesis: str, lang: str) -> float | None:
    """Edit distance of the transcript's units over the reference's (0.0 = identical; can exceed
    1 with insertions); None when the reference has no units (the script fails on it)."""
    ref = seed_tts_units(reference, lang)
    if not ref:
        return None
    hyp = seed_tts_units(hypothesis, lang, hypothesis=True)
    # units hold no space: jiwer splits the joined strings back into exactly these units
    return float(jiwer.wer(" ".join(ref), " ".join(hyp)))


def list_mean(rates) -> float | None:
    """A test list's figure: the mean of the per-utterance rates (None entries are unscored)."""
    rates = [r for r in rates if r is not None]
    return sum(rates) / len(rates) if rates else None
