"""OpenAI's ``instructions`` and ``speed`` fields -> an :class:`engine.instructions.Instruction`.

    >>> understand("sad, intensity 4, Cantonese, a bit fast", text="今天天气好")
    Instruction(emotion='sad', intensity=4, dialect='cantonese', style='speech', speed='fast1', speaker='')
    >>> understand("(高兴1)(粤语)", text="今天天气好").tags()
    '(高兴1)(粤语)'
    >>> understand(None, speed=1.5, text="Hello.").speed
    'fast1'

Step-Audio tags at the start are read by :func:`engine.instructions.parse_tags`; the rest is free
text in English or Chinese, split into clauses at commas and "and". Every clause must name at
least one thing of the vocabulary (an emotion, a degree or intensity, a dialect or accent, a
style, a speed); words around it ("speak", "please", "语气") are ignored. A clause that names
nothing, or two values of one kind, raises :class:`InstructionError` listing what is understood.
"""
from __future__ import annotations

import re

from engine.instructions import (DEFAULT_DIALECT, DIALECTS, EMOTIONS, NEUTRAL, SPEECH, SPEED_ORDER, STYLES,
                                 TAG_ALIASES, Instruction, InstructionError, parse_tags)
from engine.spec.texts import detect_lang

# phrase -> (kind, value), phrases separated by "|". English phrases match whole words (their
# -ly/-ness forms are listed); Chinese ones match anywhere. Longer phrases are matched first, so
# "快乐" (happy) is read before "快" (fast).
_WORDS = {
    "emotion": {
        "happy": "happy|happily|happiness|joyful|joyfully|cheerful|cheerfully|glad|gladly|高兴|开心|快乐|愉快|欢快",
        "sad": "sad|sadly|sadness|unhappy|sorrowful|sorrowfully|melancholy|upset|悲伤|伤心|难过|忧伤",
        "angry": "angry|angrily|anger|mad|furious|furiously|annoyed|生气|愤怒|恼火",
        "coquettish": "coquettish|coquettishly|flirty|flirtatious|flirtatiously|cute|playful|playfully|撒娇",
        "surprised": "surprised|surprise|amazed|astonished|shocked|惊讶|吃惊|惊奇",
        "calm": "calm|calmly|relaxed|peaceful|peacefully|soothing|平静|冷静|淡定",
        NEUTRAL: "neutral|neutrally|中性|平淡",
    },
    "dialect": {
        "cantonese": "cantonese|粤语|广东话",
        "sichuanese": "sichuanese|sichuan|四川话",
        "mandarin": "mandarin|chinese|putonghua|普通话|中文|汉语",
        "english": "english|英文|英语",
        "english-us": "american|us accent|美式|美国口音",
        "english-gb": "british|uk accent|英式|英国口音",
        "english-scottish": "scottish|苏格兰",
        "english-caribbean": "caribbean|加勒比",
        "japanese": "japanese|日语|日文",
        "korean": "korean|韩语|韩文",
    },
    "style": {"rap": "rap|rapping|说唱|饶舌", "humming": "humming|hum|hummed|哼唱|哼",
              SPEECH: "plain speech|speech|spoken|朗读"},
    "speed": {"fast": "fast|faster|quick|quickly|rapid|rapidly|快速|快", "slow": "slow|slower|slowly|慢速|慢",
              "normal": "normal speed|normal pace|正常语速|正常速度"},
    "degree": {"mild": "a bit|a little|slightly|somewhat|mildly|gently|有点|有些|稍微|稍|略",
               "strong": "very|really|quite|so|非常|很|特别|十分|相当",
               "max": "extremely|super|incredibly|极其|极度|超级|无比"},
}
_INTENSITY = {"mild": 2, None: 3, "strong": 4, "max": 5}
_SPEED = {"mild": 1, None: 1, "strong": 2, "max": 2}
_CLAUSES = re.compile(r"[,，、;；。.!！?？\n]|\band\b|和|并且|而且|同时")
_NUMBER = re.compile(r"(?:intensity|level|strength|degree|强度|等级|程度)\s*(?:of\s*)?[:=：]?\s*(\d+)"
                     r"|(\d+)\s*(?:/\s*5|级|out of 5)|\b(\d+)\b")


def _pattern(phrase: str) -> re.Pattern:
    if not phrase.isascii():
        return re.compile(re.escape(phrase))
    return re.compile(r"\b" + r"\s+".join(map(re.escape, phrase.split())) + r"\b")


_PHRASES = sorted(((p, kind, value) for kind, values in _WORDS.items() for value, phrases in values.items()
                   for p in phrases.split("|")), key=lambda t: -len(t[0]))
_PHRASES = [(_pattern(p), kind, value) for p, kind, value in _PHRASES]
SPEED_FIELD = (0.25, 4.0)


def understood() -> str:
    """What free-text instructions can say (the tail of every error)."""
    dialects = ", ".join(DIALECTS)
    return (f"understood: emotions ({', '.join([*EMOTIONS, NEUTRAL])}) with an intensity 1-5 "
            f"('sad, intensity 4', 'very happy', '有点生气'); dialects and accents ({dialects}); styles "
            f"({', '.join(s for s in STYLES if s != SPEECH)}); speeds (slow, a bit slow, fast, very fast, 快一点); "
            "or Step-Audio tags before any text, e.g. (高兴1)(粤语)(快速1)")


