"""``stepaudio``: the released Step-Audio speech stack behind the codec interface melvq has.

    >>> codec = StepAudioCodec.from_spec("stepaudio:/models/step-audio")      # doctest: +SKIP
    >>> ids = codec.tokenize(wav, 44100)          # any rate >= 16 kHz -> int32 LM ids, 41.67/s
    >>> wav22 = codec.detokenize(ids)             # float32 at 22050 Hz, the default voice
    >>> voice = codec.voice("speakers/Tingting_prompt.wav")
    >>> wav22 = codec.detokenize(ids, voice=voice, music=True)   # rap / humming: the Music decoder

Encoding is Step-Audio-Tokenizer (:mod:`engine.stepaudio.tokenizer`: preprocessing, vq02, vq06,
the 2:3 merge). Decoding is a CosyVoice-300M-25Hz decoder (:mod:`engine.stepaudio.flow` then
:mod:`engine.stepaudio.hift`) conditioned on a voice prompt as upstream's ``StepAudioTTS`` does it:
the prompt's mel and CAM++ embedding from the common decoder dir, its tokens from the tokenizer
(trimmed, as ``wav2token``), used by both decoders. Without a voice the codec uses
``default_voice`` (a prompt wav; by default the project's built-in speaker ``lin``). Decoding
is seeded (flow noise and HiFT source), so the same ids give the same audio.

Spec options (``from_spec``), e.g. ``stepaudio:/models/step-audio?voice=me.wav&steps=10``:
``voice`` (the default voice prompt wav), ``steps`` (Euler steps, 10), ``seed`` (0), ``dither``
(vq02 fbank dither, 0), ``device`` (cuda when there is one, else cpu), ``dtype`` of the flow
(bfloat16 on cuda as upstream, float32 on cpu; HiFT always runs in float32).

The version (``stepaudio-1+<digest>``, :mod:`engine.stepaudio.layout`) identifies the
tokenizer's and both decoders' files; the voice is per record, not part of the codec identity.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
import torch

from engine.device import has_cuda
from engine.speakers import builtin_prompt, prompt_path
from engine.stepaudio.audio import load_audio
from engine.stepaudio.flow import FlowDecoder
from engine.stepaudio.hift import HiFT
from engine.stepaudio.layout import StepAudioCheckpoint, resolve
from engine.stepaudio.merge import decoder_tokens
from engine.stepaudio.prompt import PromptConditioner
from engine.stepaudio.tokenizer import StepAudioTokenizer
from engine.tokens import teacher_audio_ids
from manifests.errors import UserError
from manifests.stage import Stage

DEFAULT_SPEAKER = "lin"
MUSIC_STYLES = ("rap", "humming")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# spec option -> (constructor argument, type)
OPTIONS = {"voice": ("default_voice", str), "steps": ("n_steps", int), "seed": ("seed", int),
           "dither": ("dither", float), "device": ("device", str), "dtype": ("dtype", DTYPES.__getitem__)}


@dataclass(frozen=True)
class Voice:
    """A decoder voice prompt: ``tokens`` int64 ``[n]`` (0..5119), ``mel`` float32
    ``[frames, 80]`` of the 22.05 kHz prompt, ``embedding`` float32 ``[192]``."""

    tokens: np.ndarray
    mel: np.ndarray
    embedding: np.ndarray
    source: str


class StepAudioCodec(Stage):
    """Step-Audio-Tokenizer + CosyVoice-300M-25Hz(-Music) as one codec and decode stage.

    Args:
        checkpoint: the released dirs (:func:`engine.stepaudio.layout.resolve`).
        default_voice: prompt wav used when a decode names no voice.
        device, dtype: where the flow runs (fp32 on CPU; bf16 on GPU as upstream). HiFT is fp32.
        n_steps: Euler steps of the flow (upstream: 10). seed: noise seed of flow and HiFT.
        dither: the vq02 fbank dither (upstream 1.0; 0 keeps encoding deterministic).
    Models load on first use (or :meth:`setup`).
    """

    name = "stepaudio"
    sample_rate = 22050
    batch_size = 1

    def __init__(self, checkpoint: StepAudioCheckpoint, default_voice: str | os.PathLike | None = None,
                 device: str = "cpu", dtype: torch.dtype = torch.float32, n_steps: int = 10,
                 seed: int = 0, dither: float = 0.0):
        if n_steps < 1 or dither < 0:
            raise UserError(f"stepaudio codec: steps must be >= 1 and dither >= 0 (got {n_steps}, {dither})")
        if default_voice is not None and not Path(default_voice).is_file():
            raise UserError(f"{default_voice}: no such voice prompt file")
        self.checkpoint = checkpoint.check()
        self.version = checkpoint.version()
        self.default_voice = Path(default_voice or builtin_prompt(DEFAULT_SPEAKER)[0])
        self.device, self.dtype, self.n_steps, self.seed, self.dither = device, dtype, n_steps, seed, dither
        self._tokenizer = self._conditioner = None
        self._decoders: dict[bool, tuple[FlowDecoder, HiFT]] = {}
        self._voices: dict[tuple, Voice] = {}

    def __getstate__(self) -> dict:
        # Ray ships stages to workers by pickle: loaded models (onnxruntime sessions cannot be
        # pickled) stay behind and load again on first use there.
        return {**self.__dict__, "_tokenizer": None, "_conditioner": None, "_decoders": {}, "_voices": {}}

    @classmethod
    def from_spec(cls, spec: str, **kwargs) -> "StepAudioCodec":
        """``stepaudio:MODEL_PATH`` or ``stepaudio:TOKENIZER_DIR,TTS_DIR`` (see layout), with
        ``?key=value&...`` options (module docstring); ``kwargs`` override both.

        Raises:
            UserError: a bad spec, option or value, or a missing checkpoint file (one line).
        """
        location, options = split_options(spec)
        gpu = has_cuda()
        args = {"device": "cuda" if gpu else "cpu", "dtype": torch.bfloat16 if gpu else torch.float32}
        for key, value in options.items():
            if key not in OPTIONS:
                raise UserError(f"unknown stepaudio codec option {key!r} in {spec!r}; known: {', '.join(OPTIONS)}")
            name, kind = OPTIONS[key]
            try:
                args[name] = kind(value)
            except (ValueError, KeyError):
                raise UserError(f"stepaudio codec option {key}={value!r} in {spec!r} is not a valid "
                                f"{'dtype (' + ', '.join(DTYPES) + ')' if key == 'dtype' else kind.__name__}") from None
        if args["device"] == "cpu" and "dtype" not in options:
            args["dtype"] = torch.float32
        return cls(resolve(location), **{**args, **kwargs})

    # -- lazy parts ------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> StepAudioTokenizer:
        if self._tokenizer is None:
            self._tokenizer = StepAudioTokenizer.from_dir(self.checkpoint.tokenizer_dir, dither=self.dither)
        return self._tokenizer

    @property
    def conditioner(self) -> PromptConditioner:
        if self._conditioner is None:
            self._conditioner = PromptConditioner.from_dir(self.checkpoint.decoder_dir())
        return self._conditioner

    def decoder(self, music: bool = False) -> tuple[FlowDecoder, HiFT]:
        """(flow, HiFT) of the common or the Music decoder dir."""
        if music not in self._decoders:
            root = self.checkpoint.decoder_dir(music)
            flow = FlowDecoder.from_dir(root, device=self.device, dtype=self.dtype)
            self._decoders[music] = (flow, HiFT.from_dir(root).to(self.device))
        return self._decoders[music]

    def setup(self) -> None:
        """Load the tokenizer, both decoders and the default voice."""
        self.decoder(False), self.decoder(True)
        self.voice(self.default_voice)

    # -- encoding --------------------------------------------------------------------------------
    def tokenize(self, wav: np.ndarray, sample_rate: int = 16000, trim: bool = False) -> np.ndarray:
        """Audio ``[samples]`` or ``[channels, samples]`` at ``sample_rate`` (>= 16 kHz) ->
        interleaved LM ids int32 ``[5N]``. ``trim``: upstream's prompt trim (for voice prompts)."""
        return self.tokenizer.encode(wav, sample_rate, trim=trim).ids.astype(np.int32)

    def voice(self, path: str | os.PathLike) -> Voice:
        """The voice prompt of a recording (cached per file and modification time)."""
        path = Path(path)
        key = (str(path), path.stat().st_mtime_ns if path.exists() else 0)
        if key not in self._voices:
            wav, sr = load_audio(path)
            feats = self.conditioner(wav, sr, str(path))
            tokens = self.tokenizer.encode(wav, sr, trim=True, source=str(path)).decoder_tokens
            self._voices[key] = Voice(tokens, feats.mel, feats.embedding, str(path))
        return self._voices[key]

    # -- decoding --------------------------------------------------------------------------------
    def detokenize(self, ids, voice: Voice | None = None, music: bool = False) -> np.ndarray:
        """LM audio ids ``[n]`` -> float32 waveform at 22050 Hz (256 samples per mel frame).

        Args:
            voice: the prompt to speak like (default: :attr:`default_voice`).
            music: decode with CosyVoice-300M-25Hz-Music (rap and humming).
        """
        voice = voice or self.voice(self.default_voice)
        flow, hift = self.decoder(music)
        mel = flow.inference(decoder_tokens(ids), voice.tokens, voice.mel, voice.embedding,
                             n_steps=self.n_steps, seed=self.seed)
        return hift.inference(mel, seed=self.seed)

    def process(self, records: list[dict]) -> list[dict]:
        """Records with ``tokens`` + ``audio`` (22.05 kHz) and ``n_tokens``, voiced by the
        record's ``speaker_wav`` when it has one (else a built-in ``speaker``'s prompt, else the
        default voice), with the Music decoder for rap and humming.
        Ids that do not decode set ``error`` instead of raising."""
        return [self._decode_record(r) for r in records]

    def _decode_record(self, record: dict) -> dict:
        out = {**record, "audio": None, "n_tokens": 0}
        if out.get("error") or out.get("tokens") is None:
            return out
        try:
            ids = teacher_audio_ids(out["tokens"])
        except ValueError as exc:
            out["error"] = f"invalid teacher tokens: {exc}"
            return out
        try:
            # the voice the LM teacher prompted with: the speaker's wav, a built-in speaker's,
            # else the default
            wav = prompt_path(record.get("speaker_wav") or "", record.get("speaker") or "")
            if not wav and record.get("speaker"):
                wav = builtin_prompt(record["speaker"])[0]
            voice = self.voice(wav) if wav else None
        except ValueError as exc:  # a UserError: a missing, silent or 8 kHz prompt, an unknown speaker
            out["error"] = f"voice prompt: {exc}"
            return out
        out["audio"] = self.detokenize(ids, voice, music=record.get("style") in MUSIC_STYLES)
        out.update(tokens=ids, n_tokens=int(ids.size))
        return out


def split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``"stepaudio:DIR?steps=4"`` -> ``("stepaudio:DIR", {"steps": "4"})``."""
    location, sep, query = spec.partition("?")
    if not sep:
        return spec, {}
    try:
        return location, dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        raise UserError(f"bad options {query!r} in codec spec {spec!r}: expected key=value&key=value") from None
