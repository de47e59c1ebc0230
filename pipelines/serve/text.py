"""Long input in pieces: split at sentence ends, then sentences grouped up to a length.

    >>> pieces("One. Two! Three? 四。五！", max_chars=9)
    ['One. Two!', 'Three? 四。', '五！']

Each piece is generated as its own utterance with the same voice prompt and instruction, so
the timbre stays the same across them, and a piece never has to outlast the audio length cap.
A sentence longer than ``max_chars`` stays whole (cutting it would break its prosody).
"""
from __future__ import annotations

import re

# a sentence ends at 。！？； (no space needed) or at . ! ? ; … followed by a space
_END = re.compile(r"(?<=[。！？；])\s*|(?<=[.!?;…])\s+")
# characters a speaker reads per second, by script (upstream's rates are near these)
CHARS_PER_SECOND = {"en": 14.0, "zh": 4.5, "ja": 6.0, "ko": 5.0}


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end; no piece is empty."""
    return [s.strip() for s in _END.split(text) if s and s.strip()]


def pieces(text: str, max_chars: int) -> list[str]:
    """Consecutive sentences of ``text`` joined while they fit in ``max_chars`` characters."""
    out: list[str] = []
    for sentence in sentences(text):
        if out and len(out[-1]) + 1 + len(sentence) <= max_chars:
            joiner = "" if out[-1][-1] in "。！？；" else " "
            out[-1] = out[-1] + joiner + sentence
        else:
            out.append(sentence)
    return out


def piece_chars(max_seconds: float, lang: str, headroom: float = 0.8) -> int:
    """The longest piece whose speech fits ``headroom`` of the ``max_seconds`` cap."""
    return max(1, int(headroom * max_seconds * CHARS_PER_SECOND.get(lang, 5.0)))
