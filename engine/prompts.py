"""The Step-Audio TTS prompt: a chat with an optional few-shot clone turn.

    [bos] [BOT] "system\\n" + system prompt [EOT]
    [BOT] "human\\n" + prompt_text [EOT]                 } clone turn, when a speaker prompt is given
    [BOT] "assistant\\n" + prompt audio ids [EOT]        }
    [BOT] "human\\n" + tagged target text [EOT]
    [BOT] "assistant\\n"          -> the model continues with audio ids and ends with EOT

    >>> tok = ByteTokenizer()
    >>> ids = build_tts_prompt("Hello.", Instruction(dialect="english"), tok)
    >>> tok.decode(ids[-11:])
    'assistant\\n'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from engine.instructions import DIALECTS, EMOTIONS, SPEEDS, STYLES, Instruction
from engine.tokens import STEP_AUDIO, TokenLayout

BOS, EOS, EOT, BOT = 1, 2, 3, 4


class TextTokenizer(Protocol):
    """Text <-> ids below the layout's ``text_size``; ``bos``/``bot``/``eot`` are special ids."""

    bos: int
    bot: int
    eot: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes at ids ``offset..offset+255`` after a few special ids (pad 0, bos 1, eos 2,
    EOT 3, BOT 4, as in the Step tokenizer). Students use it with a compact ``TokenLayout``."""

    bos, eos, eot, bot = BOS, EOS, EOT, BOT

    def __init__(self, offset: int = 8):
        self.offset = offset

    @property
    def text_size(self) -> int:
        return self.offset + 256

    def layout(self) -> TokenLayout:
        """A compact layout: these text ids, then the Step-Audio audio codebooks."""
        size = self.text_size + STEP_AUDIO.vq02_size + STEP_AUDIO.vq06_size
        return TokenLayout(text_size=self.text_size, vocab_size=size)

    def encode(self, text: str) -> list[int]:
        return [b + self.offset for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(i - self.offset for i in ids if self.offset <= i < self.offset + 256)
        return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ClonePrompt:
    """A speaker prompt for voice cloning: its transcript and its audio as LM ids."""

    speaker: str
    text: str
    audio_ids: tuple[int, ...]


def _tag_list(values) -> str:
    return "、".join(f"({v})" for v in values if v)


def system_prompt(instruction: Instruction, speaker: str = "") -> str:
    """The system turn: a voice-actor brief listing the tag families, or, for rap and humming,
    a short brief to keep the timbre of the history."""
    if instruction.style in ("rap", "humming"):
        return "Perform the text as the tag says, keeping the voice and timbre heard earlier in this chat."
    emotions = _tag_list(f"{zh}1-5" for zh in EMOTIONS.values())
    dialects = _tag_list("".join(tags) for tags, _ in DIALECTS.values())
    brief = (
        "You are a voice actor. Read the text aloud, following the tags in parentheses before it.\n"
        f"Emotion tags, with intensity 1 to 5: {emotions}.\n"
        f"Language and dialect tags: {dialects}.\n"
        f"Style tags: {_tag_list(STYLES.values())}. Speed tags: {_tag_list(SPEEDS.values())}."
    )
    if speaker:
        brief += f"\nUse the voice of [{speaker}]."
    return brief


def _turn(tok: TextTokenizer, role: str, body: Sequence[int]) -> list[int]:
    return [tok.bot, *tok.encode(f"{role}\n"), *body, tok.eot]


def build_tts_prompt(text: str, instruction: Instruction, tok: TextTokenizer,
                     clone: ClonePrompt | None = None) -> list[int]:
    """Prompt ids that end where the model should start writing audio ids.

    Args:
        text: the target text, without tags (tags come from ``instruction``).
        clone: speaker prompt placed as a few-shot turn, its audio as interleaved LM ids.
    """
    shared, own = tts_prompt_parts(text, instruction, tok, clone)
    return shared + own


def tts_prompt_parts(text: str, instruction: Instruction, tok: TextTokenizer,
                     clone: ClonePrompt | None = None) -> tuple[list[int], list[int]]:
    """:func:`build_tts_prompt` in two parts: (the system and clone turns, which every request
    with this voice and style shares, the request's own turn). A server computes the first
    part's KV once."""
    speaker = clone.speaker if clone else instruction.speaker
    shared = [tok.bos, *_turn(tok, "system", tok.encode(system_prompt(instruction, speaker)))]
    if clone is not None:
        shared += _turn(tok, "human", tok.encode(clone.text))
        shared += _turn(tok, "assistant", clone.audio_ids)
    own = _turn(tok, "human", tok.encode(instruction.tags() + text))
    return shared, own + [tok.bot, *tok.encode("assistant\n")]
