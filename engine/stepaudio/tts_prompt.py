"""Step-Audio-TTS-3B prompts as upstream builds them, from the released ``tokenizer.model``.

    >>> prompter = TTSPrompter.from_dir("Step-Audio-TTS-3B/")          # doctest: +SKIP
    >>> speakers = BuiltinSpeakers.from_dir("Step-Audio/speakers/")      # doctest: +SKIP
    >>> voice = speakers.prompt("Tingting", "（RAP）我踏上自由的征途")    # doctest: +SKIP
    >>> voice.key, voice.wav.name                                          # doctest: +SKIP
    ('TingtingRAP', 'TingtingRAP_prompt.wav')
    >>> ids = prompter.build("（RAP）我踏上自由的征途", voice.text, prompt_ids, speaker="Tingting")  # doctest: +SKIP
    >>> is_music("（RAP）我踏上自由的征途")    # -> decode with CosyVoice-300M-25Hz-Music
    True

The layout (upstream ``tts.py``), every turn opened by BOT (4) and closed by EOT (3)::

    [1] [4] enc("system\\n" + system prompt) [3]
    [4] enc("human\\n") text(prompt_text) [3]     [4] enc("assistant\\n") prompt audio ids [3]
    [4] enc("human\\n") text(target)      [3]     [4] enc("assistant\\n")   -> audio ids, then EOT

``enc`` is the tokenizer's ``encode``, which adds BOS (1) in front of each role piece when
``tokenizer_config.json`` says ``add_bos_token`` (LlamaTokenizer's default); ``text(s)`` is
``enc("\\n" + s)[len(enc("\\n")):]``, the text without BOS or the leading "▁" a bare encode adds.
A built-in speaker or a clone prompt always fills the few-shot turn.

The system prompt (:func:`system_prompt`): a leading ``(RAP)`` / ``(哼唱)`` tag (half- or
full-width parentheses) picks the rap or the humming prompt (humming when "哼唱" occurs anywhere in
the text) and the Music decoder; else the voice-actor prompt, naming ``[speaker]`` for a built-in
speaker and without a name for a clone prompt. Only the first tag counts: in ``(中文)(RAP)text``
the tag is 中文, and in ``（RAP）（高兴1）text`` upstream's pattern takes ``RAP）（高兴1`` as the tag,
so neither is music. Put the style tag first, alone in its parentheses (:func:`tagged_text`
does that for an :class:`engine.instructions.Instruction`).

Decoding as upstream: sampling at temperature 0.7 with transformers' default top-k 50,
``max_length`` 8192 including the prompt, the repetition guard :func:`repetition_ban`, and
the last generated id dropped (the EOT, or an audio id when the length ran out) before the
decoder gets ``ids - 65536`` (:func:`decoder_tokens`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.errors import MissingModel, MissingPackage
from engine.instructions import STYLES, Instruction
from manifests.errors import UserError

BOS, EOT, BOT = 1, 3, 4  # upstream writes these ids, not the tokenizer's
AUDIO_OFFSET = 65536     # LM id of mixed decoder token 0
TEMPERATURE = 0.7
TOP_K = 50               # transformers' generate default, which upstream keeps
MAX_LENGTH = 8192        # prompt + generated ids
GUARD_WINDOW = 10
GUARD_THRESHOLD = 0.1    # ban the last id when it is more than 10 % of the window

MUSIC_TAGS = ("RAP", "哼唱")
RAP_PROMPT = "请参考对话历史里的音色，用RAP方式将文本内容大声说唱出来。"
HUMMING_PROMPT = "请参考对话历史里的音色，用哼唱的方式将文本内容大声唱出来。"
# The voice-actor prompt: its tag lists, then the closing instruction; the named-speaker
# variant adds SPEAKER_CLAUSE before 根据.
_TAG_FAMILIES = (
    ("情感标签涵盖了多种情绪状态，包括但不限于：", ("高兴1", "高兴2", "生气1", "生气2", "悲伤1", "撒娇1")),
    ("语种或方言标签包含多种语言或方言，包括但不限于：", ("中文", "英文", "韩语", "日语", "四川话", "粤语", "广东话")),
    ("音乐哼唱标签包含多种类型歌曲哼唱，包括但不限于：", ("RAP", "哼唱")),
    ("语音调整标签，包括但不限于：", ("慢速1", "慢速2", "快速1", "快速2")),
)
_ACTOR_HEAD = ("作为一名卓越的声优演员，你的任务是根据文本中（）或()括号内标注的情感、语种或方言、音乐哼唱、"
               "语音调整等标签，以丰富细腻的情感和自然顺畅的语调来朗读文本。\n")
_ACTOR_TAIL = ("根据这些情感标签的指示，调整你的情感、语气、语调和哼唱节奏，以确保文本的情感和意义得到准确而"
               "生动的传达，如果没有()或（）括号，则根据文本语义内容自由演绎。")
SPEAKER_CLAUSE = "使用[{speaker}]的声音，"
_ACTOR_LISTS = "\n".join(f"# {head}\n" + "".join(f'- "{t}"\n' for t in tags) for head, tags in _TAG_FAMILIES)


def actor_prompt(speaker: str = "") -> str:
    """The voice-actor system prompt, naming ``[speaker]`` when one is given."""
    clause = SPEAKER_CLAUSE.format(speaker=speaker) if speaker else ""
    return f"{_ACTOR_HEAD}{_ACTOR_LISTS}\n请在朗读时，{clause}{_ACTOR_TAIL}"


# The leading tag as upstream matches it: an opening paren of either width, anything but
# half-width parens, a closing paren of either width (greedy).
_LEADING_TAG = re.compile(r"^([（(][^()]*[）)]).*$", re.DOTALL)


def instruction_name(text: str) -> str:
    """The leading tag of ``text`` without its parentheses ("" when the text has none)."""
    m = _LEADING_TAG.match(text)
    return m.group(1).strip("()（）") if m else ""


def is_music(text: str) -> bool:
    """True when the text starts with a RAP or 哼唱 tag: decode with the Music decoder."""
    return instruction_name(text) in MUSIC_TAGS


def system_prompt(text: str, speaker: str = "") -> str:
    """Upstream's choice of system prompt for ``text`` (tags included) and a built-in
    ``speaker`` name ("" for a clone prompt)."""
    if is_music(text):
        return HUMMING_PROMPT if "哼唱" in text else RAP_PROMPT
    return actor_prompt(speaker)


def tagged_text(text: str, instruction: Instruction) -> str:
    """``text`` with the instruction's tags, the style tag (RAP, 哼唱) first so that upstream's
    leading-tag rule picks the music prompt and decoder: rap in Mandarin -> "(RAP)(中文)text"."""
    tags, style = instruction.tags(), STYLES[instruction.style]
    if style:
        tags = f"({style})" + tags.replace(f"({style})", "", 1)
    return tags + text


def repetition_ban(ids: Sequence[int], window: int = GUARD_WINDOW,
                   threshold: float = GUARD_THRESHOLD) -> int | None:
    """The id upstream bans from the next step: the last id of ``ids`` (prompt and generated
    so far) when it makes up more than ``threshold`` of the last ``window`` ids; None while
    fewer than ``window`` ids exist or when it does not repeat."""
    if len(ids) < window:
        return None
    recent = list(ids[-window:])
    return int(recent[-1]) if recent.count(recent[-1]) / window > threshold else None


def max_new_tokens(prompt_len: int) -> int:
    """Ids the model may write after a prompt of ``prompt_len`` ids (upstream's max_length)."""
    return max(MAX_LENGTH - prompt_len, 0)


def decoder_tokens(generated: Sequence[int]) -> list[int]:
    """The decoder's input from the generated ids as upstream takes it: the last id dropped,
    the rest shifted by -65536 (vq02 code c -> c, vq06 code c -> 1024 + c)."""
    return [int(i) - AUDIO_OFFSET for i in list(generated)[:-1]]


class StepTextTokenizer:
    """``tokenizer.model`` encoded the way upstream's ``AutoTokenizer`` (transformers'
    LlamaTokenizerFast converted from the SentencePiece model) does it.

    The text is first split at added tokens (the model's control and user-defined pieces such
    as "<s>" or "<|BOT|>", and ``added_tokens_decoder`` of the config), which become their ids;
    in each other segment spaces become "▁" and a "▁" is prefixed (transformers' Llama
    normalizer; the model's own SentencePiece normalization is not applied): to every segment
    when the config's ``legacy`` is true or absent (the default), else only to the segment at
    the start of the text and only when it does not start with one (the Metaspace
    pre-tokenizer). Then the model's pieces split it, with byte fallback. ``tokenizer_config.json`` decides BOS/EOS around
    each encode (``add_bos_token`` default True, ``add_eos_token`` default False).

    Args:
        model_file: the SentencePiece ``tokenizer.model``.
        config: the ``tokenizer_config.json`` dict ({} for LlamaTokenizer's defaults).
    """

    def __init__(self, model_file: str | Path, config: dict | None = None):
        try:
            import sentencepiece as spm
            from sentencepiece import sentencepiece_model_pb2 as pb
        except ImportError:
            raise MissingPackage("tokenizer.model needs sentencepiece: pip install sentencepiece") from None
        self.path = Path(model_file)
        config = config or {}
        proto = pb.ModelProto()
        try:
            proto.ParseFromString(self.path.read_bytes())
            if not proto.pieces:
                raise ValueError("no pieces")
        except Exception as exc:
            raise UserError(f"{self.path}: not a SentencePiece model ({type(exc).__name__})") from None
        norm = proto.normalizer_spec
        norm.name, norm.precompiled_charsmap = "identity", b""
        norm.add_dummy_prefix = norm.remove_extra_whitespaces = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.add_bos = bool(config.get("add_bos_token", True))
        self.add_eos = bool(config.get("add_eos_token", False))
        self.prefix_space = config.get("add_prefix_space") is not False
        self.legacy = config.get("legacy") is not False
        self.bos = self._special(config.get("bos_token"), self.sp.bos_id())
        self.eos = self._special(config.get("eos_token"), self.sp.eos_id())
        self.added = {p.piece: i for i, p in enumerate(proto.pieces)
                      if p.type in (p.CONTROL, p.USER_DEFINED, p.UNKNOWN)}
        for i, token in (config.get("added_tokens_decoder") or {}).items():
            content = token.get("content") if isinstance(token, dict) else None
            if content:
                self.added[content] = int(i)
        alternation = "|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True))
        self._split = re.compile(f"({alternation})") if self.added else None

    def _special(self, token, own: int) -> int:
        if isinstance(token, dict):
            token = token.get("content")
        if token:
            i = self.sp.piece_to_id(token)
            if self.sp.id_to_piece(i) == token:
                return i
        if own < 0:
            raise UserError(f"{self.path}: the tokenizer has no bos/eos piece to add")
        return own

    @classmethod
    def from_dir(cls, tts_dir: str | Path) -> "StepTextTokenizer":
        """``tokenizer.model`` and ``tokenizer_config.json`` (optional) of a TTS-3B dir."""
        tts_dir = Path(tts_dir)
        model = tts_dir / "tokenizer.model"
        if not model.is_file():
            raise MissingModel(f"{model}: missing (the Step-Audio-TTS-3B text tokenizer)")
        config_file = tts_dir / "tokenizer_config.json"
        config = {}
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{config_file}: not valid JSON ({exc})") from None
            if not isinstance(config, dict):
                raise UserError(f"{config_file}: expected a JSON object")
        return cls(model, config)

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def pieces(self, text: str) -> list[int]:
        """The ids of ``text`` alone, without BOS/EOS."""
        parts = self._split.split(text) if self._split else [text]
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.added[part])
            elif part:
                ids += self.segment(part, first=i == 0)
        return ids

    def segment(self, text: str, first: bool = True) -> list[int]:
        """The ids of text without added tokens; ``first``: it starts the encoded text."""
        norm = text.replace(" ", "▁")
        if self.prefix_space and (self.legacy or (first and not norm.startswith("▁"))):
            norm = "▁" + norm
        return list(self.sp.encode(norm, out_type=int))

    def encode(self, text: str) -> list[int]:
        """``tokenizer.encode(text)`` as upstream calls it (special tokens added)."""
        return [self.bos] * self.add_bos + self.pieces(text) + [self.eos] * self.add_eos

    def encode_text(self, text: str) -> list[int]:
        """Upstream's text encoding: ``encode("\\n" + text)[len(encode("\\n")):]``."""
        return self.encode("\n" + text)[len(self.encode("\n")):]

    def decode(self, ids: Sequence[int]) -> str:
        n = self.vocab_size
        return self.sp.decode([int(i) for i in ids if 0 <= i < n])


