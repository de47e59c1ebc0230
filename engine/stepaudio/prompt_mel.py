"""The prompt mel of CosyVoice-300M-25Hz: the flow decoder's conditioning frames, from the
``feat_extractor:`` section of ``cosyvoice.yaml`` (Matcha-TTS's HiFi-GAN mel).

Reflect-pad (n_fft - hop) / 2 each side, STFT without centring (periodic Hann), magnitude
sqrt(re^2 + im^2 + 1e-9), Slaney mel filters (librosa), natural log of max(x, 1e-5).

    mel = MelConfig.from_section(cfg["feat_extractor"], "cosyvoice.yaml")
    feats = mel(wav_22k)       # float [samples] at 22050 Hz -> float32 [frames, 80], frames = samples // 256
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from manifests.errors import UserError


@dataclass(frozen=True)
class MelConfig:
    """Keyword arguments of upstream's ``mel_spectrogram`` (defaults: the released values)."""

    n_fft: int = 1024
    num_mels: int = 80
    sampling_rate: int = 22050
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0
    fmax: float | None = 8000
    center: bool = False
    basis: torch.Tensor = field(init=False, repr=False, compare=False)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], where: str | Path = "cosyvoice.yaml") -> MelConfig:
        """From the ``feat_extractor`` mapping (``!name:...mel_spectrogram`` with its kwargs)."""
        if not isinstance(section, Mapping):
            raise UserError(f"{where}: feat_extractor is not a mapping of mel_spectrogram arguments")
        names = {f.name for f in fields(cls)} - {"basis"}
        kw = {}
        for key, value in section.items():
            if key.startswith("_"):
                continue
            if key not in names:
                raise UserError(f"{where}: feat_extractor has an unknown key {key!r}")
            kw[key] = value
        return cls(**kw)

    def __post_init__(self):
        import librosa

        basis = librosa.filters.mel(sr=self.sampling_rate, n_fft=self.n_fft, n_mels=self.num_mels,
                                    fmin=self.fmin, fmax=self.fmax)
        object.__setattr__(self, "basis", torch.from_numpy(basis).float())

    def __call__(self, wav: np.ndarray | torch.Tensor) -> np.ndarray:
        """Log-mel of mono audio at ``sampling_rate``: ``[samples]`` -> float32 ``[frames, num_mels]``."""
        y = torch.as_tensor(np.asarray(wav, dtype=np.float32)).reshape(1, 1, -1)
        pad = (self.n_fft - self.hop_size) // 2
        if y.shape[-1] <= pad:
            raise UserError(f"audio of {y.shape[-1]} samples is too short for a mel frame")
        y = torch.nn.functional.pad(y, (pad, pad), mode="reflect")[:, 0]
        spec = torch.stft(y, self.n_fft, hop_length=self.hop_size, win_length=self.win_size,
                          window=torch.hann_window(self.win_size), center=self.center, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        magnitude = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
        mel = torch.log(torch.clamp(torch.matmul(self.basis, magnitude), min=1e-5))
        return mel[0].T.contiguous().numpy()
