"""CosyVoice-300M-25Hz flow-matching decoder: Step-Audio ids -> 80-bin mel at 22050/256 frames/s.

Loads a decoder dir as released (``cosyvoice.yaml`` read as data + ``flow.pt``, strict keys) and
runs ``MaskedDiffWithXvec`` inference: the L2-normalised speaker embedding projected to the mel
size; prompt + target tokens embedded and encoded by the Conformer; projected to the mel size;
the prompt part interpolated to the prompt-mel length and the target part to
``int(n_target / input_frame_rate * sampling_rate / hop_size)`` frames, then smoothed by the
length regulator; conditional flow matching from seeded Gaussian noise (cosine time grid, Euler
steps, classifier-free guidance with ``inference_cfg_rate``); the frames after the prompt are kept.
The same class loads the Music decoder dir (same structure, other weights).

    >>> flow = FlowDecoder.from_dir("Step-Audio-TTS-3B/CosyVoice-300M-25Hz")        # doctest: +SKIP
    >>> mel = flow.inference(ids - 65536, prompt_ids - 65536, prompt_mel, spk_emb)   # doctest: +SKIP
    >>> mel.shape                                     # [80, frames], 256 samples a frame at 22.05 kHz
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import MissingModel
from engine.stepaudio.flow_encoder import ConformerEncoder
from engine.stepaudio.flow_estimator import ConditionalDecoder
from engine.stepaudio.yaml_config import read_hyperpyyaml, require
from manifests.errors import UserError


def _node(parent: dict, key: str, cls: str, where: str) -> dict:
    node = require(parent, key, where)
    if not isinstance(node, dict) or str(node.get("_class", "")).rsplit(".", 1)[-1] != cls:
        raise UserError(f"{where}: {key} should be !new:...{cls}, found {node.get('_class') if isinstance(node, dict) else node!r}")
    return node


class LengthRegulator(nn.Module):
    """``InterpolateRegulator``: linear interpolation to the mel length, then
    ``len(sampling_ratios)`` x [Conv1d k3, GroupNorm, Mish] and a 1x1 conv."""

    def __init__(self, channels: int, sampling_ratios, out_channels: int | None = None, groups: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in sampling_ratios:
            layers += [nn.Conv1d(channels, channels, 3, 1, 1), nn.GroupNorm(groups, channels), nn.Mish()]
        layers.append(nn.Conv1d(channels, out_channels or channels, 1, 1))
        self.model = nn.Sequential(*layers)

    def inference(self, h_prompt: torch.Tensor, h_target: torch.Tensor, n_prompt: int, n_target: int) -> torch.Tensor:
        """``h_prompt [b, Tp, c]`` and ``h_target [b, T, c]`` -> ``[b, n_prompt + n_target, out]``;
        each part is interpolated on its own."""
        x = F.interpolate(h_target.transpose(1, 2), size=n_target, mode="linear")
        if h_prompt.shape[1]:
            x = torch.cat([F.interpolate(h_prompt.transpose(1, 2), size=n_prompt, mode="linear"), x], dim=2)
        return self.model(x).transpose(1, 2)


class ConditionalCFM(nn.Module):
    """Euler solver of the flow ODE with classifier-free guidance (``flow.decoder``)."""

    def __init__(self, estimator: ConditionalDecoder, inference_cfg_rate: float, t_scheduler: str):
        super().__init__()
        self.estimator, self.inference_cfg_rate, self.t_scheduler = estimator, inference_cfg_rate, t_scheduler

    def time_grid(self, n_steps: int, dtype: torch.dtype, device) -> torch.Tensor:
        t = torch.linspace(0, 1, n_steps + 1, device=device, dtype=dtype)
        return 1 - torch.cos(t * 0.5 * torch.pi) if self.t_scheduler == "cosine" else t

    def solve(self, z: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor, spks: torch.Tensor,
              cond: torch.Tensor, n_steps: int = 10) -> torch.Tensor:
        """Integrate from noise ``z [1, c, T]`` at t=0 to t=1; ``mu, cond [1, c, T]``, ``mask [1, 1, T]``,
        ``spks [1, c_spk]``. The unconditional branch has ``mu``, ``spks`` and ``cond`` zeroed."""
        t_span = self.time_grid(n_steps, mu.dtype, mu.device)
        t, dt = t_span[0].unsqueeze(0), t_span[1] - t_span[0]
        r = self.inference_cfg_rate
        x = z
        for step in range(1, len(t_span)):
            if r > 0:
                v = self.estimator(torch.cat([x, x]), torch.cat([mask, mask]), torch.cat([mu, torch.zeros_like(mu)]),
                                   torch.cat([t, t]), torch.cat([spks, torch.zeros_like(spks)]),
                                   torch.cat([cond, torch.zeros_like(cond)]))
                v_cond, v_uncond = torch.chunk(v, 2, dim=0)
                v = (1.0 + r) * v_cond - r * v_uncond
            else:
                v = self.estimator(x, mask, mu, t, spks, cond)
            x = x + dt * v
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
        return x


class FlowModel(nn.Module):
    """``MaskedDiffWithXvec`` with the released parameter names (``input_embedding``,
    ``spk_embed_affine_layer``, ``encoder``, ``encoder_proj``, ``length_regulator``, ``decoder.estimator``)."""

    def __init__(self, flow: dict, where: str):
        super().__init__()
        enc_cfg = _node(flow, "encoder", "ConformerEncoder", where)
        lr_cfg = _node(flow, "length_regulator", "InterpolateRegulator", where)
        cfm_cfg = _node(flow, "decoder", "ConditionalCFM", where)
        est_cfg = _node(cfm_cfg, "estimator", "ConditionalDecoder", where)
        params = cfm_cfg.get("cfm_params", {})
        params = params.get("content", params) if isinstance(params, dict) else {}
        if params.get("solver", "euler") != "euler":
            raise UserError(f"{where}: flow.decoder cfm_params solver={params.get('solver')!r} is not supported (euler)")
        self.output_size = int(flow.get("output_size", 80))
        self.vocab_size = int(flow.get("vocab_size", 4096))
        self.spk_embed_dim = int(flow.get("spk_embed_dim", 192))
        self.input_frame_rate = float(flow.get("input_frame_rate", 50))
        mel = flow.get("mel_feat_conf") or {}
        self.frames_per_second = float(mel.get("sampling_rate", 22050)) / float(mel.get("hop_size", 256))
        self.input_embedding = nn.Embedding(self.vocab_size, int(flow.get("input_size", 512)))
        self.spk_embed_affine_layer = nn.Linear(self.spk_embed_dim, self.output_size)
        self.encoder = ConformerEncoder.from_config(enc_cfg, where)
        self.encoder_proj = nn.Linear(self.encoder.output_size(), self.output_size)
        self.length_regulator = LengthRegulator(int(require(lr_cfg, "channels", where)), lr_cfg.get("sampling_ratios", ()),
                                                lr_cfg.get("out_channels"), int(lr_cfg.get("groups", 1)))
        self.decoder = ConditionalCFM(ConditionalDecoder.from_config(est_cfg, where),
                                      float(params.get("inference_cfg_rate", 0.7)), params.get("t_scheduler", "linear"))
        # the estimator reads [x, mu, spk, cond], each output_size channels wide
        if int(lr_cfg["channels"]) != self.output_size or self.decoder.estimator.in_channels != 4 * self.output_size:
            raise UserError(f"{where}: flow sizes disagree: output_size {self.output_size}, length_regulator "
                            f"channels {lr_cfg['channels']}, estimator in_channels {self.decoder.estimator.in_channels} "
                            f"(expected {4 * self.output_size})")

    def target_frames(self, n_tokens: int) -> int:
        """Mel frames for ``n_tokens`` target tokens (upstream's truncating formula)."""
        return int(n_tokens / self.input_frame_rate * self.frames_per_second)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [1, T]`` (prompt + target) -> encoder output projected to the mel size ``[1, T, out]``."""
        return self.encoder_proj(self.encoder(self.input_embedding(torch.clamp(tokens, min=0))))


class FlowDecoder:
    """A loaded CosyVoice flow decoder (``CosyVoice-300M-25Hz`` or ``-Music``) on one device."""

    def __init__(self, model: FlowModel, device: torch.device, dtype: torch.dtype, source: str):
        self.model, self.device, self.dtype, self.source = model, device, dtype, source

    @classmethod
    def from_dir(cls, cosyvoice_dir: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> "FlowDecoder":
        """Load ``cosyvoice.yaml`` + ``flow.pt`` from ``cosyvoice_dir``. fp32 for CPU; bf16 on GPU as
        upstream runs it. A missing file is ``MissingModel``; a wrong or missing key or shape is a
        one-line ``UserError``."""
        root = Path(cosyvoice_dir)
        yaml_path, weights = root / "cosyvoice.yaml", root / "flow.pt"
        for path in (yaml_path, weights):
            if not path.is_file():
                raise MissingModel(f"{path}: missing (a CosyVoice decoder dir from Step-Audio-TTS-3B holds "
                                   f"cosyvoice.yaml and flow.pt)")
        model = FlowModel(_node(read_hyperpyyaml(yaml_path), "flow", "MaskedDiffWithXvec", str(yaml_path)), str(yaml_path))
        load_strict(model, read_state_dict(weights), str(weights))
        model.to(device=device, dtype=dtype).eval()
        return cls(model, torch.device(device), dtype, str(root))

    def _tensor(self, value, name: str, ndim: int, floating: bool) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        if t.ndim != ndim or (floating and not t.is_floating_point()) or (not floating and t.is_floating_point()):
            kind = "float" if floating else "integer"
            raise UserError(f"{self.source}: flow {name} should be a {ndim}-d {kind} array, got shape "
                            f"{tuple(t.shape)} {t.dtype}")
        return t.to(self.device, self.dtype if floating else torch.long)

    def _check_inputs(self, token, prompt_token, prompt_feat, embedding):
        m = self.model
        token, prompt_token = self._tensor(token, "token", 1, False), self._tensor(prompt_token, "prompt_token", 1, False)
        prompt_feat, embedding = self._tensor(prompt_feat, "prompt_feat", 2, True), self._tensor(embedding, "embedding", 1, True)
        ids = torch.cat([prompt_token, token])
        if token.numel() == 0:
            raise UserError(f"{self.source}: flow got no target tokens")
        if ids.min() < 0 or ids.max() >= m.vocab_size:
            raise UserError(f"{self.source}: flow token ids must lie in [0, {m.vocab_size}), got "
                            f"{int(ids.min())}..{int(ids.max())} (subtract 65536 from Step-Audio ids)")
        if prompt_feat.shape[1] != m.output_size or (prompt_feat.shape[0] == 0) != (prompt_token.numel() == 0):
            raise UserError(f"{self.source}: flow prompt_feat should be [frames, {m.output_size}] with frames > 0 "
                            f"exactly when prompt tokens are given, got {tuple(prompt_feat.shape)} and "
                            f"{prompt_token.numel()} prompt tokens")
        if embedding.shape[0] != m.spk_embed_dim:
            raise UserError(f"{self.source}: flow embedding should have {m.spk_embed_dim} values, got {embedding.shape[0]}")
        return token, prompt_token, prompt_feat, embedding

    @torch.inference_mode()
    def inference(self, token, prompt_token, prompt_feat, embedding, n_steps: int = 10, seed: int = 0) -> torch.Tensor:
        """Decode target ids to a mel.

        Args:
            token: ``[T]`` int target ids in ``[0, vocab_size)`` (Step-Audio ids minus 65536).
            prompt_token: ``[Tp]`` int prompt ids (may be empty, then ``prompt_feat`` is ``[0, 80]``).
            prompt_feat: ``[Tm, 80]`` float log-mel of the 22.05 kHz prompt.
            embedding: ``[192]`` float speaker embedding (campplus), normalised here.
            n_steps: Euler steps; seed: seeds the CPU generator of the initial noise, so a decode is
                reproducible (the same noise on every device).

        Returns:
            ``[80, int(T / input_frame_rate * 22050 / 256)]`` float32 mel on the CPU.
        """
        m = self.model
        token, prompt_token, prompt_feat, embedding = self._check_inputs(token, prompt_token, prompt_feat, embedding)
        spks = m.spk_embed_affine_layer(F.normalize(embedding.unsqueeze(0), dim=1))
        h = m.encode(torch.cat([prompt_token, token]).unsqueeze(0))
        n_prompt, n_target = prompt_feat.shape[0], m.target_frames(token.numel())
        n_tokens_prompt = prompt_token.numel()
        mu = m.length_regulator.inference(h[:, :n_tokens_prompt], h[:, n_tokens_prompt:], n_prompt, n_target)
        total = n_prompt + n_target
        cond = torch.zeros(1, total, m.output_size, device=self.device, dtype=self.dtype)
        cond[:, :n_prompt] = prompt_feat
        mask = torch.ones(1, 1, total, device=self.device, dtype=self.dtype)
        z = initial_noise(m.output_size, total, seed).to(self.device, self.dtype)
        mel = m.decoder.solve(z, mu.transpose(1, 2).contiguous(), mask, spks, cond.transpose(1, 2), n_steps)
        return mel[0, :, n_prompt:].float().cpu()


def initial_noise(channels: int, frames: int, seed: int) -> torch.Tensor:
    """The ODE's starting point ``[1, channels, frames]``: N(0, 1) float32 from a CPU generator
    seeded with ``seed`` (the same numbers on every device)."""
    return torch.randn((1, channels, frames), generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float32)


def read_state_dict(path: str | Path) -> dict:
    """A released ``.pt`` state dict (plain pickled OrderedDict of tensors), loaded with
    ``weights_only=True``; an unreadable file is a one-line ``UserError``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"{path}: cannot load the state dict ({exc.__class__.__name__}: {reason})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: expected a state dict of tensors")
    return state


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(model: nn.Module, state: dict, where: str) -> None:
    """Load ``state`` into ``model`` requiring the exact key set and shapes; a mismatch is ONE
    ``UserError`` line naming the missing and unexpected keys (or the first wrong shape)."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        parts = ([f"missing keys: {_names(missing)}"] if missing else []) + \
                ([f"unexpected keys: {_names(unexpected)}"] if unexpected else [])
        raise UserError(f"{where}: state dict does not match the yaml: {'; '.join(parts)}")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise UserError(f"{where}: {key} has shape {tuple(state[key].shape)}, the yaml gives {tuple(value.shape)}")
    model.load_state_dict(state, strict=True)


__all__ = ["FlowDecoder", "FlowModel", "ConditionalCFM", "LengthRegulator", "initial_noise", "read_state_dict",
           "load_strict"]
