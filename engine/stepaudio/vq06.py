"""vq06: Step-Audio's semantic codes (4096 codes, 25 Hz) from ``speech_tokenizer_v1.onnx``.

The released tokenizer takes a Whisper-style 128-bin log-mel of 16 kHz audio in hard 30 s chunks
and returns one code per 4 mel frames (40 ms). Tail pieces under 480 samples (30 ms) are dropped,
as upstream does.

    tok = Vq06Tokenizer.from_file("Step-Audio-Tokenizer/speech_tokenizer_v1.onnx")
    codes = tok.codes(wav16k)             # int32 [n], n ~= 25 * seconds

The ONNX contract (checked on load): inputs ``feats`` float32 ``[1, 128, T]`` and
``feats_length`` int32 ``[1]``; output ``indices``, integer codes ``[1, T']`` (any leading unit
dims), ``T' = ceil(ceil(T / 2) / 2)``.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

import librosa
import numpy as np
import onnxruntime as ort
import torch

from engine.errors import MissingModel
from manifests.errors import UserError

SAMPLE_RATE = 16000
CHUNK_SAMPLES = 30 * SAMPLE_RATE
MIN_CHUNK_SAMPLES = 480
N_MELS = 128
N_FFT = 400
HOP = 160
CODEBOOK_SIZE = 4096
CODES_PER_SECOND = 25
FEATS, LENGTHS, INDICES = "feats", "feats_length", "indices"


@functools.lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """The Slaney mel filterbank ``[128, 201]`` float32 that Whisper's 128-bin frontend uses."""
    fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, dtype=np.float32)
    return torch.from_numpy(fb)


def check_wav(wav16k, what: str = "audio") -> np.ndarray:
    """Mono 16 kHz samples ``[n]`` (or ``[1, n]``) as float32 ``[n]``; bad input is a UserError."""
    wav = np.asarray(wav16k)
    if wav.ndim == 2 and wav.shape[0] == 1:
        wav = wav[0]
    if wav.ndim != 1:
        raise UserError(f"{what}: expected mono samples [n], got an array of shape {wav.shape}")
    if not np.issubdtype(wav.dtype, np.floating):
        raise UserError(f"{what}: expected float samples in [-1, 1], got dtype {wav.dtype}")
    if not np.all(np.isfinite(wav)):
        raise UserError(f"{what}: the samples contain NaN or infinity")
    return np.ascontiguousarray(wav, dtype=np.float32)


def log_mel(wav16k) -> np.ndarray:
    """Whisper-style log-mel of one piece of 16 kHz audio.

    Args:
        wav16k: float samples ``[n]`` at 16 kHz, ``n >= 201`` (reflect padding needs it).
    Returns:
        float32 ``[128, n // 160]``: log10 power mel, floored 8 decades below its maximum,
        scaled as ``(x + 4) / 4``.
    """
    wav = check_wav(wav16k)
    if len(wav) <= N_FFT // 2:
        raise UserError(f"audio: {len(wav)} samples is too short for a log-mel (need > {N_FFT // 2})")
    x = torch.from_numpy(wav)
    spec = torch.stft(x, N_FFT, HOP, window=torch.hann_window(N_FFT), center=True,
                      pad_mode="reflect", return_complex=True)
    power = spec[..., :-1].abs() ** 2
    mel = torch.clamp(mel_filters() @ power, min=1e-10).log10()
    mel = torch.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).numpy()


def split_chunks(wav16k) -> list[np.ndarray]:
    """Hard 30 s pieces of ``[n]`` samples; a final piece under 480 samples is dropped."""
    wav = check_wav(wav16k)
    pieces = (wav[i:i + CHUNK_SAMPLES] for i in range(0, len(wav), CHUNK_SAMPLES))
    return [p for p in pieces if len(p) >= MIN_CHUNK_SAMPLES]


def n_codes(n_frames: int) -> int:
    """Codes the released network returns for ``n_frames`` mel frames (two stride-2 stages)."""
    return math.ceil(math.ceil(n_frames / 2) / 2)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for unreadable graphs
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a loadable ONNX model (truncated or corrupt?): {detail}") from None


