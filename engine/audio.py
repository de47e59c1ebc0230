"""Audio helpers shared by teachers, codecs and filters: Step-Audio preprocessing and flac I/O."""
from __future__ import annotations

import io

import numpy as np

from manifests.errors import UserError

SAMPLE_RATE = 16000


def resample(wav: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (soxr) of a mono float waveform ``[samples]``."""
    if sr == target:
        return np.asarray(wav, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(wav, dtype=np.float32), sr, target).astype(np.float32)


def trim_silence(wav: np.ndarray, sr: int, top_db: float = 20.0,
                 keep_before: float = 0.05, keep_after: float = 0.22) -> np.ndarray:
    """Cut leading/trailing audio quieter than ``top_db`` below the peak frame, keeping margins."""
    frame, hop = 2048 * sr // 22050, 512 * sr // 22050
    if len(wav) < frame:
        return wav
    n = 1 + (len(wav) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(wav[idx] ** 2, axis=1) + 1e-20)
    db = 20 * np.log10(rms / rms.max())
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return wav[:0]
    start = max(0, loud[0] * hop - int(keep_before * sr))
    end = min(len(wav), loud[-1] * hop + frame + int(keep_after * sr))
    return wav[start:end]


def preprocess(wav: np.ndarray, sr: int) -> np.ndarray:
    """Step-Audio's reference preprocessing: 16 kHz mono, peak 0.999, silence trimmed."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 2:
        wav = wav.mean(axis=1)
    wav = resample(wav, sr)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0:
        wav = wav * (0.999 / peak)
    return trim_silence(wav, SAMPLE_RATE)


def to_flac(wav: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1, 1), sr, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def from_flac(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wav, sr = sf.read(io.BytesIO(data), dtype="float32")
    return wav, sr


def read_audio(path) -> tuple[np.ndarray, int]:
    """Read any soundfile-supported file as mono float32. Raises UserError naming the file."""
    import soundfile as sf

    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad files
        raise UserError(f"{path}: cannot read audio ({exc})") from None
    return wav.mean(axis=1), sr