class TTSPrompter:
    """Step-Audio-TTS-3B prompt ids (see the module docstring for the layout).

    Args:
        tokenizer: a :class:`StepTextTokenizer` (or anything with its ``encode``/``encode_text``).
    """

    def __init__(self, tokenizer: StepTextTokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def from_dir(cls, tts_dir: str | Path) -> "TTSPrompter":
        return cls(StepTextTokenizer.from_dir(tts_dir))

    def build(self, text: str, prompt_text: str, prompt_ids: Sequence[int], speaker: str = "") -> list[int]:
        """The prompt ids; the model continues with audio ids and ends with EOT.

        Args:
            text: the target text with its tags, e.g. "（RAP）..." or "(高兴1)(粤语)...".
            prompt_text: the transcript of the voice prompt (built-in speaker or clone).
            prompt_ids: the voice prompt's audio as LM ids (65536 + mixed code), ``[5N]``.
            speaker: a built-in speaker's name (named in the system prompt); "" for a clone.
        Raises:
            UserError: empty text, or prompt ids outside the audio id range.
        """
        if not text:
            raise UserError("empty text: nothing to synthesize")
        bad = [int(i) for i in prompt_ids if not AUDIO_OFFSET <= int(i) < AUDIO_OFFSET + 5120]
        if bad:
            raise UserError(f"prompt audio id {bad[0]} is outside {AUDIO_OFFSET}..{AUDIO_OFFSET + 5119}")
        tok = self.tokenizer
        human, assistant = tok.encode("human\n"), tok.encode("assistant\n")
        ids = [BOS, BOT, *tok.encode(f"system\n{system_prompt(text, speaker)}"), EOT]
        ids += [BOT, *human, *tok.encode_text(prompt_text), EOT]
        ids += [BOT, *assistant, *(int(i) for i in prompt_ids), EOT]
        ids += [BOT, *human, *tok.encode_text(text), EOT]
        return ids + [BOT, *assistant]


@dataclass(frozen=True)
class SpeakerPrompt:
    """One built-in voice: its key in speakers_info.json, transcript and prompt wav."""

    key: str
    text: str
    wav: Path


class BuiltinSpeakers:
    """A ``speakers/`` folder as upstream ships it: ``speakers_info.json`` = {id: prompt text},
    a ``{id}_prompt.wav`` per id, and ``{name}RAP`` / ``{name}哼唱`` ids for the music styles."""

    def __init__(self, folder: str | Path, info: dict[str, str]):
        self.folder = Path(folder)
        self.info = dict(info)

    @classmethod
    def from_dir(cls, folder: str | Path) -> "BuiltinSpeakers":
        """Read and check ``folder/speakers_info.json`` and the wavs it names.

        Raises:
            UserError: a missing or malformed json, or a missing wav (one line, the file named).
        """
        folder = Path(folder)
        file = folder / "speakers_info.json"
        if not file.is_file():
            raise MissingModel(f"{file}: missing (the built-in speakers' index)")
        try:
            info = json.loads(file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{file}: not valid JSON ({exc})") from None
        if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in info.items()):
            raise UserError(f"{file}: expected an object of speaker id -> prompt text")
        for key in info:
            wav = folder / f"{key}_prompt.wav"
            if not wav.is_file():
                raise MissingModel(f"{wav}: missing (speaker {key!r} of {file})")
        return cls(folder, info)

    @property
    def names(self) -> list[str]:
        """Speaker ids that are not music variants of another id."""
        return [k for k in self.info if not any(k.endswith(t) and k[:-len(t)] in self.info for t in MUSIC_TAGS)]

    def prompt(self, speaker: str, text: str) -> SpeakerPrompt:
        """The voice prompt upstream uses for ``speaker`` reading ``text``: the ``RAP`` /
        ``哼唱`` variant when the text's leading tag is one.

        Raises:
            UserError: an unknown speaker or a missing variant.
        """
        name = instruction_name(text)
        key = f"{speaker}{name}" if name in MUSIC_TAGS else speaker
        if key not in self.info:
            what = f"no {name} variant {key!r}" if key != speaker else f"no speaker {speaker!r}"
            raise UserError(f"{self.folder / 'speakers_info.json'} has {what} "
                            f"(speakers: {', '.join(self.names) or 'none'})")
        return SpeakerPrompt(key, self.info[key], self.folder / f"{key}_prompt.wav")
