"""Step-Audio-Tokenizer's audio preprocessing: load, resample, peak-normalise, prompt trim.

The steps and numbers are upstream's (Step-Audio ``tokenizer.py``/``utils.py``): torchaudio-style
sinc resampling with a Hann window (lowpass width 6, rolloff 0.99), peak normalisation
``wav / max(max|wav|, 0.01) * 0.999``, and for TTS prompts a librosa-style silence trim (top_db 20,
frame 512, hop 128) that keeps 0.05 s before the speech and pads/cuts to whole 240-sample frames
plus 0.27 s. Upstream refuses to resample up to 16 kHz (it asserts); so does ``preprocess``.

    wav, sr = load_audio("prompt.wav")            # float32 [samples], mono
    wav16 = preprocess(wav, sr, trim=True, source="prompt.wav")
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch

from manifests.errors import UserError

SAMPLE_RATE = 16000
TRIM_TOP_DB = 20.0
TRIM_FRAME, TRIM_HOP = 512, 128
KEEP_LEFT_S, KEEP_RIGHT_S, TRIM_UNIT = 0.05, 0.22, 240
SILENT_PEAK = 1e-3  # -60 dBFS: below this a prompt has nothing to tokenize


def load_audio(path) -> tuple[np.ndarray, int]:
    """Read a wav/flac (any rate, 16/24/32-bit PCM or float, any channel count) as mono.

    Returns ``(wav float32 [samples] in [-1, 1] for PCM, sample_rate)``; channels are averaged
    (upstream's ``mean(dim=0)``). Raises UserError naming the file when it is missing, unreadable
    or empty.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such audio file")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        raise UserError(f"{path}: cannot read audio ({exc})") from None
    if wav.shape[0] == 0:
        raise UserError(f"{path}: the audio file holds no samples")
    return wav.mean(axis=1, dtype=np.float32), int(sr)


@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99):
    """Polyphase sinc kernels ``[new, 1, taps]`` (float32) and the padding ``width``, computed in
    float64 like torchaudio's ``transforms.Resample``."""
    base = min(orig, new) * rolloff
    width = math.ceil(width_zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1)[:, None, None] / new + idx
    t = (t * base).clamp_(-width_zeros, width_zeros)
    window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    return (kernel * window * (base / orig)).to(torch.float32), width


def resample(wav, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited sinc (Hann window, 6 zero crossings, rolloff 0.99) resampling, up or down.

    Args:
        wav: float waveform ``[samples]`` or ``[channels, samples]`` (numpy or torch).
        orig_sr, new_sr: integer rates in Hz.
    Returns:
        float32 numpy array, last axis ``ceil(samples * new_sr / orig_sr)`` long.
    """
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if orig_sr == new_sr:
        return x.numpy().copy()
    if orig_sr <= 0 or new_sr <= 0:
        raise UserError(f"cannot resample from {orig_sr} Hz to {new_sr} Hz")
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    kernel, width = _sinc_kernel(orig, new)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    out = out[:, : math.ceil(new * shape[-1] / orig)]
    return out.reshape(shape[:-1] + out.shape[-1:]).numpy()


def peak_normalize(wav: np.ndarray) -> np.ndarray:
    """``wav / max(max|wav|, 0.01) * 0.999`` (quiet audio is not blown up past a 100x gain)."""
    wav = np.asarray(wav, dtype=np.float32)
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    return (wav / np.float32(max(peak, 0.01)) * 0.999).astype(np.float32)


def speech_bounds(wav: np.ndarray, top_db: float = TRIM_TOP_DB, frame: int = TRIM_FRAME,
                  hop: int = TRIM_HOP) -> tuple[int, int]:
    """``[start, end)`` in samples of the audio louder than ``top_db`` below the loudest frame.

    Frame RMS over centred, zero-padded frames as librosa's ``effects.trim``; all-silent audio
    (every frame equal) counts as loud throughout, as there.
    """
    y = np.pad(np.asarray(wav, dtype=np.float32), (frame // 2, frame // 2))
    frames = np.lib.stride_tricks.sliding_window_view(y, frame, axis=-1)[..., ::hop, :]
    frames = np.moveaxis(frames, -1, -2)  # [frame, n] like librosa.util.frame
    rms = np.sqrt(np.mean(np.square(frames), axis=-2))
    power = np.square(rms)
    ref = np.max(rms) ** 2
    amin = 1e-5 ** 2
    db = 10.0 * np.log10(np.maximum(amin, power)) - 10.0 * np.log10(np.maximum(amin, ref))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return 0, 0
    return int(loud[0] * hop), min(len(wav), int((loud[-1] + 1) * hop))


def trim_prompt(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Upstream's TTS-prompt trim: speech ``[s, e)``, ``n = ceil((e - s) / 240)``; the output
    starts 0.05 s before ``s`` (zero-padded in front when that is before 0) and is exactly
    ``n * 240 + 0.27 * sr`` samples long (cut, or zero-padded at the end)."""
    wav = np.asarray(wav, dtype=np.float32)
    s, e = speech_bounds(wav)
    n = math.ceil((e - s) / TRIM_UNIT)
    start = s - int(KEEP_LEFT_S * sr)
    out = wav[start:] if start > 0 else np.pad(wav, (-start, 0))
    length = int(n * TRIM_UNIT + (KEEP_LEFT_S + KEEP_RIGHT_S) * sr)
    if length < len(out):
        return out[:length]
    return np.pad(out, (0, length - len(out)))


def preprocess(wav: np.ndarray, sr: int, *, trim: bool = True, normalize: bool = True,
               source: str = "audio") -> np.ndarray:
    """Step-Audio-Tokenizer's input: 16 kHz float32 ``[samples]``, peak-normalised, and trimmed
    for a TTS prompt (``trim``). ``source`` names the input in errors: audio below 16 kHz is
    refused (upstream asserts; upsampling would invent no speech band the tokenizer expects)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=0, dtype=np.float32)
    if sr < SAMPLE_RATE:
        raise UserError(f"{source}: sample rate {sr} Hz is below the {SAMPLE_RATE} Hz the "
                        "Step-Audio tokenizer needs")
    wav = resample(wav, sr, SAMPLE_RATE)
    if normalize:
        wav = peak_normalize(wav)
    return trim_prompt(wav) if trim else wav


def check_audible(wav: np.ndarray, source: str = "audio") -> None:
    """Raise UserError when ``wav`` is empty or silent (peak below -60 dBFS): upstream would
    tokenize the silence, which as a voice prompt only yields a voiceless clone."""
    wav = np.asarray(wav)
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak < SILENT_PEAK:
        level = "no samples" if not wav.size else (
            "digital silence" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS")
        raise UserError(f"{source}: the audio is silent ({level}); a prompt needs speech")


def load_prompt(path, *, trim: bool = True) -> np.ndarray:
    """A voice prompt file as the tokenizer takes it (upstream's ``preprocess_prompt_wav`` ->
    ``wav2token``): 16 kHz float32 ``[samples]``, peak-normalised, trimmed. One UserError line
    naming the file for a missing/unreadable file, a rate below 16 kHz or silence."""
    wav, sr = load_audio(path)
    check_audible(wav, str(path))
    return preprocess(wav, sr, trim=trim, source=str(path))
