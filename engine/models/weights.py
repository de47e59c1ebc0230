"""Reading checkpoint tensors and loading them into a student with clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint dir: ``model.safetensors``, shards listed in
    ``model.safetensors.index.json``, any ``*.safetensors``, or ``pytorch_model*.bin``."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a checkpoint directory")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise ValueError(f"{index} lists shards missing from {path}: {', '.join(missing[:5])}")
    else:
        files = sorted(p.name for p in path.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        state = {}
        for f in files:
            state.update(load_file(str(path / f)))
        return state
    bins = sorted(path.glob("pytorch_model*.bin"))
    if bins:
        state = {}
        for f in bins:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        return state
    raise ValueError(f"no weights in {path}: expected model.safetensors, sharded *.safetensors "
                     f"with model.safetensors.index.json, or pytorch_model.bin")


_IGNORED = ("rotary_emb.inv_freq",)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype,
                 device, where: str = "checkpoint") -> None:
    """Check names and shapes against ``model`` (which may be on the meta device), then assign."""
    expected = dict(model.state_dict())
    if "lm_head.weight" not in state and getattr(model.config, "tie_word_embeddings", False):
        state = {**state, "lm_head.weight": state.get("model.embed_tokens.weight")}
    missing = [k for k in expected if state.get(k) is None]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"{where} lacks tensors {', '.join(missing[:5])}{more}")
    unexpected = [k for k in state if k not in expected and not k.endswith(_IGNORED)]
    if unexpected:
        raise ValueError(f"{where} has tensors this config does not use: {', '.join(unexpected[:5])}")
    for name, param in expected.items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise ValueError(f"{where}: tensor {name} has shape {tuple(state[name].shape)} but "
                             f"the config expects {tuple(param.shape)}")
    model.load_state_dict({k: state[k].to(device=device, dtype=dtype) for k in expected},
                          strict=True, assign=True)
