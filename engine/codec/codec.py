"""``melvq``: the project's dual-codebook speech codec at the Step-Audio token rates.

    >>> codec = load_codec()                 # shipped weights, one instance per process
    >>> vq02, vq06 = codec.encode(wav)       # 16 kHz float32 -> 2N and 3N codes for N groups
    >>> ids = codec.tokenize(wav)            # interleaved Step-Audio LM ids (int32)
    >>> wav2 = codec.detokenize(ids)         # -> 16 kHz float32, N * 1920 samples
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import numpy as np

from engine import tokens
from engine.audio import preprocess
from manifests.errors import UserError
from manifests.stage import Stage

from . import mel, weights
from .quantize import DualCodebook
from .stream import StreamDecoder
from .vocoder import vocode

SMOOTH_TRUNCATE = 4.0  # scipy gaussian_filter1d's default reach, in sigmas
STEPAUDIO_PREFIX = "stepaudio:"  # engine.stepaudio.layout.PREFIX, without importing torch here


class MelVQCodec(Stage):
    """Log-mel -> (vq02 16.7 Hz, vq06 25 Hz) codes -> conv decoder -> log-mel -> Griffin-Lim.

    As a :class:`~manifests.stage.Stage` it decodes each record's ``tokens`` into ``audio``.

    Args:
        codebook: the two k-means codebooks.
        decoder: a ``MelDecoder`` (eval mode), or None to decode from centroids alone.
        version: identifies the weights, e.g. ``"melvq-1+3fa2c91b"``.
        smooth: Gaussian smoothing of the decoded log-mel along time (sigma in 10 ms frames;
            0 = none). It softens the steps between 40/60 ms code blocks, which Griffin-Lim
            otherwise renders as clicks (measured: ~2 WER points in the round-trip bench).
    """

    name = "melvq"
    sample_rate = mel.SAMPLE_RATE

    def __init__(self, codebook: DualCodebook, decoder=None, version: str = "melvq-1", smooth: float = 0.0):
        self.codebook = codebook
        self.decoder = decoder
        self.version = version
        self.smooth = float(smooth)
        self.sizes = (len(codebook.vq02), len(codebook.vq06))

    def encode(self, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz mono float ``[samples]`` -> (vq02 ``int32 [2N]``, vq06 ``int32 [3N]``),
        ``N = ceil(samples / 1920)`` (the last partial 120 ms group is padded with silence)."""
        wav = np.asarray(wav, np.float32)
        if wav.ndim != 1 or not np.isfinite(wav).all():
            raise ValueError(f"encode needs a finite mono waveform [samples], got shape {wav.shape}")
        return self.codebook.encode(mel.cepstra(mel.log_mel(wav), self.codebook.q))

    def decode_mel(self, vq02, vq06, smooth: bool = True) -> np.ndarray:
        """Codes -> log-mel ``float32 [12 * N, 80]`` (``smooth=False``: before the smoothing)."""
        codes02, codes06 = self._check(vq02, vq06)
        recon = self.codebook.reconstruct(codes02, codes06)
        if self.decoder is None or len(codes02) == 0:
            logmel = mel.from_cepstra(recon)
        else:
            import torch

            with torch.inference_mode():
                out = self.decoder(torch.from_numpy(recon)[None], torch.from_numpy(codes02).long()[None],
                                   torch.from_numpy(codes06).long()[None])
            logmel = out[0].numpy()
        return self.smoothed(logmel) if smooth else logmel

    def smoothed(self, logmel: np.ndarray) -> np.ndarray:
        """The decode-time smoothing of log-mel frames (a no-op when ``smooth`` is 0)."""
        if self.smooth > 0 and len(logmel):
            from scipy.ndimage import gaussian_filter1d

            logmel = gaussian_filter1d(logmel, self.smooth, axis=0, mode="nearest").astype(np.float32)
        return logmel

    @property
    def context(self) -> tuple[int, int]:
        """How far decoding looks either side: (token groups the decoder net sees, log-mel frames
        the smoothing reaches). A frame's decoded mel depends on nothing further away."""
        groups = self.decoder.context_groups if self.decoder is not None else 0
        frames = int(SMOOTH_TRUNCATE * self.smooth + 0.5) if self.smooth > 0 else 0
        return groups, frames

    def decode(self, vq02, vq06) -> np.ndarray:
        """(vq02 ``[2N]``, vq06 ``[3N]``) -> 16 kHz float32 waveform ``[N * 1920]``."""
        return vocode(self.decode_mel(vq02, vq06))

    def stream_decoder(self, **options):
        """An incremental decoder of one utterance (:class:`engine.codec.stream.StreamDecoder`,
        which takes the ``options``)."""
        return StreamDecoder(self, **options)

    def tokenize(self, wav: np.ndarray) -> np.ndarray:
        """Waveform -> interleaved Step-Audio LM ids ``int32 [5N]``."""
        return np.asarray(tokens.interleave(*self.encode(wav)), np.int32)

    def detokenize(self, ids) -> np.ndarray:
        """Interleaved LM ids ``[5N]`` -> waveform (raises ValueError on a bad id or pattern)."""
        return self.decode(*tokens.deinterleave(ids))

    def process(self, records: list[dict]) -> list[dict]:
        """Records with ``tokens`` (interleaved ids; None where ``error`` is set) + ``audio`` (the
        decoded waveform at :attr:`sample_rate`, None when there is none) and ``n_tokens``. Ids that
        do not decode set ``error`` ("invalid teacher tokens: ...") instead of raising."""
        return [self._decode_record(r) for r in records]

    def _decode_record(self, record: dict) -> dict:
        out = {**record, "audio": None, "n_tokens": 0}
        if out.get("error") or out.get("tokens") is None:
            return out
        try:
            ids = tokens.teacher_audio_ids(out["tokens"])
            out["audio"] = self.detokenize(ids)
        except ValueError as exc:
            out["error"] = f"invalid teacher tokens: {exc}"
            return out
        out.update(tokens=ids, n_tokens=int(ids.size))
        return out

    def _check(self, vq02, vq06) -> tuple[np.ndarray, np.ndarray]:
        codes02 = np.asarray(vq02, np.int64).reshape(-1)
        codes06 = np.asarray(vq06, np.int64).reshape(-1)
        if len(codes02) % 2 or 2 * len(codes06) != 3 * len(codes02):
            raise ValueError(f"{len(codes02)} vq02 and {len(codes06)} vq06 codes are not 2N and 3N")
        for name, codes, size in (("vq02", codes02, self.sizes[0]), ("vq06", codes06, self.sizes[1])):
            bad = np.flatnonzero((codes < 0) | (codes >= size))
            if bad.size:
                raise ValueError(f"{name} code {codes[bad[0]]} at position {bad[0]} is outside 0..{size - 1}")
        return codes02.astype(np.int32), codes06.astype(np.int32)


