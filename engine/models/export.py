"""Write students as HF checkpoint dirs and load them back.

    export(model, "student/")        # config.json, model.safetensors, generation_config.json
    model = load_student("student/")  # Step1ForCausalLM or LlamaStudent, by config.json
    export_into(model, "STUDENT/")    # replace the student files of a dir that holds more

A Step1 dir also gets ``modeling_step1.py`` (+ the model files it imports, torch-only) and an
``auto_map``, so ``AutoConfig``/``AutoModelForCausalLM`` with ``trust_remote_code=True`` (and vLLM's
config loading) work without stepforge installed. A RoPE dir is a plain Llama checkpoint.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from engine.tokens import STEP_AUDIO, TokenLayout
from manifests.atomic import atomic_path, move_files_into, write_json
from manifests.errors import UserError

from .config import COMPACT_LAYOUT, LlamaStudentConfig, Step1Config
from .rope import LlamaStudent
from .step1 import Step1ForCausalLM

HERE = Path(__file__).parent
# source file -> name in the checkpoint dir; modeling_step1.py imports the rest relatively.
REMOTE_CODE = {"hf_step1.py": "modeling_step1.py", "step1.py": "step1.py",
               "attention.py": "attention.py", "cache.py": "cache.py", "weights.py": "weights.py",
               "config.py": "config.py"}
AUTO_MAP = {"AutoConfig": "modeling_step1.Step1Config",
            "AutoModelForCausalLM": "modeling_step1.Step1ForCausalLM"}
# Upstream decoding defaults (Step-Audio's TTS: sampling at temperature 0.7, max length 8192).
GENERATION = {"do_sample": True, "temperature": 0.7, "max_length": 8192}
MODEL_CLASSES = {"step1": Step1ForCausalLM, "llama": LlamaStudent}
COMPLETE = "config.json"  # written last: a dir with it holds a whole student
EXPORT_TMP = ".export.tmp"  # export_into's scratch dir inside the destination


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, size = [{}], 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    return shards


def save_weights(state: dict[str, torch.Tensor], out: Path, max_shard_bytes: int = 5 << 30) -> None:
    """``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` + index when larger."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    shards = _shards(state, max_shard_bytes)
    if len(shards) == 1:
        with atomic_path(out / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        with atomic_path(out / name) as tmp:
            save_file(shard, str(tmp), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    write_json(out / "model.safetensors.index.json",
               {"metadata": {"total_size": total}, "weight_map": weight_map})


def export(model: nn.Module, out_dir: str | Path, max_shard_bytes: int = 5 << 30,
           generation: dict | None = None) -> Path:
    """Write ``model`` (Step1ForCausalLM or LlamaStudent) as an HF checkpoint dir.

    Args:
        max_shard_bytes: split the weights into shards with an index above this size.
        generation: overrides for ``generation_config.json``.
    Returns:
        the directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    if not isinstance(cfg, (Step1Config, LlamaStudentConfig)):
        raise TypeError(f"cannot export a model with config {type(cfg).__name__}")
    d = cfg.to_dict()
    d["torch_dtype"] = d["dtype"] = _dtype_name(next(model.parameters()).dtype)
    if isinstance(cfg, Step1Config):
        d["auto_map"] = dict(AUTO_MAP)
        for src, dst in REMOTE_CODE.items():
            shutil.copyfile(HERE / src, out / dst)
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    save_weights(model.state_dict(), out, max_shard_bytes)
    gen = {**GENERATION, "bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_id,
           "pad_token_id": cfg.pad_token_id, **(generation or {})}
    write_json(out / "generation_config.json", gen)
    write_json(out / COMPLETE, d)
    return out


def export_into(model: nn.Module, out_dir: str | Path, **kwargs) -> Path:
    """Write ``model`` as :func:`export` does into a dir that holds other things too (a STUDENT
    dir beside its checkpoints/ and logs/), replacing the student files there.

    The files go into a scratch dir inside ``out_dir`` first and are then moved in with
    config.json last, so a dir with config.json always holds one whole student (a kill midway
    leaves none). ``kwargs`` are :func:`export`'s.
    """
    out = Path(out_dir)
    tmp = _scratch(out)
    export(model, tmp, **kwargs)
    move_files_into(tmp, out, last=COMPLETE)
    return out


def copy_into(src: str | Path, out_dir: str | Path) -> Path:
    """Copy the exported student dir ``src`` into ``out_dir`` the way :func:`export_into` writes."""
    out = Path(out_dir)
    tmp = _scratch(out)
    shutil.copytree(src, tmp)
    move_files_into(tmp, out, last=COMPLETE)
    return out


def _scratch(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / EXPORT_TMP
    shutil.rmtree(tmp, ignore_errors=True)  # left by a kill mid-export
    return tmp


def model_type(path: str | Path) -> str:
    """The ``model_type`` in ``path``/config.json ("" when it has none).

    Raises:
        UserError: no readable config.json there.
    """
    file = Path(path) / "config.json"
    if not file.is_file():
        raise UserError(f"no config.json in {path}")
    try:
        return json.loads(file.read_text()).get("model_type", "")
    except json.JSONDecodeError as e:
        raise UserError(f"{file} is not valid JSON: {e}") from None


def load_student(path: str | Path, dtype: torch.dtype | str | None = None,
                 device: torch.device | str = "cpu") -> nn.Module:
    """Load a checkpoint dir with the class its ``config.json`` names (step1 or llama).

    Raises:
        UserError: not a student dir (no config.json, or another model_type).
    """
    kind = model_type(path)
    if kind not in MODEL_CLASSES:
        raise UserError(f"{path}: model_type {kind!r} is not a student type "
                         f"({', '.join(MODEL_CLASSES)})")
    return MODEL_CLASSES[kind].from_pretrained(path, dtype=dtype, device=device)


def token_layout(config) -> TokenLayout:
    """The audio id layout a model was trained with (``token_layout`` in its config; the
    upstream Step-Audio layout for a 74752-id vocabulary)."""
    d = getattr(config, "token_layout", None)
    if d:
        return TokenLayout(**d)
    if config.vocab_size == STEP_AUDIO.vocab_size:
        return STEP_AUDIO
    if config.vocab_size == COMPACT_LAYOUT["vocab_size"]:
        return TokenLayout(**COMPACT_LAYOUT)
    raise UserError(f"vocab_size {config.vocab_size} needs a token_layout in config.json")
