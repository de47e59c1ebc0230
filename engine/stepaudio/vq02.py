"""vq02, Step-Audio's linguistic codes: the streaming Paraformer encoder + nearest k-means centroid.

Driven as upstream's ``StepAudioTokenizer.get_vq02_code`` drives FunASR: the 16 kHz audio goes in
pieces of 3840 samples (240 ms, ``chunk_size = [0, 4, 5]``), the last one flagged final. Per piece:
Kaldi fbank of the samples (x 32768) continuing the previous piece's frames; LFR stacking (m = 7,
n = 6; left context the first frame x3, the final piece right-padded with its last frame) with the
unfinished frames carried over; CMVN; then one encoder window (5 carried frames + the new ones,
look-back 4 windows of K/V cache). Each 512-d output frame (16.67 Hz) maps to the nearest (L2)
centroid of ``linguistic_tokenizer.npy``.

    tok = Vq02Tokenizer.from_dir("Step-Audio-Tokenizer", dither=0.0)
    codes = tok.codes(wav16k)          # int32 [n], n ~ seconds * 16.67
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import MissingModel
from engine.stepaudio.fbank import fbank, num_frames
from engine.stepaudio.paraformer import ParaformerEncoder, position_encoding
from manifests.errors import UserError

PARAFORMER_DIR = ("dengcunqin/"
                  "speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online")
CENTROIDS = "linguistic_tokenizer.npy"
CHUNK_SIZE = (0, 4, 5)     # upstream's [left, new, carried] frames per window
LOOK_BACK = 4              # windows of K/V cache
SAMPLES_PER_FRAME = 960    # one LFR frame (60 ms) at 16 kHz: piece = CHUNK_SIZE[1] * 960


@dataclass
class Vq02Frames:
    """Everything one ``Vq02Tokenizer.frames`` call computed, in order (for parity checks)."""
    fbank: list = field(default_factory=list)     # per piece: [frames, n_mels]
    lfr: list = field(default_factory=list)       # per window: [new, input_size], after CMVN
    encoded: list = field(default_factory=list)   # per window: [new, output_size]
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def cat(self, name: str) -> np.ndarray:
        parts = [p.numpy() for p in getattr(self, name)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def lfr_stack(frames: torch.Tensor, m: int, n: int, final: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``m`` frames every ``n`` (``frames`` already holds the carried left context).

    Returns ``(stacked [k, m * dim], rest)``: ``rest`` starts at the first window not emitted
    (kept for the next piece). A final piece pads its incomplete windows with its last frame."""
    total = frames.shape[0]
    count = math.ceil((total - (m - 1) // 2) / n)
    rows, stop = [], count
    for i in range(count):
        if m <= total - i * n:
            rows.append(frames[i * n: i * n + m].reshape(-1))
        elif final:
            pad = frames[-1].repeat(m - (total - i * n))
            rows.append(torch.cat((frames[i * n:].reshape(-1), pad)))
        else:
            stop = i
            break
    rest = frames[min(total - 1, stop * n):]
    stacked = torch.stack(rows) if rows else frames.new_zeros((0, m * frames.shape[1]))
    return stacked, rest


class Vq02Tokenizer:
    """Audio -> vq02 codes with the released Paraformer encoder and k-means centroids."""

    def __init__(self, encoder: ParaformerEncoder, shift: np.ndarray, scale: np.ndarray,
                 centroids: np.ndarray, dither: float | None = None, seed: int = 0):
        self.encoder, self.cfg = encoder, encoder.cfg
        self.shift, self.scale = torch.from_numpy(shift), torch.from_numpy(scale)
        self.centroids = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
        self.dither = self.cfg.dither if dither is None else float(dither)
        self.seed = seed

    @classmethod
    def from_dir(cls, tokenizer_dir, *, dither: float | None = None, seed: int = 0,
                 device: str = "cpu") -> "Vq02Tokenizer":
        """Load from a ``Step-Audio-Tokenizer`` directory as released.

        Args:
            dither: fbank dither; None takes ``config.yaml``'s (FunASR's default 1.0, as
                upstream runs); 0 makes codes independent of ``seed``.
            seed: seeds the dither noise of each call, so a call is reproducible.
        """
        tokenizer_dir = Path(tokenizer_dir)
        path = tokenizer_dir / CENTROIDS
        if not path.is_file():
            raise MissingModel(f"{path}: missing (not a Step-Audio-Tokenizer directory)")
        encoder, shift, scale = ParaformerEncoder.from_dir(tokenizer_dir / PARAFORMER_DIR, device)
        try:
            centroids = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: not a readable .npy array ({exc})") from None
        if centroids.ndim != 2 or centroids.shape[1] != encoder.cfg.output_size \
                or centroids.dtype.kind != "f":
            raise UserError(f"{path}: centroids are {centroids.dtype} {centroids.shape}; expected "
                            f"float [codes, {encoder.cfg.output_size}]")
        return cls(encoder, shift, scale, centroids, dither, seed)

    @property
    def device(self) -> torch.device:
        return self.encoder.after_norm.weight.device

    @property
    def codebook_size(self) -> int:
        return int(self.centroids.shape[0])

    def codes(self, wav16k) -> np.ndarray:
        """vq02 codes (int32 ``[n]``) of 16 kHz mono float audio (already preprocessed)."""
        return self.frames(wav16k).codes

    @torch.no_grad()
    def frames(self, wav16k) -> Vq02Frames:
        """Run the streaming encoder over ``wav16k`` (float ``[samples]``) and keep every stage."""
        wav = torch.as_tensor(np.asarray(wav16k, dtype=np.float32)).reshape(-1)
        piece = CHUNK_SIZE[1] * SAMPLES_PER_FRAME
        out = Vq02Frames()
        state = _StreamState(self, torch.Generator().manual_seed(self.seed))
        count = len(wav) // piece + 1
        for i in range(count):
            samples = wav[i * piece: (i + 1) * piece]
            final = i == count - 1
            if final and len(samples) == 0:
                break  # upstream stops here: an exact multiple of 240 ms is never flushed
            lfr = self.frontend(samples, final, state, out)
            if lfr is None:
                break
            out.lfr.append(lfr)
            out.encoded.append(self.encode_window(lfr, state))
        if out.encoded:
            enc = torch.cat(out.encoded).to(self.centroids.device)
            out.codes = torch.cdist(enc, self.centroids).argmin(dim=1).numpy().astype(np.int32)
        return out

    def frontend(self, samples: torch.Tensor, final: bool, state: "_StreamState",
                 out: Vq02Frames) -> torch.Tensor | None:
        """One piece -> its LFR + CMVN frames ``[k, input_size]``, or None when upstream's
        frontend yields nothing more (too few frames left)."""
        cfg = self.cfg
        size = int(cfg.sample_rate * cfg.frame_length_ms / 1000)
        shift = int(cfg.sample_rate * cfg.frame_shift_ms / 1000)
        buf = torch.cat((state.samples, samples))
        n = num_frames(len(buf), cfg.sample_rate, cfg.frame_length_ms, cfg.frame_shift_ms)
        state.samples = buf[n * shift:]
        context = (cfg.lfr_m - 1) // 2
        if n:
            feats = fbank(buf[: (n - 1) * shift + size] * (1 << 15), sample_rate=cfg.sample_rate,
                          num_mel_bins=cfg.n_mels, frame_length_ms=cfg.frame_length_ms,
                          frame_shift_ms=cfg.frame_shift_ms, window=cfg.window,
                          dither=self.dither, generator=state.generator)
            out.fbank.append(feats)
            if state.splice is None:
                state.splice = feats[:1].repeat(context, 1)
            if n + state.splice.shape[0] < cfg.lfr_m:  # only a short final piece gets here
                state.splice = torch.cat((state.splice, feats))
                return None
            frames = torch.cat((state.splice, feats))
        elif final and state.splice is not None:
            frames = state.splice
        else:
            return None
        lfr, state.splice = lfr_stack(frames, cfg.lfr_m, cfg.lfr_n, final)
        if lfr.shape[0] == 0:
            return None
        return (lfr + self.shift) * self.scale

    def encode_window(self, lfr: torch.Tensor, state: "_StreamState") -> torch.Tensor:
        """One streaming window: scale, position-encode, prepend the carried frames, encode;
        returns the outputs of the new frames ``[k, output_size]``."""
        x = lfr.to(self.device)[None] * self.cfg.output_size ** 0.5
        x = x + position_encoding(state.position, x.shape[1], x.shape[2]).to(self.device)
        state.position += x.shape[1]
        window = torch.cat((state.carried, x), dim=1)
        state.carried = window[:, -(CHUNK_SIZE[0] + CHUNK_SIZE[2]):]
        y = self.encoder.forward_window(window, state.caches, CHUNK_SIZE[2],
                                        LOOK_BACK * CHUNK_SIZE[1])
        return y[0, -lfr.shape[0]:].cpu()


class _StreamState:
    """What carries from one piece to the next within one ``frames`` call."""

    def __init__(self, tok: Vq02Tokenizer, generator: torch.Generator):
        self.samples = torch.zeros(0)
        self.splice: torch.Tensor | None = None
        self.position = 0
        self.carried = torch.zeros((1, CHUNK_SIZE[0] + CHUNK_SIZE[2], tok.cfg.input_size),
                                   device=tok.device)
        self.caches: list = [None] * tok.cfg.num_blocks  # per layer (k, v)
        self.generator = generator
