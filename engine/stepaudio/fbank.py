"""Kaldi-compatible log mel filterbank, computed as ``torchaudio.compliance.kaldi.fbank`` does.

Per frame (25 ms windows every 10 ms, ``snip_edges``): optional Gaussian dither, DC offset
removed, pre-emphasis 0.97 (the frame's first sample repeated before it), window (povey, hamming,
hanning, rectangular or blackman), zero-padded to a power of two, power spectrum, triangular mel
bins on Kaldi's mel scale ``1127 ln(1 + f / 700)`` between 20 Hz and Nyquist, natural log floored
at float32 epsilon. Used by the Paraformer frontend (80 bins, hamming, samples x 32768) and the
CAM++ speaker embedding (80 bins, povey, dither 0, mean removed over time):

    feats = fbank(wav16k * 32768, window="hamming")                    # [frames, 80]
    spk = fbank(wav16k, subtract_mean=True)                            # CAM++ input
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

WINDOWS = ("povey", "hamming", "hanning", "rectangular", "blackman")
EPSILON = torch.finfo(torch.float32).eps


def num_frames(num_samples: int, sample_rate: int = 16000, frame_length_ms: float = 25.0,
               frame_shift_ms: float = 10.0, snip_edges: bool = True) -> int:
    """How many frames ``fbank`` returns for ``num_samples`` samples."""
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    if snip_edges:
        return 0 if num_samples < size else 1 + (num_samples - size) // shift
    return (num_samples + shift // 2) // shift


def window_function(kind: str, size: int, blackman_coeff: float = 0.42) -> torch.Tensor:
    """The analysis window ``[size]`` (float32), symmetric as Kaldi's."""
    if kind == "hanning":
        return torch.hann_window(size, periodic=False)
    if kind == "hamming":
        return torch.hamming_window(size, periodic=False, alpha=0.54, beta=0.46)
    if kind == "povey":
        return torch.hann_window(size, periodic=False).pow(0.85)
    if kind == "rectangular":
        return torch.ones(size)
    if kind == "blackman":
        a = 2 * math.pi / (size - 1)
        n = torch.arange(size, dtype=torch.float32)
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    raise ValueError(f"unknown window {kind!r}; one of {', '.join(WINDOWS)}")


@functools.lru_cache(maxsize=8)
def mel_banks(num_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0,
              high_freq: float = 0.0) -> torch.Tensor:
    """Triangular mel filters ``[num_bins, padded_window // 2 + 1]`` (the Nyquist column zero),
    in float32 as Kaldi/torchaudio build them; ``high_freq <= 0`` counts back from Nyquist."""
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (num_bins > 3 and 0.0 <= low_freq < high_freq <= nyquist):
        raise ValueError(f"bad mel bank: {num_bins} bins over {low_freq}..{high_freq} Hz "
                         f"(Nyquist {nyquist})")
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1.0) * delta
    right = mel_low + (b + 2.0) * delta
    freqs = (sample_rate / padded_window) * torch.arange(padded_window / 2)
    mel = (1127.0 * (1.0 + freqs / 700.0).log()).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.max(torch.zeros(1), torch.min(up, down))
    return torch.nn.functional.pad(banks, (0, 1))


def frames(wav: torch.Tensor, size: int, shift: int, snip_edges: bool) -> torch.Tensor:
    """Overlapping frames ``[n, size]`` of a 1-D signal (reflected edges without snip_edges)."""
    n = wav.shape[0]
    if snip_edges:
        if n < size:
            return wav.new_zeros((0, size))
        m = 1 + (n - size) // shift
    else:
        rev = torch.flip(wav, [0])
        m = (n + shift // 2) // shift
        pad = size // 2 - shift // 2
        wav = torch.cat((rev[-pad:], wav, rev)) if pad > 0 else torch.cat((wav[-pad:], rev))
    return wav.as_strided((m, size), (shift * wav.stride(0), wav.stride(0)))


def fbank(wav, *, sample_rate: int = 16000, num_mel_bins: int = 80,
          frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0, window: str = "povey",
          dither: float = 0.0, preemphasis: float = 0.97, remove_dc_offset: bool = True,
          snip_edges: bool = True, low_freq: float = 20.0, high_freq: float = 0.0,
          use_power: bool = True, round_to_power_of_two: bool = True,
          subtract_mean: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Log mel filterbank of a mono waveform, Kaldi/torchaudio ``fbank`` semantics.

    Args:
        wav: float waveform ``[samples]`` (numpy or torch), in whatever scale the model expects
            (Kaldi models: int16 scale, i.e. ``wav * 32768``).
        dither: std of the Gaussian noise added to each frame (torchaudio's default 0; upstream
            Paraformer configs use 1.0); ``generator`` seeds it.
        subtract_mean: remove each bin's mean over time (CAM++ input).
        Other arguments as Kaldi's options of the same names (ms for lengths).
    Returns:
        float32 tensor ``[frames, num_mel_bins]``; ``[0, num_mel_bins]`` when the audio is
        shorter than one window (torchaudio asserts there).
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32)).reshape(-1)
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    padded = 1 << (size - 1).bit_length() if round_to_power_of_two else size
    if size < 2 or shift < 1:
        raise ValueError(f"bad frame sizes: window {size}, shift {shift} samples")
    strided = frames(x, size, shift, snip_edges)
    if strided.shape[0] == 0:
        return torch.zeros((0, num_mel_bins))
    if dither != 0.0:
        strided = strided + torch.randn(strided.shape, generator=generator) * dither
    if remove_dc_offset:
        strided = strided - torch.mean(strided, dim=1).unsqueeze(1)
    if preemphasis != 0.0:
        prev = torch.nn.functional.pad(strided.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
        strided = strided - preemphasis * prev[:, :-1]
    strided = strided * window_function(window, size).unsqueeze(0)
    if padded != size:
        strided = torch.nn.functional.pad(strided, (0, padded - size))
    spectrum = torch.fft.rfft(strided).abs()
    if use_power:
        spectrum = spectrum.pow(2.0)
    banks = mel_banks(num_mel_bins, padded, float(sample_rate), low_freq, high_freq)
    mel = torch.mm(spectrum, banks.T)
    mel = torch.max(mel, torch.tensor(EPSILON)).log()
    if subtract_mean:
        mel = mel - mel.mean(dim=0, keepdim=True)
    return mel
