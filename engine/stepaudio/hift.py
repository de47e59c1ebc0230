"""HiFT, the vocoder of CosyVoice-300M-25Hz: an 80-bin mel at 22050 / 256 Hz -> 22.05 kHz audio.

Neural source filter + iSTFT (HiFTNet): an F0 predictor (weight-normed convs, ELU, linear, abs)
drives a sine source (the fundamental and its harmonics, voiced above a threshold, plus noise)
merged by tanh(Linear); the source's STFT joins the mel at every upsampling stage; the last conv
gives log-magnitude and phase of a small STFT that is inverted. Sizes come from the ``hift:``
section of ``cosyvoice.yaml``; weights from ``hift.pt`` (old-style weight norm, checked strictly).

    hift = HiFT.from_dir("Step-Audio-TTS-3B/CosyVoice-300M-25Hz")
    wav = hift.inference(mel)           # mel [80, frames] -> float32 [frames * 256], 22050 Hz
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import get_window

from engine.stepaudio.hift_weights import HiFTConfig, hift_params, load_checkpoint, read_hift_config


class HiFT:
    """The HiFT generator: folded fp32 weights ``params`` (name -> tensor) and its ``cfg``.

    Build with ``HiFT.from_dir(decoder_dir)`` or ``HiFT(cfg, state_dict_as_stored)``."""

    def __init__(self, cfg: HiFTConfig, state: dict[str, torch.Tensor], where: str | Path = "hift.pt"):
        self.cfg = cfg
        # Upstream's weights are nn.Parameters: aten's matmul picks its kernel (and so its float
        # rounding) by requires_grad, so the same flag gives the same bits. Every computation
        # runs under inference_mode: no graph is ever built.
        self.params = {n: t.requires_grad_() for n, t in hift_params(cfg, state, where).items()}
        # upstream's window: scipy's periodic Hann in float64, then float32 (torch.hann_window
        # differs from it in the last bit of some taps)
        self.window = torch.from_numpy(get_window("hann", cfg.n_fft, fftbins=True).astype(np.float32))
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> HiFT:
        """Move the weights to ``device`` (HiFT runs in fp32 everywhere, as upstream); returns self."""
        self.device = torch.device(device)
        self.params = {n: t.detach().to(self.device).requires_grad_() for n, t in self.params.items()}
        self.window = self.window.to(self.device)
        return self

    @classmethod
    def from_dir(cls, cosyvoice_dir: str | Path) -> HiFT:
        """Load the ``hift:`` section of ``cosyvoice.yaml`` and ``hift.pt`` from a decoder dir such
        as ``Step-Audio-TTS-3B/CosyVoice-300M-25Hz``. Raises ``MissingModel`` for a missing file and
        ``UserError`` for a bad yaml, missing / unexpected keys or a wrong shape (one line each)."""
        cosyvoice_dir = Path(cosyvoice_dir)
        cfg = read_hift_config(cosyvoice_dir / "cosyvoice.yaml")
        return cls(cfg, load_checkpoint(cosyvoice_dir / "hift.pt"), cosyvoice_dir / "hift.pt")

    @property
    def samples_per_frame(self) -> int:
        return self.cfg.samples_per_frame

    @torch.inference_mode()
    def f0(self, mel: torch.Tensor) -> torch.Tensor:
        """Predicted F0 in Hz: mel ``[batch, 80, frames]`` -> ``[batch, frames]`` (>= 0)."""
        p, x = self.params, mel
        for i in range(self.cfg.f0_layers):
            name = f"f0_predictor.condnet.{2 * i}"
            x = F.elu(F.conv1d(x, p[name + ".weight"], p[name + ".bias"], padding=1))
        x = F.linear(x.transpose(1, 2), p["f0_predictor.classifier.weight"], p["f0_predictor.classifier.bias"])
        return x.squeeze(-1).abs()

    @torch.inference_mode()
    def source(self, f0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The merged excitation: F0 ``[batch, frames]`` in Hz -> ``[batch, frames * 256]``.

        Random draws as upstream, in its order: a uniform phase in [-pi, pi) for each harmonic
        (the fundamental's is 0), then Gaussian noise for every harmonic and sample."""
        cfg = self.cfg
        f0 = f0.repeat_interleave(cfg.samples_per_frame, dim=-1)[:, None, :]  # [B, 1, L]
        harmonics = torch.arange(1, cfg.nb_harmonics + 2, dtype=torch.float32, device=f0.device)[None, :, None]
        freq = f0 * harmonics / cfg.sampling_rate  # [B, H+1, L] in cycles per sample
        theta = 2 * math.pi * (torch.cumsum(freq, dim=-1) % 1)
        low = torch.tensor(-math.pi)  # the draws are made on the CPU generator, then moved
        phase = (low + torch.rand((f0.shape[0], cfg.nb_harmonics + 1, 1), generator=generator) * (-2 * low)).to(f0.device)
        phase[:, 0, :] = 0
        sine = cfg.nsf_alpha * torch.sin(theta + phase)
        voiced = (f0 > cfg.nsf_voiced_threshold).float()
        noise_amp = voiced * cfg.nsf_sigma + (1 - voiced) * cfg.nsf_alpha / 3
        noise = noise_amp * torch.randn(sine.shape, generator=generator).to(f0.device)
        sine = (sine * voiced + noise).transpose(1, 2)  # [B, L, H+1]
        merged = torch.tanh(F.linear(sine, self.params["m_source.l_linear.weight"], self.params["m_source.l_linear.bias"]))
        return merged.squeeze(-1)

    @torch.inference_mode()
    def decode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Mel ``[batch, 80, frames]`` and source ``[batch, frames * 256]`` -> audio
        ``[batch, frames * 256]`` in [-audio_limit, audio_limit]."""
        cfg, p = self.cfg, self.params
        spec = torch.stft(source, cfg.n_fft, cfg.hop_len, cfg.n_fft, window=self.window, return_complex=True)
        s = torch.cat([spec.real, spec.imag], dim=1)  # [B, n_fft + 2, frames * 64 + 1]
        x = conv(p, "conv_pre", mel, padding=3)
        n_up, n_res = len(cfg.upsample_rates), len(cfg.resblock_kernel_sizes)
        for i, (rate, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            x = F.leaky_relu(x, cfg.lrelu_slope)
            x = F.conv_transpose1d(x, p[f"ups.{i}.weight"], p[f"ups.{i}.bias"], stride=rate, padding=(k - rate) // 2)
            if i == n_up - 1:
                x = F.pad(x, (1, 0), mode="reflect")
            down = cfg.source_down_rates[i]
            si = conv(p, f"source_downs.{i}", s, stride=down, padding=down // 2 if down > 1 else 0)
            x = x + resblock(p, f"source_resblocks.{i}", si, cfg.source_resblock_kernel_sizes[i],
                             cfg.source_resblock_dilation_sizes[i])
            xs = sum(resblock(p, f"resblocks.{i * n_res + j}", x, k_j, d_j) for j, (k_j, d_j) in
                     enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)))
            x = xs / n_res
        x = conv(p, "conv_post", F.leaky_relu(x), padding=3)  # upstream's default slope 0.01 here
        half = cfg.n_fft // 2 + 1
        magnitude = torch.clamp(torch.exp(x[:, :half]), max=1e2)
        phase = torch.sin(x[:, half:])
        spec = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        wav = torch.istft(spec, cfg.n_fft, cfg.hop_len, cfg.n_fft, window=self.window)
        return torch.clamp(wav, -cfg.audio_limit, cfg.audio_limit)

    def inference(self, mel: np.ndarray | torch.Tensor, source: np.ndarray | torch.Tensor | None = None,
                  seed: int = 0) -> np.ndarray:
        """Vocode one utterance.

        Args:
            mel: ``[80, frames]`` float log-mel (the flow decoder's output), numpy or torch.
            source: optional fixed excitation ``[frames * 256]``; by default it is made from the
                predicted F0 with noise from ``torch.Generator().manual_seed(seed)``.
            seed: seed of the source's random phase and noise (reproducible output).

        Returns:
            float32 ``[frames * 256]`` at ``cfg.sampling_rate`` (22050 Hz).
        """
        mel = as_float_tensor(mel)
        if mel.ndim != 2 or mel.shape[0] != self.cfg.in_channels or mel.shape[1] < 1:
            raise ValueError(f"HiFT.inference: mel must be [{self.cfg.in_channels}, frames], got {list(mel.shape)}")
        mel = mel[None].to(self.device)
        n = mel.shape[-1] * self.samples_per_frame
        if source is None:
            src = self.source(self.f0(mel), torch.Generator().manual_seed(seed))
        else:
            src = as_float_tensor(source).reshape(1, -1).to(self.device)
            if src.shape[1] != n:
                raise ValueError(f"HiFT.inference: source must have {n} samples for {mel.shape[-1]} frames, got {src.shape[1]}")
        return self.decode(mel, src)[0].float().cpu().numpy()


def as_float_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float()
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def conv(p: dict[str, torch.Tensor], name: str, x: torch.Tensor, **kw) -> torch.Tensor:
    return F.conv1d(x, p[name + ".weight"], p[name + ".bias"], **kw)


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x + sin^2(alpha x) / alpha, per channel (alpha on a linear scale, as HiFT's)."""
    alpha = alpha[None, :, None]
    return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha) ** 2


def resblock(p: dict[str, torch.Tensor], name: str, x: torch.Tensor, k: int, dilations: list[int]) -> torch.Tensor:
    """HiFi-GAN residual block with Snake activations: per dilation d,
    x += conv_k(snake(conv_k,d(snake(x))))."""
    for j, d in enumerate(dilations):
        xt = snake(x, p[f"{name}.activations1.{j}.alpha"])
        xt = conv(p, f"{name}.convs1.{j}", xt, dilation=d, padding=(k * d - d) // 2)
        xt = snake(xt, p[f"{name}.activations2.{j}.alpha"])
        x = x + conv(p, f"{name}.convs2.{j}", xt, padding=(k - 1) // 2)
    return x
