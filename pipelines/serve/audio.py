"""Response audio: OpenAI's ``response_format`` values as bytes, cut into stream chunks.

    chunks = list(encode_chunks(wav, 16000, "wav", chunk_samples=9600))   # header + PCM pieces
    b"".join(chunks)                                                      # a valid wav file

``pcm`` is what OpenAI sends: 24 kHz, 16-bit signed little-endian, mono, no header (the codec's
16 kHz output is resampled). ``wav`` streams its header, then PCM pieces of ``chunk_samples``;
the compressed formats (flac, mp3, opus in Ogg) are encoded whole and sent in byte pieces.
"""
from __future__ import annotations

import io
import struct
from typing import Iterator

import numpy as np

from engine.audio import resample

PCM_RATE = 24000
# response_format -> (soundfile format, subtype, media type)
FORMATS = {
    "wav": ("WAV", "PCM_16", "audio/wav"),
    "flac": ("FLAC", "PCM_16", "audio/flac"),
    "pcm": ("RAW", "PCM_16", "audio/pcm"),
    "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"),
    "opus": ("OGG", "OPUS", "audio/ogg"),
}
BYTE_CHUNK = 16384


def supported_formats() -> tuple[str, ...]:
    """The formats this machine's libsndfile can write (wav, flac and pcm always)."""
    import soundfile as sf

    return tuple(name for name, (fmt, sub, _) in FORMATS.items()
                 if fmt in sf.available_formats() and sub in sf.available_subtypes(fmt))


def media_type(response_format: str) -> str:
    return FORMATS[response_format][2]


def encode(wav: np.ndarray, sr: int, response_format: str) -> bytes:
    """The whole waveform ``float32 [samples]`` in ``response_format`` (pcm: at 24 kHz)."""
    import soundfile as sf

    fmt, subtype, _ = FORMATS[response_format]
    if response_format == "pcm":
        return pcm16(resample(wav, sr, PCM_RATE))
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1, 1), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def encode_chunks(wav: np.ndarray, sr: int, response_format: str, chunk_samples: int) -> Iterator[bytes]:
    """``encode(wav, sr, response_format)`` in pieces: PCM formats in ``chunk_samples`` pieces of
    audio (at ``sr``), the others in pieces of 16 KiB. The pieces join into the whole file."""
    if response_format in ("pcm", "wav"):
        whole = encode(wav, sr, response_format)
        rate = PCM_RATE if response_format == "pcm" else sr
        header = len(whole) - 2 * len(resample(wav, sr, rate)) if response_format == "wav" else 0
        step = 2 * max(1, chunk_samples * rate // sr)
        yield whole[:header + step]
        for start in range(header + step, len(whole), step):
            yield whole[start:start + step]
        return
    data = encode(wav, sr, response_format)
    for start in range(0, len(data), BYTE_CHUNK):
        yield data[start:start + BYTE_CHUNK]


def streaming_wav_header(sr: int) -> bytes:
    """A 16-bit mono wav header for a stream whose length is not known yet: the RIFF and data
    sizes are the largest values, which readers take as "until the end" (soundfile, ffmpeg, browsers)."""
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, sr, 2 * sr, 2, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", 0xFFFFFFFF - 36)


def pcm16(wav: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> 16-bit signed little-endian PCM bytes."""
    return (np.clip(wav, -1, 1) * 32767).round().astype("<i2").tobytes()