def free_text(text: str) -> dict:
    """The instruction fields a free-text instruction names, e.g. ``{"emotion": "sad",
    "intensity": 4}``; raises InstructionError on a clause naming nothing or two values of one kind."""
    found: dict = {}
    degrees: dict = {}  # kind -> the degree word in its clause ("very sad": strong)
    for clause in (c.strip() for c in _CLAUSES.split(text.lower())):
        if not clause:
            continue
        named, rest = _clause_words(clause)
        number = _intensity_number(rest)
        if not named and number is None:
            raise InstructionError(f"instructions: cannot understand {clause!r}; {understood()}")
        degree = named.pop("degree", None)
        for kind, value in named.items():
            _put(found, kind, value)
            degrees[kind] = degree
        if number is not None:
            _put(found, "intensity", number)
    if found.get("speed") in ("fast", "slow"):
        found["speed"] = f"{found['speed']}{_SPEED[degrees.get('speed')]}"
    if found.get("emotion", NEUTRAL) != NEUTRAL:
        found.setdefault("intensity", _INTENSITY[degrees.get("emotion")])
    return found


def _clause_words(clause: str) -> tuple[dict, str]:
    """(kind -> value named in the clause, the clause with those phrases removed)."""
    named: dict = {}
    for pattern, kind, value in _PHRASES:
        if pattern.search(clause):
            clause = pattern.sub(" ", clause)
            _put(named, kind, value)
    return named, clause


def _intensity_number(rest: str) -> int | None:
    m = _NUMBER.search(rest)
    if not m:
        return None
    n = int(next(g for g in m.groups() if g is not None))
    if n not in range(1, 6):
        raise InstructionError(f"instructions: intensity {n} is outside 1-5")
    return n


def _put(found: dict, kind: str, value) -> None:
    old = found.get(kind, value)
    if kind == "dialect" and {old, value} <= set(DIALECTS) and "english" in (old, value):
        # "English, British accent": the accent is the more precise of the two
        value = old if value == "english" and old.startswith("english") else value
        if value.startswith("english"):
            found[kind] = value
            return
    if old != value:
        raise InstructionError(f"instructions: two {kind}s ({old} and {value}); give one")
    found[kind] = value


def speed_name(speed: float) -> str:
    """OpenAI's ``speed`` (0.25-4.0, 1 = normal) -> a Step-Audio speed (``slow2`` .. ``fast2``)."""
    lo, hi = SPEED_FIELD
    if not lo <= speed <= hi:
        raise InstructionError(f"speed must be between {lo} and {hi}, got {speed}")
    for limit, name in zip((0.6, 0.85, 1.15, 1.6), SPEED_ORDER):
        if speed < limit:
            return name
    return SPEED_ORDER[-1]


def tag_fields(instructions: str) -> tuple[dict, str]:
    """(fields named by the leading Step-Audio tags, the text after them)."""
    inst, rest = parse_tags(instructions.strip())
    if rest == instructions.strip():
        return {}, rest
    given = {k: v for k, v in vars(inst).items() if v != getattr(Instruction(), k)}
    prefix = instructions.strip()[:len(instructions.strip()) - len(rest)]
    tags = {TAG_ALIASES.get(t, t) for t in re.findall(r"\(([^()]+)\)", prefix)}
    if any(t in dialect_tags for dialect_tags, _lang in DIALECTS.values() for t in tags):
        given["dialect"] = inst.dialect
    return given, rest


def understand(instructions: str | None, speed: float | None = None, text: str = "",
               speaker: str = "") -> Instruction:
    """The instruction for one request.

    Args:
        instructions: Step-Audio tags and/or free text (None or blank: neutral speech).
        speed: OpenAI's ``speed``; it sets the speed unless the instructions name one, and may
            not contradict them.
        text: the input, whose script picks the dialect when the instructions name none
            (``engine.spec.texts.detect_lang``).
        speaker: the clone voice's name ("" for none).
    Raises:
        InstructionError: an instruction not understood, contradicting itself or the text.
    """
    fields, rest = tag_fields(instructions or "")
    for kind, value in (free_text(rest) if rest.strip() else {}).items():
        _put(fields, kind, value)
    if speed is not None:
        by_speed = speed_name(speed)
        if fields.get("speed", by_speed) != by_speed and by_speed != "normal":
            raise InstructionError(f"speed {speed} ({by_speed}) contradicts the instructions' speed "
                                   f"{fields['speed']}; give one")
        fields.setdefault("speed", by_speed)
    lang = detect_lang(text)
    if "dialect" not in fields:
        if lang not in DEFAULT_DIALECT:
            raise InstructionError("input has no letters of a supported script (en, zh, ja, ko)")
        fields["dialect"] = DEFAULT_DIALECT[lang]
    inst = Instruction(**fields, speaker=speaker)
    if lang is not None:
        inst.check_text_language(lang)
    return inst
