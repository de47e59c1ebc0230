"""The streaming Paraformer encoder behind vq02, read from the released FunASR model directory.

``config.yaml`` (encoder ``SANMEncoderChunkOpt``, frontend ``WavFrontendOnline``) gives the sizes,
``am.mvn`` the CMVN, ``model.pt`` the weights. The network: ``encoders0`` (one SAN-M layer
``input_size -> output_size``, no residual), ``num_blocks - 1`` SAN-M layers with residuals, and
``after_norm``. A SAN-M layer is pre-LayerNorm (eps 1e-12) multi-head attention whose values also
feed an FSMN memory (depthwise conv of ``kernel_size`` over time plus the values), then a ReLU FFN.

In streaming each window is the 5 previous (already embedded) frames plus the new ones; attention
also sees each layer's cached keys/values of earlier windows (``look_back`` windows of
``chunk_size[1]`` frames), the FSMN sees the window only.

    model = ParaformerEncoder.from_dir(".../speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online")
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from engine.errors import MissingModel
from manifests.errors import UserError

LAYER_NORM_EPS = 1e-12  # FunASR's LayerNorm
IGNORED_PREFIXES = ("decoder.", "predictor.", "ctc.")  # the ASR head: not used for vq02


@dataclass(frozen=True)
class ParaformerConfig:
    """What ``config.yaml`` says about the frontend and the encoder."""
    n_mels: int
    frame_length_ms: float
    frame_shift_ms: float
    window: str
    sample_rate: int
    lfr_m: int
    lfr_n: int
    dither: float
    output_size: int
    heads: int
    linear_units: int
    num_blocks: int
    kernel_size: int
    sanm_shift: int

    @property
    def input_size(self) -> int:
        return self.n_mels * self.lfr_m

    @classmethod
    def from_yaml(cls, path: Path) -> "ParaformerConfig":
        try:
            cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
            enc, fe = cfg["encoder_conf"], cfg["frontend_conf"]
            expect = {"encoder": (cfg.get("encoder"), "SANMEncoderChunkOpt"),
                      "frontend": (cfg.get("frontend"), "WavFrontendOnline"),
                      "encoder_conf.input_layer": (enc.get("input_layer"), "pe_online"),
                      "encoder_conf.selfattention_layer_type":
                          (enc.get("selfattention_layer_type", "sanm"), "sanm"),
                      "encoder_conf.normalize_before": (enc.get("normalize_before", True), True),
                      "encoder_conf.positionwise_layer_type":
                          (enc.get("positionwise_layer_type", "linear"), "linear")}
            for key, (got, want) in expect.items():
                if got != want:
                    raise UserError(f"{path}: {key} is {got!r}; only {want!r} (the released "
                                    "streaming Paraformer) is supported")
            return cls(n_mels=int(fe.get("n_mels", 80)),
                       frame_length_ms=float(fe.get("frame_length", 25)),
                       frame_shift_ms=float(fe.get("frame_shift", 10)),
                       window=str(fe.get("window", "hamming")), sample_rate=int(fe.get("fs", 16000)),
                       lfr_m=int(fe.get("lfr_m", 1)), lfr_n=int(fe.get("lfr_n", 1)),
                       dither=float(fe.get("dither", 1.0)),
                       output_size=int(enc["output_size"]),
                       heads=int(enc.get("attention_heads", 4)),
                       linear_units=int(enc.get("linear_units", 2048)),
                       num_blocks=int(enc.get("num_blocks", 6)),
                       kernel_size=int(enc.get("kernel_size", 11)),
                       sanm_shift=int(enc.get("sanm_shfit", 0)))
        except UserError:
            raise
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserError(f"{path}: not a readable Paraformer config ({type(exc).__name__}: "
                            f"{exc})") from None


def load_cmvn(path: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, scale)`` float32 ``[dim]`` from a Kaldi nnet ``am.mvn``: the ``<LearnRateCoef>``
    vectors after ``<AddShift>`` and ``<Rescale>``; features become ``(x + shift) * scale``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MissingModel(f"{path}: cannot read the CMVN file ({exc.strerror})") from None
    found = {}
    for head, line in zip(lines, lines[1:]):
        words, nxt = head.split(), line.split()
        if words and words[0] in ("<AddShift>", "<Rescale>") and nxt and nxt[0] == "<LearnRateCoef>":
            try:
                found[words[0]] = np.array(nxt[3:-1], dtype=np.float32)
            except ValueError:
                raise UserError(f"{path}: {words[0]} holds a non-number") from None
    for key in ("<AddShift>", "<Rescale>"):
        if key not in found:
            raise UserError(f"{path}: no {key} vector (not a Kaldi am.mvn)")
        if found[key].shape[0] < dim:
            raise UserError(f"{path}: {key} has {found[key].shape[0]} values, the features {dim}")
    return found["<AddShift>"][:dim], found["<Rescale>"][:dim]


class FeedForward(nn.Module):
    def __init__(self, size: int, units: int):
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(size, units), nn.Linear(units, size)

    def forward(self, x):
        return self.w_2(torch.relu(self.w_1(x)))


class SANMAttention(nn.Module):
    """Multi-head attention + FSMN memory; parameter names as in the released checkpoint."""

    def __init__(self, heads: int, in_size: int, size: int, kernel: int, shift: int):
        super().__init__()
        self.heads, self.d_k = heads, size // heads
        self.linear_q_k_v = nn.Linear(in_size, 3 * size)
        self.linear_out = nn.Linear(size, size)
        self.fsmn_block = nn.Conv1d(size, size, kernel, groups=size, bias=False)
        left = (kernel - 1) // 2 + shift
        self.pad = (left, kernel - 1 - left)

    def forward(self, x, cache, keep: int, cache_len: int):
        """``x [1, T, in]`` -> ``([1, T, size], new cache)``. ``cache``: ``(k, v)`` of earlier
        windows or None; the last ``keep`` frames of this window are not cached (the next window
        repeats them); ``cache_len`` frames are kept (-1: all, 0: no cache)."""
        b, t, _ = x.shape
        q, k, v = torch.split(self.linear_q_k_v(x), self.heads * self.d_k, dim=-1)
        q_h, k_h, v_h = (z.reshape(b, t, self.heads, self.d_k).transpose(1, 2) for z in (q, k, v))
        new_cache = cache
        if cache_len != 0:
            stride = (k_h[:, :, :-keep], v_h[:, :, :-keep])
            if cache is None:
                new_cache = stride
            else:
                k_h, v_h = torch.cat((cache[0], k_h), dim=2), torch.cat((cache[1], v_h), dim=2)
                new_cache = tuple(torch.cat((c, s), dim=2) for c, s in zip(cache, stride))
                if cache_len > 0:
                    new_cache = tuple(c[:, :, -cache_len:] for c in new_cache)
        memory = self.fsmn_block(nn.functional.pad(v.transpose(1, 2), self.pad)).transpose(1, 2)
        memory = memory + v
        scores = torch.matmul(q_h * self.d_k ** -0.5, k_h.transpose(-2, -1))
        att = torch.matmul(torch.softmax(scores, dim=-1), v_h)
        att = att.transpose(1, 2).contiguous().view(b, -1, self.heads * self.d_k)
        return self.linear_out(att) + memory, new_cache


class SANMLayer(nn.Module):
    def __init__(self, cfg: ParaformerConfig, in_size: int):
        super().__init__()
        size = cfg.output_size
        self.residual = in_size == size
        self.self_attn = SANMAttention(cfg.heads, in_size, size, cfg.kernel_size, cfg.sanm_shift)
        self.feed_forward = FeedForward(size, cfg.linear_units)
        self.norm1 = nn.LayerNorm(in_size, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(size, eps=LAYER_NORM_EPS)

    def forward(self, x, cache, keep: int, cache_len: int):
        att, cache = self.self_attn(self.norm1(x), cache, keep, cache_len)
        x = x + att if self.residual else att
        return x + self.feed_forward(self.norm2(x)), cache


def position_encoding(start: int, count: int, depth: int) -> torch.Tensor:
    """Sinusoids ``[count, depth]`` for positions ``start + 1 .. start + count`` (sin half, then
    cos half; timescales ``10000^(i / (depth/2 - 1))``), in float32 as FunASR computes them."""
    positions = torch.arange(start + 1, start + count + 1).to(torch.float32)
    step = torch.log(torch.tensor([10000.0])) / (depth / 2 - 1)
    inv = torch.exp(torch.arange(depth / 2).to(torch.float32) * -step)
    scaled = positions[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class ParaformerEncoder(nn.Module):
    """The SAN-M encoder; ``forward_window`` runs one streaming window."""

    def __init__(self, cfg: ParaformerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoders0 = nn.ModuleList([SANMLayer(cfg, cfg.input_size)])
        self.encoders = nn.ModuleList([SANMLayer(cfg, cfg.output_size)
                                       for _ in range(cfg.num_blocks - 1)])
        self.after_norm = nn.LayerNorm(cfg.output_size, eps=LAYER_NORM_EPS)

    def forward_window(self, window: torch.Tensor, caches: list, keep: int, cache_len: int):
        """``window [1, T, input_size]`` (already scaled and position-encoded) -> ``[1, T,
        output_size]``; ``caches`` (one entry per layer) is updated in place."""
        x = window
        for i, layer in enumerate([*self.encoders0, *self.encoders]):
            x, caches[i] = layer(x, caches[i], keep, cache_len)
        return self.after_norm(x)

    @classmethod
    def from_dir(cls, model_dir, device: str = "cpu") -> tuple["ParaformerEncoder", np.ndarray,
                                                                np.ndarray]:
        """Load ``config.yaml``, ``am.mvn`` and the encoder weights of ``model.pt``.

        Returns ``(encoder in eval mode, cmvn shift, cmvn scale)``. Loading is strict for the
        encoder: a missing, unexpected (``encoder.*``) or misshapen key is a UserError naming
        them all in one line; the ASR head's keys (decoder, predictor, ctc) are ignored, any
        other top-level key is unexpected.
        """
        model_dir = Path(model_dir)
        for name in ("config.yaml", "am.mvn", "model.pt"):
            if not (model_dir / name).is_file():
                raise MissingModel(f"{model_dir / name}: missing (the Step-Audio-Tokenizer "
                                   "Paraformer directory is incomplete)")
        cfg = ParaformerConfig.from_yaml(model_dir / "config.yaml")
        shift, scale = load_cmvn(model_dir / "am.mvn", cfg.input_size)
        model = cls(cfg)
        model.load_checkpoint(model_dir / "model.pt")
        return model.to(device).eval(), shift, scale

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a truncated or foreign file
            raise UserError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # FunASR's loader accepts this wrapping too
        if not isinstance(state, dict):
            raise UserError(f"{path}: holds a {type(state).__name__}, not a state dict")
        own = self.state_dict()
        ours = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        missing = sorted(f"encoder.{k}" for k in own.keys() - ours.keys())
        unexpected = sorted(f"encoder.{k}" for k in ours.keys() - own.keys())
        unexpected += sorted(k for k in state if not k.startswith(("encoder.", *IGNORED_PREFIXES)))
        shapes = sorted(f"encoder.{k} {tuple(ours[k].shape)} (config wants {tuple(v.shape)})"
                        for k, v in own.items() if k in ours and ours[k].shape != v.shape)
        problems = [f"{what}: {', '.join(keys)}" for what, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
                    if keys]
        if problems:
            raise UserError(f"{path}: does not match config.yaml's encoder; " + "; ".join(problems))
        self.load_state_dict({k: ours[k].to(torch.float32) for k in own})

