"""Step-Audio-Tokenizer end to end: a recording -> Step-Audio LM audio ids (upstream's ``wav2token``).

Preprocess (mono, 16 kHz, peak-normalised, trimmed for TTS prompts), vq02 codes (streaming
Paraformer + k-means), vq06 codes (``speech_tokenizer_v1.onnx``), then the 2:3 merge.

    tok = StepAudioTokenizer.from_dir("Step-Audio-Tokenizer")
    enc = tok.encode_file("speakers/Tingting_prompt.wav")     # a TTS prompt: trimmed
    enc.ids               # int64 [5 * groups], 65536 + vq02 / 66560 + vq06, 41.67 per second
    enc.decoder_tokens    # int64 [same], the flow's prompt tokens (ids - 65536)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.stepaudio.audio import check_audible, load_audio, preprocess
from engine.stepaudio.merge import decoder_tokens, merge
from engine.stepaudio.vq02 import Vq02Tokenizer
from engine.stepaudio.vq06 import Vq06Tokenizer
from manifests.errors import UserError

VQ06_ONNX = "speech_tokenizer_v1.onnx"


@dataclass(frozen=True)
class EncodedAudio:
    """One recording's codes: ``vq02`` int32 ``[n02]``, ``vq06`` int32 ``[n06]``, merged ``ids``
    int64 ``[5 * min(n02 // 2, n06 // 3)]``; ``wav16k`` is the preprocessed tokenizer input."""

    vq02: np.ndarray
    vq06: np.ndarray
    ids: np.ndarray
    wav16k: np.ndarray

    @property
    def decoder_tokens(self) -> np.ndarray:
        """``ids - 65536``: the mixed 0..5119 stream the CosyVoice decoders take as prompt tokens."""
        return decoder_tokens(self.ids)


class StepAudioTokenizer:
    """vq02 + vq06 + merge behind one call, as upstream's ``StepAudioTokenizer.wav2token``."""

    def __init__(self, vq02: Vq02Tokenizer, vq06: Vq06Tokenizer):
        self.vq02 = vq02
        self.vq06 = vq06

    @classmethod
    def from_dir(cls, tokenizer_dir, *, dither: float = 0.0, seed: int = 0,
                 threads: int = 1) -> "StepAudioTokenizer":
        """Load a released ``Step-Audio-Tokenizer`` directory. ``dither`` is the Paraformer fbank
        dither (upstream runs FunASR's 1.0; the default 0 makes codes deterministic)."""
        tokenizer_dir = Path(tokenizer_dir)
        return cls(Vq02Tokenizer.from_dir(tokenizer_dir, dither=dither, seed=seed),
                   Vq06Tokenizer.from_file(tokenizer_dir / VQ06_ONNX, threads=threads))

    def encode(self, wav, sample_rate: int, *, trim: bool = True, source: str = "audio") -> EncodedAudio:
        """Mono or ``[channels, samples]`` float audio at ``sample_rate`` (>= 16 kHz) -> codes.

        Args:
            trim: upstream's TTS-prompt silence trim (``wav2token``'s default); False for plain
                encoding of a whole recording.
            source: names the input in errors.
        Raises:
            UserError: silent or empty audio, a rate below 16 kHz, audio too short for codes.
        """
        wav = np.asarray(wav, dtype=np.float32)
        check_audible(wav, source)
        wav16k = preprocess(wav, int(sample_rate), trim=trim, source=source)
        vq02 = self.vq02.codes(wav16k)
        vq06 = self.vq06.codes(wav16k)
        ids = merge(vq02, vq06)
        if ids.size == 0:
            raise UserError(f"{source}: {len(wav16k) / 16000:.2f} s of audio gives {len(vq02)} vq02 and "
                            f"{len(vq06)} vq06 codes, not one whole 2:3 group (120 ms)")
        return EncodedAudio(vq02=vq02, vq06=vq06, ids=ids, wav16k=wav16k)

    def encode_file(self, path, *, trim: bool = True) -> EncodedAudio:
        """Any wav/flac the audio loader reads (rate >= 16 kHz, any width, mono or stereo)."""
        wav, sr = load_audio(path)
        return self.encode(wav, sr, trim=trim, source=str(path))
