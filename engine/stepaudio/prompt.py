"""Prompt conditioning of the CosyVoice-300M-25Hz decoder from a prompt recording: the prompt mel
(22.05 kHz, the flow's ``prompt_feat``) and the CAM++ speaker embedding (16 kHz, the flow's
``embedding``), as upstream's ``preprocess_prompt_wav`` makes them: mono (channel mean), each
rate resampled from the file's own rate, no normalisation or trim (those are the tokenizer's).

    cond = PromptConditioner.from_dir("Step-Audio-TTS-3B/CosyVoice-300M-25Hz")
    feats = cond.from_file("speakers/Tingting_prompt.wav")
    feats.mel          # float32 [frames, 80], frames = samples_22k // 256
    feats.embedding    # float32 [192]

The prompt tokens (the flow's ``prompt_token``) come from the Step-Audio tokenizer, not from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import MissingModel
from engine.stepaudio.audio import check_audible, load_audio, resample
from engine.stepaudio.campplus import CampPlus
from engine.stepaudio.fbank import fbank
from engine.stepaudio.prompt_mel import MelConfig
from engine.stepaudio.yaml_config import read_hyperpyyaml, require
from manifests.errors import UserError

EMBED_RATE = 16000  # CAM++ runs on the 16 kHz prompt
MIN_RATE = 16000  # below this neither the fbank's 8 kHz band nor the mel's fmax is in the file
MIN_SECONDS = 0.1


@dataclass(frozen=True)
class PromptFeatures:
    """What the flow decoder takes from a prompt recording."""

    mel: np.ndarray  # float32 [frames, num_mels] at sampling_rate / hop_size frames per second
    embedding: np.ndarray  # float32 [192] CAM++ speaker embedding (not normalised; the flow does it)


class PromptConditioner:
    """The prompt mel (``feat_extractor:`` of ``cosyvoice.yaml``) and ``campplus.onnx``."""

    def __init__(self, mel: MelConfig, campplus: CampPlus):
        self.mel_config, self.campplus = mel, campplus

    @classmethod
    def from_dir(cls, cosyvoice_dir: str | Path) -> PromptConditioner:
        """Read ``cosyvoice.yaml`` (as data) and ``campplus.onnx`` of a decoder dir."""
        cosyvoice_dir = Path(cosyvoice_dir)
        yaml_path = cosyvoice_dir / "cosyvoice.yaml"
        if not yaml_path.is_file():
            raise MissingModel(f"{yaml_path}: no such file (the CosyVoice decoder dir of Step-Audio-TTS-3B has it)")
        section = require(read_hyperpyyaml(yaml_path), "feat_extractor", str(yaml_path))
        return cls(MelConfig.from_section(section, yaml_path), CampPlus(cosyvoice_dir / "campplus.onnx"))

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sampling_rate

    def mel(self, wav: np.ndarray) -> np.ndarray:
        """Prompt mel of mono audio at ``sample_rate`` (22050): ``[samples]`` -> float32 ``[frames, 80]``."""
        return self.mel_config(wav)

    def embedding(self, wav16k: np.ndarray) -> np.ndarray:
        """CAM++ embedding of mono 16 kHz audio ``[samples]`` -> float32 ``[192]``."""
        feats = fbank(np.asarray(wav16k, dtype=np.float32), sample_rate=EMBED_RATE, num_mel_bins=80, dither=0.0)
        if feats.shape[0] == 0:
            raise UserError(f"audio of {len(wav16k)} samples at 16 kHz is too short for a fbank frame")
        return self.campplus(feats.numpy())

    def __call__(self, wav: np.ndarray, sr: int, source: str = "prompt") -> PromptFeatures:
        """Features of a mono prompt ``[samples]`` at rate ``sr`` (any rate >= 16 kHz).

        Raises ``UserError`` naming ``source`` for a rate below 16 kHz, a silent prompt or one
        shorter than 0.1 s."""
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim == 2:
            wav = wav.mean(axis=0, dtype=np.float32)
        if sr < MIN_RATE:
            raise UserError(f"{source}: sample rate {sr} Hz is below {MIN_RATE} Hz; a voice prompt needs "
                            f"at least {MIN_RATE} Hz audio (the speaker embedding reads up to 8 kHz)")
        if len(wav) < MIN_SECONDS * sr:
            raise UserError(f"{source}: {len(wav) / sr:.3f} s is too short for a voice prompt (at least {MIN_SECONDS} s)")
        check_audible(wav, source)
        return PromptFeatures(mel=self.mel(resample(wav, sr, self.sample_rate)),
                              embedding=self.embedding(resample(wav, sr, EMBED_RATE)))

    def from_file(self, path: str | Path) -> PromptFeatures:
        """Features of a prompt file (wav/flac, any rate >= 16 kHz, width or channel count)."""
        wav, sr = load_audio(path)
        return self(wav, sr, str(path))
