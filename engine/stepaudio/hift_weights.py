"""HiFT sizes and weights as released: the ``hift:`` section of ``cosyvoice.yaml`` and ``hift.pt``.

``hift.pt`` is a plain state dict whose convs use old-style weight norm (``weight_g`` and
``weight_v``, folded here into ``w = g * v / ||v||`` with the norm over all dims but 0). Loading
is strict: every missing and unexpected key is named in one line.

    cfg = HiFTConfig.from_section(section, "cosyvoice.yaml")     # the hift: mapping, as data
    params = hift_params(cfg, load_checkpoint(path), path)       # name -> folded fp32 tensor
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from engine.errors import MissingModel
from engine.stepaudio.yaml_config import read_hyperpyyaml, require
from manifests.errors import UserError

F0_KEY = "f0_predictor"


@dataclass(frozen=True)
class HiFTConfig:
    """HiFTGenerator's constructor arguments (defaults as upstream's signature) plus those of its
    ConvRNNF0Predictor (``f0_*``)."""

    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 22050
    nsf_alpha: float = 0.1
    nsf_sigma: float = 0.003
    nsf_voiced_threshold: float = 10
    upsample_rates: tuple[int, ...] = (8, 8)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16)
    n_fft: int = 16
    hop_len: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_num_class: int = 1
    f0_in_channels: int = 80
    f0_cond_channels: int = 512
    f0_layers: int = 5  # ConvRNNF0Predictor has five k=3 convs (not a constructor argument)

    @classmethod
    def from_section(cls, section: Mapping[str, Any], where: str | Path = "cosyvoice.yaml") -> HiFTConfig:
        """Build from the ``hift:`` mapping (HiFTGenerator keyword arguments, ``f0_predictor``
        a nested mapping of ConvRNNF0Predictor's); unknown keys are refused."""
        names = {f.name for f in fields(cls)} - {"f0_layers"}
        kw: dict[str, Any] = {}
        if not isinstance(section, Mapping):
            raise UserError(f"{where}: hift is not a mapping of HiFTGenerator arguments")
        for key, value in section.items():
            if key.startswith("_"):  # the tag's class name (yaml_config's "_class")
                continue
            if key == F0_KEY:
                for k, v in (value or {}).items():
                    if k.startswith("_"):
                        continue
                    if f"f0_{k}" not in names:
                        raise UserError(f"{where}: hift.f0_predictor has an unknown key {k!r}")
                    kw[f"f0_{k}"] = v
            elif key == "istft_params":
                kw.update(n_fft=value["n_fft"], hop_len=value["hop_len"])
            elif key in names:
                kw[key] = value
            else:
                raise UserError(f"{where}: hift has an unknown key {key!r}")
        tuples = {"upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes", "source_resblock_kernel_sizes"}
        for k in tuples & kw.keys():
            kw[k] = tuple(int(v) for v in kw[k])
        for k in {"resblock_dilation_sizes", "source_resblock_dilation_sizes"} & kw.keys():
            kw[k] = tuple(tuple(int(v) for v in d) for d in kw[k])
        cfg = cls(**kw)
        if len(cfg.upsample_rates) != len(cfg.upsample_kernel_sizes) or len(cfg.source_down_rates) > len(cfg.source_resblock_kernel_sizes):
            raise UserError(f"{where}: hift needs as many upsample kernels and source resblocks as upsample rates")
        return cfg

    @property
    def samples_per_frame(self) -> int:
        """Output samples per mel frame: prod(upsample_rates) * hop_len (256)."""
        return int(np.prod(self.upsample_rates)) * self.hop_len

    @property
    def source_down_rates(self) -> tuple[int, ...]:
        """Stride of the source STFT's conv at each upsampling stage (64 ... 1 as the mel nears
        the STFT frame rate)."""
        rates = np.cumprod([1, *self.upsample_rates[::-1][:-1]])[::-1]
        return tuple(int(r) for r in rates)

    def stage_channels(self, i: int) -> int:
        """Channels after upsampling stage ``i`` (``-1``: after conv_pre)."""
        return self.base_channels // 2 ** (i + 1)


def read_hift_config(yaml_path: Path) -> HiFTConfig:
    """The ``hift:`` section of a ``cosyvoice.yaml`` (read as data, never executed)."""
    if not yaml_path.is_file():
        raise MissingModel(f"{yaml_path}: no such file (the CosyVoice decoder dir of Step-Audio-TTS-3B has it)")
    return HiFTConfig.from_section(require(read_hyperpyyaml(yaml_path), "hift", str(yaml_path)), yaml_path)


def hift_shapes(cfg: HiFTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter with its shape; weight-normed ones under their folded ``.weight`` name."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name, c_in, c_out, k, transposed=False):
        shapes[f"{name}.weight"] = (c_in, c_out, k) if transposed else (c_out, c_in, k)
        shapes[f"{name}.bias"] = (c_out,)

    def resblock(name, ch, k, dilations):
        for j in range(len(dilations)):
            conv(f"{name}.convs1.{j}", ch, ch, k)
            conv(f"{name}.convs2.{j}", ch, ch, k)
            shapes[f"{name}.activations1.{j}.alpha"] = (ch,)
            shapes[f"{name}.activations2.{j}.alpha"] = (ch,)

    fc = cfg.f0_cond_channels
    for i in range(cfg.f0_layers):
        conv(f"{F0_KEY}.condnet.{2 * i}", cfg.f0_in_channels if i == 0 else fc, fc, 3)
    shapes[f"{F0_KEY}.classifier.weight"] = (cfg.f0_num_class, fc)
    shapes[f"{F0_KEY}.classifier.bias"] = (cfg.f0_num_class,)
    shapes["m_source.l_linear.weight"] = (1, cfg.nb_harmonics + 1)
    shapes["m_source.l_linear.bias"] = (1,)
    conv("conv_pre", cfg.in_channels, cfg.base_channels, 7)
    for i, k in enumerate(cfg.upsample_kernel_sizes):
        conv(f"ups.{i}", cfg.stage_channels(i - 1), cfg.stage_channels(i), k, transposed=True)
    for i, rate in enumerate(cfg.source_down_rates):
        conv(f"source_downs.{i}", cfg.n_fft + 2, cfg.stage_channels(i), 1 if rate == 1 else 2 * rate)
        resblock(f"source_resblocks.{i}", cfg.stage_channels(i), cfg.source_resblock_kernel_sizes[i],
                 cfg.source_resblock_dilation_sizes[i])
    n_res = len(cfg.resblock_kernel_sizes)
    for i in range(len(cfg.upsample_rates)):
        for j, (k, d) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            resblock(f"resblocks.{i * n_res + j}", cfg.stage_channels(i), k, d)
    conv("conv_post", cfg.stage_channels(len(cfg.upsample_rates) - 1), cfg.n_fft + 2, 7)
    return shapes


def weight_normed(name: str) -> bool:
    """True for a conv weight that ``hift.pt`` keeps as ``weight_g`` / ``weight_v``: every conv but
    the plain ``source_downs`` (the two linears have plain weights too)."""
    return (name.endswith(".weight") and not name.startswith(("source_downs.", "m_source."))
            and name != f"{F0_KEY}.classifier.weight")


def stored_names(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """The key names as the file stores them (``.weight`` -> ``.weight_g`` + ``.weight_v``)."""
    out = []
    for name in shapes:
        out += [name + "_g", name + "_v"] if weight_normed(name) else [name]
    return out


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A plain pickled state dict (``flow.pt``, ``hift.pt``), read with ``weights_only=True``."""
    if not path.is_file():
        raise MissingModel(f"{path}: no such file (the CosyVoice decoder dir of Step-Audio-TTS-3B has it)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickles more than tensors
        raise UserError(f"{path}: not a readable PyTorch state dict ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state dict of tensors")
    return dict(state)


def check_keys(state: Mapping[str, Any], expected: list[str], where: str | Path) -> None:
    """Strict loading: one line naming every missing and every unexpected key."""
    missing = [k for k in expected if k not in state]
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"missing keys: {', '.join(missing)}"] if missing else []
        parts += [f"unexpected keys: {', '.join(unexpected)}"] if unexpected else []
        raise UserError(f"{where}: does not match the config; {'; '.join(parts)}")


def fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``g * v / ||v||`` with the norm over all dims but 0 (torch's old ``weight_norm(dim=0)``)."""
    return torch._weight_norm(v, g, 0)  # the op torch's weight norm runs: same float rounding


def hift_params(cfg: HiFTConfig, state: Mapping[str, torch.Tensor], where: str | Path = "hift.pt") -> dict[str, torch.Tensor]:
    """Check ``state`` (as stored) against ``cfg`` and return name -> fp32 tensor, folded."""
    shapes = hift_shapes(cfg)
    check_keys(state, stored_names(shapes), where)
    params = {}
    for name, shape in shapes.items():
        if weight_normed(name):
            g, v = state[name + "_g"].float(), state[name + "_v"].float()
            if tuple(g.shape) != (shape[0],) + (1,) * (len(shape) - 1):
                raise UserError(f"{where}: {name}_g has shape {list(g.shape)}, expected {[shape[0]] + [1] * (len(shape) - 1)}")
            tensor, key = fold_weight_norm(g, v), name + "_v"
        else:
            tensor, key = state[name].float(), name
        if tuple(tensor.shape) != shape:
            raise UserError(f"{where}: {key} has shape {list(tensor.shape)}, expected {list(shape)}")
        params[name] = tensor
    return params