def _check_contract(sess: ort.InferenceSession, path: Path) -> None:
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name: o for o in sess.get_outputs()}
    if set(inputs) != {FEATS, LENGTHS} or INDICES not in outputs:
        raise UserError(
            f"{path}: not a speech_tokenizer_v1 graph: inputs {sorted(inputs)}, outputs "
            f"{sorted(outputs)} (expected inputs ['{FEATS}', '{LENGTHS}'] and output '{INDICES}')")
    feats, lengths, out = inputs[FEATS], inputs[LENGTHS], outputs[INDICES]
    shape = feats.shape
    if feats.type != "tensor(float)" or len(shape) != 3 or (isinstance(shape[1], int) and shape[1] != N_MELS):
        raise UserError(f"{path}: input '{FEATS}' is {feats.type} {feats.shape}, expected float [1, {N_MELS}, T]")
    if lengths.type != "tensor(int32)" or len(lengths.shape) != 1:
        raise UserError(f"{path}: input '{LENGTHS}' is {lengths.type} {lengths.shape}, expected int32 [1]")
    if out.type not in ("tensor(int32)", "tensor(int64)"):
        raise UserError(f"{path}: output '{INDICES}' is {out.type}, expected integer codes")


class Vq06Tokenizer:
    """``speech_tokenizer_v1.onnx`` behind onnxruntime: 16 kHz audio -> vq06 codes (25 Hz)."""

    def __init__(self, session: ort.InferenceSession, path: Path):
        _check_contract(session, path)
        self.session = session
        self.path = path

    @classmethod
    def from_file(cls, onnx_path, threads: int = 1) -> "Vq06Tokenizer":
        """Load and check the released graph; a missing, corrupt or foreign file is bad input."""
        path = Path(onnx_path)
        if not path.is_file():
            raise MissingModel(f"{path}: no such file (speech_tokenizer_v1.onnx of Step-Audio-Tokenizer)")
        return cls(_session(path, threads), path)

    def codes_for_mel(self, mel: np.ndarray) -> np.ndarray:
        """One chunk's log-mel ``[128, T]`` -> codes int32 ``[n_codes(T)]`` (as the graph returns)."""
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 2 or mel.shape[0] != N_MELS or mel.shape[1] < 1:
            raise UserError(f"{self.path}: log-mel of shape {mel.shape}, expected [{N_MELS}, T]")
        feed = {FEATS: mel[None], LENGTHS: np.array([mel.shape[1]], dtype=np.int32)}
        try:
            out = self.session.run([INDICES], feed)[0]
        except Exception as e:  # a graph that loads but cannot run these shapes
            detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise UserError(f"{self.path}: running the graph on [1, {N_MELS}, {mel.shape[1]}] failed: {detail}") from None
        codes = np.asarray(out).reshape(-1)
        if codes.size and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
            raise UserError(f"{self.path}: returned codes outside 0..{CODEBOOK_SIZE - 1}")
        return codes.astype(np.int32)

    def codes(self, wav16k) -> np.ndarray:
        """Mono 16 kHz float samples ``[n]`` -> vq06 codes int32 ``[~25 per second]``.

        Raises:
            UserError: audio that is not mono float, not finite, or shorter than 480 samples;
                a graph whose code count is off the 25 Hz rate by more than 2 (upstream's check).
        """
        wav = check_wav(wav16k)
        pieces = split_chunks(wav)
        if not pieces:
            raise UserError(f"audio: {len(wav)} samples ({len(wav) / SAMPLE_RATE:.3f} s at 16 kHz) is too "
                            f"short for vq06 codes (at least {MIN_CHUNK_SAMPLES} samples)")
        out = []
        for piece in pieces:
            codes = self.codes_for_mel(log_mel(piece))
            expected = round(len(piece) / SAMPLE_RATE, 2) * CODES_PER_SECOND
            if abs(len(codes) - expected) > 2:
                raise UserError(f"{self.path}: {len(codes)} codes for {len(piece) / SAMPLE_RATE:.2f} s of "
                                f"audio, expected ~{expected:.0f} at 25 Hz (not the released tokenizer?)")
            out.append(codes)
        return np.concatenate(out)
