"""A tiny HiFT checkpoint in the released layout: ``hift.pt`` with upstream's state-dict names
(old-style weight norm: ``weight_g`` / ``weight_v``) and the ``hift:`` section of ``cosyvoice.yaml``.

The module tree below mirrors HiFTGenerator + ConvRNNF0Predictor only in its parameter names and
shapes (built with ``torch.nn.utils.weight_norm``, the old form ``hift.pt`` stores), so the file is
made independently of the loader under test. Real kernel sizes, rates and harmonics; tiny channels.

    section = write_tiny_hift(tmp_dir, seed=0)        # writes tmp_dir/hift.pt
    write_hift_yaml(tmp_dir, section)                 # a cosyvoice.yaml holding only hift:
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

TINY_HIFT = dict(in_channels=80, base_channels=16, nb_harmonics=8, sampling_rate=22050, nsf_alpha=0.1,
                 nsf_sigma=0.003, nsf_voiced_threshold=10, upsample_rates=[8, 8], upsample_kernel_sizes=[16, 16],
                 istft_params={"n_fft": 16, "hop_len": 4}, resblock_kernel_sizes=[3, 7, 11],
                 resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                 source_resblock_kernel_sizes=[7, 11], source_resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
                 lrelu_slope=0.1, audio_limit=0.99)
TINY_F0 = dict(num_class=1, in_channels=80, cond_channels=16)
HIFT_CLASS = "cosyvoice.hifigan.generator.HiFTGenerator"
F0_CLASS = "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor"


def wn(module: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return nn.utils.weight_norm(module)


class Snake(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(ch))


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(wn(nn.Conv1d(ch, ch, k, dilation=d)) for d in dilations)
        self.convs2 = nn.ModuleList(wn(nn.Conv1d(ch, ch, k)) for _ in dilations)
        self.activations1 = nn.ModuleList(Snake(ch) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(ch) for _ in dilations)


class F0Predictor(nn.Module):
    def __init__(self, num_class: int, in_channels: int, cond_channels: int):
        super().__init__()
        layers = []
        for i in range(5):
            layers += [wn(nn.Conv1d(in_channels if i == 0 else cond_channels, cond_channels, 3, padding=1)), nn.ELU()]
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(cond_channels, num_class)


class Source(nn.Module):
    def __init__(self, harmonics: int):
        super().__init__()
        self.l_linear = nn.Linear(harmonics + 1, 1)


class Generator(nn.Module):
    def __init__(self, c: dict, f0: dict):
        super().__init__()
        base, n_fft = c["base_channels"], c["istft_params"]["n_fft"]
        self.m_source = Source(c["nb_harmonics"])
        self.conv_pre = wn(nn.Conv1d(c["in_channels"], base, 7, padding=3))
        self.ups = nn.ModuleList(wn(nn.ConvTranspose1d(base // 2 ** i, base // 2 ** (i + 1), k, u))
                                 for i, (u, k) in enumerate(zip(c["upsample_rates"], c["upsample_kernel_sizes"])))
        rates = [1] + c["upsample_rates"][::-1][:-1]
        cum = [1]
        for r in rates[1:]:
            cum.append(cum[-1] * r)
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (u, k, d) in enumerate(zip(cum[::-1], c["source_resblock_kernel_sizes"], c["source_resblock_dilation_sizes"])):
            ch = base // 2 ** (i + 1)
            self.source_downs.append(nn.Conv1d(n_fft + 2, ch, 1 if u == 1 else 2 * u, u))
            self.source_resblocks.append(ResBlock(ch, k, d))
        self.resblocks = nn.ModuleList(ResBlock(base // 2 ** (i + 1), k, d) for i in range(len(self.ups))
                                       for k, d in zip(c["resblock_kernel_sizes"], c["resblock_dilation_sizes"]))
        self.conv_post = wn(nn.Conv1d(base // 2 ** len(self.ups), n_fft + 2, 7, padding=3))
        self.f0_predictor = F0Predictor(**f0)


def tiny_hift_state(hift: dict = TINY_HIFT, f0: dict = TINY_F0, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict as ``hift.pt`` stores it, filled from ``seed``: unit-ish filters (weight_g
    around 1), Snake alphas in [0.5, 1.5], an F0 head that gives voiced and unvoiced frames."""
    g = torch.Generator().manual_seed(seed)
    state = Generator(hift, f0).state_dict()
    for name, t in state.items():
        if name.endswith("alpha"):
            state[name] = 0.5 + torch.rand(t.shape, generator=g)
        elif name == "conv_post.weight_g":  # log-magnitudes mostly below log(100): few clipped
            state[name] = 0.3 + 0.2 * torch.rand(t.shape, generator=g)
        elif name == "conv_post.bias":  # quiet enough that few samples reach the +-0.99 clamp
            state[name] = -2.5 + 0.1 * torch.randn(t.shape, generator=g)
        elif name.endswith("weight_g"):
            state[name] = 0.5 + torch.rand(t.shape, generator=g)
        elif name == "f0_predictor.classifier.weight":
            state[name] = torch.randn(t.shape, generator=g) * 10
        elif name == "f0_predictor.classifier.bias":
            state[name] = torch.full(t.shape, -80.0)
        elif name.endswith("bias"):
            state[name] = torch.randn(t.shape, generator=g) * 0.1
        else:
            fan_in = t[0].numel() if t.dim() > 1 else 1
            state[name] = torch.randn(t.shape, generator=g) / fan_in ** 0.5
    return state


def hift_section(hift: dict = TINY_HIFT, f0: dict = TINY_F0) -> dict:
    """The ``hift:`` section as data, in ``yaml_config``'s form (``_class`` for ``!new:``)."""
    return {"_class": HIFT_CLASS, **hift, "f0_predictor": {"_class": F0_CLASS, **f0}}


def write_tiny_hift(cosyvoice_dir: str | Path, seed: int = 0) -> dict:
    """Write ``cosyvoice_dir/hift.pt`` (tiny, seeded) and return its ``hift:`` yaml section."""
    cosyvoice_dir = Path(cosyvoice_dir)
    cosyvoice_dir.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_hift_state(seed=seed), cosyvoice_dir / "hift.pt")
    return hift_section()


def section_yaml(section: dict, indent: int = 0) -> str:
    """HyperPyYAML text of a ``hift:`` section (``_class`` -> ``!new:`` tag, sampling_rate as a
    ``!ref <sample_rate>`` as the released file has it)."""
    pad, lines = " " * indent, []
    for key, value in section.items():
        if key == "_class":
            continue
        if isinstance(value, dict) and "_class" in value:
            lines += [f"{pad}{key}: !new:{value['_class']}", section_yaml(value, indent + 4)]
        elif isinstance(value, dict):
            lines += [f"{pad}{key}:"] + [f"{pad}    {k}: {v}" for k, v in value.items()]
        elif key == "sampling_rate":
            lines.append(f"{pad}{key}: !ref <sample_rate>")
        else:
            lines.append(f"{pad}{key}: {value}")
    return "\n".join(lines)


def write_hift_yaml(cosyvoice_dir: str | Path, section: dict) -> Path:
    """A ``cosyvoice.yaml`` holding ``sample_rate`` and the ``hift:`` section only."""
    path = Path(cosyvoice_dir) / "cosyvoice.yaml"
    path.write_text(f"sample_rate: {section['sampling_rate']}\n\nhift: !new:{section['_class']}\n"
                    + section_yaml(section, 4) + "\n", encoding="utf-8")
    return path