def from_file(path) -> MelVQCodec:
    """Build a codec from a weights file (see :mod:`engine.codec.weights`)."""
    codebooks, tensors, config = weights.load(path)
    # Weights made before the order was configurable have no "codebook" entry: vq02 went first.
    codebook = DualCodebook(codebooks["vq02"], codebooks["vq06"], config.get("codebook", {}).get("first", "vq02"))
    decoder = None
    if tensors:
        from .decoder import build_decoder

        decoder = build_decoder(config["decoder"], codebook.q, (len(codebook.vq02), len(codebook.vq06)), tensors)
    return MelVQCodec(codebook, decoder, version=f"{weights.FORMAT}+{weights.digest(path)}",
                      smooth=config.get("decoder", {}).get("smooth", 0.0))


@functools.lru_cache(maxsize=1)
def _shipped() -> MelVQCodec:
    return from_file(weights.SHIPPED)


def load_codec(spec: str = "melvq"):
    """The codec a ``--codec`` spec names, one cached instance per spec per process:

    - ``"melvq"``: the shipped weights; a path: a melvq weights file (loaded each call);
    - ``"stepaudio:DIR[?options]"``: the released Step-Audio stack
      (:class:`engine.stepaudio.codec.StepAudioCodec`, 22.05 kHz output).

    Raises:
        UserError: a missing weights file or a bad stepaudio spec (one line).
    """
    if spec == "melvq":
        return _shipped()
    if isinstance(spec, str) and spec.startswith(STEPAUDIO_PREFIX):
        return _stepaudio(spec)
    if not Path(spec).exists():
        raise UserError(f"{spec}: no such codec weights file (use 'melvq' for the shipped codec "
                        f"or stepaudio:MODEL_PATH for the released Step-Audio checkpoints)")
    return from_file(spec)


def absolute_spec(spec: str) -> str:
    """``spec`` with its paths absolute (a weights file; a stepaudio spec's dirs and ``voice=``),
    as workers with another working directory must see it. ``"melvq"`` stays as it is."""
    if spec == "melvq":
        return spec
    if not spec.startswith(STEPAUDIO_PREFIX):
        return str(Path(spec).resolve())
    body, sep, query = spec[len(STEPAUDIO_PREFIX):].partition("?")
    whole = Path(os.path.expanduser(body.strip()))
    parts = [body] if whole.is_dir() or "," not in body else body.split(",")
    dirs = ",".join(str(Path(os.path.expanduser(p.strip())).resolve()) for p in parts)
    options = [(k, str(Path(v).resolve()) if k == "voice" else v)
               for k, v in parse_qsl(query, keep_blank_values=True)]
    return STEPAUDIO_PREFIX + dirs + (sep + urlencode(options, safe="/") if sep else "")


@functools.lru_cache(maxsize=4)
def _stepaudio(spec: str):
    from engine.stepaudio.codec import StepAudioCodec  # torch + onnxruntime; only when asked for

    return StepAudioCodec.from_spec(spec)


def tokenize_audio(codec, wav: np.ndarray, sample_rate: int, prompt: bool = False) -> np.ndarray:
    """A recording ``[samples]`` at any ``sample_rate`` -> the codec's LM ids int32, with the
    codec's own preprocessing: melvq takes 16 kHz :func:`engine.audio.preprocess` audio; stepaudio
    resamples itself and, for a voice ``prompt``, trims it as upstream does prompt wavs."""
    if getattr(codec, "name", "") == "stepaudio":
        return np.asarray(codec.tokenize(wav, sample_rate, trim=prompt), dtype=np.int32)
    return np.asarray(codec.tokenize(preprocess(wav, sample_rate)), dtype=np.int32)
