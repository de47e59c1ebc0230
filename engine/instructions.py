"""The instruction vocabulary and its Step-Audio tag rendering.

An :class:`Instruction` says how a text should be spoken: emotion with intensity 1-5, language or
dialect (with English accents), style (speech, rap, humming), one of five speeds, and optionally a
speaker to clone. It renders as Step-Audio tags in parentheses before the text:

    >>> Instruction(emotion="happy", intensity=1, dialect="cantonese", speed="fast1").tags()
    '(高兴1)(粤语)(快速1)'
    >>> parse_tags("(高兴1)(粤语)(快速1)今天天气好")[0].dialect
    'cantonese'
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

from manifests.errors import UserError

NEUTRAL = "neutral"
EMOTIONS = {
    "happy": "高兴", "sad": "悲伤", "angry": "生气", "coquettish": "撒娇",
    "surprised": "惊讶", "calm": "平静",
}
INTENSITIES = range(1, 6)

# dialect -> (tags, language of the text it reads)
DIALECTS = {
    "mandarin": (("中文",), "zh"),
    "cantonese": (("粤语",), "zh"),
    "sichuanese": (("四川话",), "zh"),
    "english": (("英文",), "en"),
    "english-us": (("英文", "美式口音"), "en"),
    "english-gb": (("英文", "英式口音"), "en"),
    "english-scottish": (("英文", "苏格兰口音"), "en"),
    "english-caribbean": (("英文", "加勒比口音"), "en"),
    "japanese": (("日语",), "ja"),
    "korean": (("韩语",), "ko"),
}
DEFAULT_DIALECT = {"zh": "mandarin", "en": "english", "ja": "japanese", "ko": "korean"}
LANGUAGES = tuple(DEFAULT_DIALECT)
TAG_ALIASES = {"广东话": "粤语"}

SPEECH = "speech"
STYLES = {SPEECH: None, "rap": "RAP", "humming": "哼唱"}
SPEEDS = {"slow2": "慢速2", "slow1": "慢速1", "normal": None, "fast1": "快速1", "fast2": "快速2"}
SPEED_ORDER = ("slow2", "slow1", "normal", "fast1", "fast2")


class InstructionError(UserError):
    """An unknown or contradictory instruction."""


def _choose(kind: str, value: str, allowed) -> None:
    if value not in allowed:
        raise InstructionError(f"unknown {kind} {value!r} (choose from {', '.join(allowed)})")


@dataclass(frozen=True)
class Instruction:
    """How to speak one text. ``intensity`` is 0 for neutral, else 1..5; ``speaker`` is empty
    unless the voice is cloned from a speaker prompt."""

    emotion: str = NEUTRAL
    intensity: int = 0
    dialect: str = "mandarin"
    style: str = SPEECH
    speed: str = "normal"
    speaker: str = ""

    @classmethod
    def of(cls, task) -> "Instruction":
        """The instruction of a task record (:class:`manifests.record.Task`, or anything with its
        instruction fields as attributes)."""
        return cls(**{f.name: getattr(task, f.name) for f in fields(cls)})

    def __post_init__(self):
        _choose("emotion", self.emotion, (NEUTRAL, *EMOTIONS))
        _choose("dialect", self.dialect, DIALECTS)
        _choose("style", self.style, STYLES)
        _choose("speed", self.speed, SPEEDS)
        if self.emotion == NEUTRAL and self.intensity:
            raise InstructionError(f"intensity {self.intensity} given without an emotion")
        if self.emotion != NEUTRAL and self.intensity not in INTENSITIES:
            raise InstructionError(f"emotion {self.emotion} needs an intensity in 1..5, got {self.intensity}")
        if self.style != SPEECH and self.emotion != NEUTRAL:
            raise InstructionError(f"{self.style} takes no emotion tag (got {self.emotion})")
        if self.style == "humming" and self.speed != "normal":
            raise InstructionError(f"humming has no speaking rate (got speed {self.speed})")

    @property
    def lang(self) -> str:
        return DIALECTS[self.dialect][1]

    def check_text_language(self, lang: str) -> None:
        if lang != self.lang:
            raise InstructionError(f"dialect {self.dialect} reads {self.lang} text, got {lang} text")

    def tags(self) -> str:
        parts = []
        if self.emotion != NEUTRAL:
            parts.append(f"{EMOTIONS[self.emotion]}{self.intensity}")
        parts.extend(DIALECTS[self.dialect][0])
        for tag in (STYLES[self.style], SPEEDS[self.speed]):
            if tag:
                parts.append(tag)
        return "".join(f"({p})" for p in parts)

    def cell(self) -> tuple:
        """The quota cell this instruction falls in."""
        return tuple(getattr(self, f.name) for f in fields(self))


_TAG_RE = re.compile(r"\(([^()]{1,12})\)")


def _tag_table() -> dict[str, tuple[str, object]]:
    table: dict[str, tuple[str, object]] = {}
    for name, zh in EMOTIONS.items():
        for level in INTENSITIES:
            table[f"{zh}{level}"] = ("emotion", (name, level))
    for name, style in STYLES.items():
        if style:
            table[style] = ("style", name)
    for name, speed in SPEEDS.items():
        if speed:
            table[speed] = ("speed", name)
    return table


_TAGS = _tag_table()
_DIALECT_BY_TAGS = {tags: name for name, (tags, _lang) in DIALECTS.items()}


def parse_tags(text: str, default_dialect: str = "mandarin") -> tuple[Instruction, str]:
    """Split leading ``(tag)`` groups off a text; returns (instruction, remaining text).

    Raises:
        InstructionError: for an unknown tag or a tag family given twice.
    """
    values: dict[str, object] = {}
    dialect_tags: list[str] = []
    pos = 0
    while m := _TAG_RE.match(text, pos):
        tag = TAG_ALIASES.get(m.group(1), m.group(1))
        pos = m.end()
        if any(tag in tags for tags in _DIALECT_BY_TAGS):
            dialect_tags.append(tag)
            continue
        if tag not in _TAGS:
            raise InstructionError(f"unknown tag ({tag})")
        family, value = _TAGS[tag]
        if family in values:
            raise InstructionError(f"two {family} tags in {text[:pos]!r}")
        values[family] = value
    emotion, intensity = values.pop("emotion", (NEUTRAL, 0))
    dialect = default_dialect
    if dialect_tags:
        dialect = _DIALECT_BY_TAGS.get(tuple(dialect_tags))
        if dialect is None:
            raise InstructionError(f"unknown dialect tags {''.join(f'({t})' for t in dialect_tags)}")
    return Instruction(emotion=emotion, intensity=intensity, dialect=dialect, **values), text[pos:]
