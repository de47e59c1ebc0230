"""Dialect-specific speaking on top of eSpeak's voices: ``speaker_for(dialect)`` gives a
``speak(text, voice, prosody, **params) -> (wav, sr)`` with the same signature as
``engine.espeak.render``.

- sichuanese: eSpeak has no Sichuanese voice, and its Hakka voice (the obvious stand-in) cannot
  read Chinese characters (it says "Chinese letter" for each). So the Mandarin voice's phonemes
  are rewritten with well-known Sichuanese (Chengdu) traits and spoken back: retroflex initials
  become dental (zh ch sh r -> z c s z), l- merges into n-, -eng/-ing lose velar nasals, and the
  tones move towards the Chengdu contours (T2 rising -> low, T3 dipping -> falling, T4 falling
  -> dipping). A stand-in, not real Sichuanese.
- japanese: eSpeak's Japanese voice reads kana only, so kanji are converted to hiragana first
  (pykakasi).

    >>> speak = speaker_for("sichuanese")
    >>> wav, sr = speak("我们是四川人。", "cmn", Prosody())
"""
from __future__ import annotations

import re

from engine.espeak import Prosody, render
from engine.teachers.phonemes import render_markup, text_to_phonemes

_CLAUSE = re.compile(r"[^，。！？；、,.!?;:：]+[，。！？；、,.!?;:：]*")
_SWITCH = re.compile(r"\([a-z-]+\)")
# Mandarin tone phonemes -> the closest Chengdu contour eSpeak's Mandarin tones can give.
_TONES = {"35": "11", "214": "51", "51": "214"}
_RULES = [
    (re.compile(r"ts\.h"), "tsh"), (re.compile(r"ts\."), "ts"), (re.compile(r"s\."), "s"),
    (re.compile(r"z\."), "z"), (re.compile(r"i\."), "i["),            # zhi chi shi ri -> zi ci si zi
    (re.compile(r"(^|[\s|_\d',])l(?=[',a-zA-Z@])"), r"\1n"),           # l- -> n-
    (re.compile(r"([@i])(\d+)N"), r"\1\2n"),                          # -eng -ing -> -en -in
    (re.compile(r"(?<!\d)(214|35|51)(?!\d)"), lambda m: _TONES[m.group(1)]),
]


def sichuanese_phonemes(mnemonics: str) -> str:
    """Rewrite Mandarin phoneme mnemonics (eSpeak ``cmn``) into the Sichuanese stand-in."""
    for pattern, repl in _RULES:
        mnemonics = pattern.sub(repl, mnemonics)
    return mnemonics


def sichuanese_markup(text: str) -> str:
    """Text with each clause replaced by ``[[phonemes]]``; clauses that switch language (Latin
    words) stay text, so eSpeak still reads them with its own rules."""
    pieces = []
    for clause in _CLAUSE.findall(text):
        mnemonics = text_to_phonemes(clause, "cmn")
        if _SWITCH.search(mnemonics) or not mnemonics.strip():
            pieces.append(clause)
        else:
            pause = " _:" if clause[-1] in "，。！？；、,.!?;:：" else ""
            pieces.append(f"[[{sichuanese_phonemes(mnemonics)}{pause}]]")
    return " ".join(pieces)


def speak_sichuanese(text: str, voice: str, prosody=None, **params):
    base = vars(prosody) if prosody is not None else {}
    return render_markup(sichuanese_markup(text), voice, Prosody(**{**base, **params}))


_KANJI = re.compile(r"[\u3400-\u9fff]")


def to_kana(text: str) -> str:
    """Japanese text with kanji replaced by their hiragana readings."""
    if not _KANJI.search(text):
        return text
    try:
        import pykakasi
    except ImportError:
        raise ImportError(
            "Japanese text with kanji needs pykakasi (pip install pykakasi): eSpeak's Japanese "
            "voice reads kana only"
        ) from None
    return "".join(item["hira"] for item in pykakasi.kakasi().convert(text))


def speak_japanese(text: str, voice: str, prosody=None, **params):
    return render(to_kana(text), voice, prosody, **params)


def speaker_for(dialect: str):
    """The speak function for a dialect (``engine.espeak.render`` for most)."""
    return {"sichuanese": speak_sichuanese, "japanese": speak_japanese}.get(dialect, render)
