"""The CosyVoice flow decoder (engine.stepaudio.flow): parity with upstream on a tiny checkpoint.

Goldens: tests/engine/stepaudio/goldens/make_flow.py (upstream Step-Audio's MaskedDiffWithXvec,
ConformerEncoder, InterpolateRegulator, ConditionalCFM and ConditionalDecoder in fp32 on the same
tiny flow.pt, the same inputs and the same seeded noise; and as released, in bf16).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import MissingModel
from engine.stepaudio.flow import FlowDecoder, FlowModel, initial_noise
from engine.stepaudio.yaml_config import parse_hyperpyyaml, read_hyperpyyaml
from manifests.errors import UserError
from tests.engine.stepaudio.tiny_flow import (RELEASED, TINY_HIFT_SECTION, flow_shapes, flow_yaml, tiny_flow_state,
                                              write_tiny_flow)

GOLDENS = Path(__file__).resolve().parent / "goldens" / "flow"
TOL = 1e-5


def golden(name: str) -> np.ndarray:
    return np.load(GOLDENS / f"{name}.npy")


def max_err(ours: torch.Tensor, name: str) -> float:
    ref = golden(name)
    assert tuple(ours.shape) == ref.shape, (name, tuple(ours.shape), ref.shape)
    return float(np.abs(ours.detach().numpy() - ref).max())


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def flow(tmp_path_factory) -> FlowDecoder:
    return FlowDecoder.from_dir(write_tiny_flow(tmp_path_factory.mktemp("CosyVoice-300M-25Hz"), seed=0))


def inputs(no_prompt: bool = False) -> tuple:
    token, prompt, feat = golden("token"), golden("prompt_token"), golden("prompt_feat")
    if no_prompt:
        prompt, feat = prompt[:0], feat[:0]
    return token, prompt, feat, golden("embedding")


@torch.inference_mode()
def test_encoder_parity(flow):
    ids = torch.from_numpy(np.concatenate([golden("prompt_token"), golden("token")]))[None]
    assert max_err(flow.model.encode(ids), "encoded") <= TOL


@torch.inference_mode()
def test_length_regulator_parity(flow):
    h = torch.from_numpy(golden("encoded"))
    n_target = flow.model.target_frames(len(golden("token")))
    assert n_target == 51  # int(25 / 41.67 * 22050 / 256)
    assert max_err(flow.model.length_regulator.inference(h[:, :13], h[:, 13:], 31, n_target), "regulated") <= TOL


@torch.inference_mode()
def test_estimator_single_call_parity(flow):
    est = {k: torch.from_numpy(golden(f"est_{k}")) for k in ("x", "mask", "mu", "t", "spks", "cond")}
    out = flow.model.decoder.estimator(est["x"], est["mask"], est["mu"], est["t"], est["spks"], est["cond"])
    assert max_err(out, "est_out") <= TOL  # odd length 37: stride-2 down, k4 s2 up, crop to the skip


@torch.inference_mode()
def test_euler_solve_with_shared_noise_parity(flow):
    mu = torch.from_numpy(golden("regulated")).transpose(1, 2)
    total = mu.shape[-1]
    cond = torch.zeros(1, 80, total)
    cond[0, :, :31] = torch.from_numpy(golden("prompt_feat")).T
    spks = flow.model.spk_embed_affine_layer(torch.nn.functional.normalize(torch.from_numpy(golden("embedding"))[None]))
    assert max_err(spks, "spks") <= TOL
    solved = flow.model.decoder.solve(initial_noise(80, total, 0), mu, torch.ones(1, 1, total), spks, cond, 10)
    assert max_err(solved, "solved") <= TOL


def test_full_inference_parity(flow):
    mel = flow.inference(*inputs(), n_steps=10, seed=0)
    assert mel.dtype == torch.float32 and mel.shape == (80, 51)
    assert max_err(mel, "mel") <= TOL
    assert max_err(flow.inference(*inputs(no_prompt=True), seed=1), "mel_noprompt") <= TOL


def test_bf16_matches_upstream_as_released(tmp_path):
    # upstream runs the flow in bf16 (GPU); the same dtype path on the CPU, same seeded noise
    flow_bf16 = FlowDecoder.from_dir(write_tiny_flow(tmp_path, seed=0), dtype=torch.bfloat16)
    assert next(flow_bf16.model.parameters()).dtype == torch.bfloat16
    mel = flow_bf16.inference(*inputs(), seed=0)
    assert mel.dtype == torch.float32
    # bf16 rounding follows the CPU's kernels: the goldens' AVX2 host and an AVX-512 one
    # (2026-12-01) differ by up to 0.047 here; a wrong weight or step is off by far more
    assert max_err(mel, "mel_bf16") <= 0.1


def test_seeded_noise_is_reproducible(flow):
    a, b = flow.inference(*inputs(), seed=3), flow.inference(*inputs(), seed=3)
    assert torch.equal(a, b)
    assert not torch.allclose(a, flow.inference(*inputs(), seed=4))


def test_music_dir_loads_with_the_same_class(flow, tmp_path):
    music = FlowDecoder.from_dir(write_tiny_flow(tmp_path / "CosyVoice-300M-25Hz-Music", seed=1))
    a, b = flow.inference(*inputs(), seed=0), music.inference(*inputs(), seed=0)
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_writer_layout_and_hift_section(tmp_path):
    cfg = read_hyperpyyaml(write_tiny_flow(tmp_path / "a") / "cosyvoice.yaml")
    assert cfg["hift"] == TINY_HIFT_SECTION and cfg["flow"]["decoder"]["cfm_params"]["content"]["sigma_min"] == 1e-06
    other = {**TINY_HIFT_SECTION, "base_channels": 8, "f0_predictor": {**TINY_HIFT_SECTION["f0_predictor"], "cond_channels": 8}}
    assert read_hyperpyyaml(write_tiny_flow(tmp_path / "b", hift=other) / "cosyvoice.yaml")["hift"] == other
    # at the released sizes the listed keys are exactly the model's, 105.4 M parameters (flow.pt ~422 MB)
    with torch.device("meta"):
        model = FlowModel(parse_hyperpyyaml(flow_yaml(RELEASED))["flow"], "released")
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == flow_shapes(RELEASED)
    assert sum(v.numel() for v in state.values()) == 105_399_040


def write_state(root: Path, state: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cosyvoice.yaml").write_text(flow_yaml(), encoding="utf-8")
    torch.save(state, root / "flow.pt")
    return root


def test_missing_and_unexpected_keys_are_named_in_one_line(tmp_path):
    state = tiny_flow_state(seed=0)
    state.pop("encoder.encoders.1.self_attn.pos_bias_u")
    state.pop("decoder.estimator.final_proj.bias")
    state["decoder.estimator.extra.weight"] = torch.zeros(2)
    with pytest.raises(UserError) as info:
        FlowDecoder.from_dir(write_state(tmp_path / "d", state))
    message = str(info.value)
    assert "\n" not in message and "flow.pt" in message
    assert "missing keys: decoder.estimator.final_proj.bias, encoder.encoders.1.self_attn.pos_bias_u" in message
    assert "unexpected keys: decoder.estimator.extra.weight" in message


def test_wrong_weight_shape_is_user_error(tmp_path):
    state = tiny_flow_state(seed=0)
    state["encoder_proj.weight"] = torch.zeros(80, 31)
    with pytest.raises(UserError, match=r"encoder_proj.weight has shape \(80, 31\), the yaml gives \(80, 32\)"):
        FlowDecoder.from_dir(write_state(tmp_path / "d", state))


def test_missing_files_and_bad_files(tmp_path):
    with pytest.raises(MissingModel, match="cosyvoice.yaml: missing"):
        FlowDecoder.from_dir(tmp_path)
    root = write_tiny_flow(tmp_path / "d")
    (root / "cosyvoice.yaml").write_text(flow_yaml().replace("!new:cosyvoice.flow.flow.MaskedDiffWithXvec",
                                                             "!new:cosyvoice.flow.flow.Other"))
    with pytest.raises(UserError, match="flow should be !new:...MaskedDiffWithXvec"):
        FlowDecoder.from_dir(root)
    (root / "cosyvoice.yaml").write_text(flow_yaml().replace("use_cnn_module: False", "use_cnn_module: True"))
    with pytest.raises(UserError, match="use_cnn_module=True is not supported"):
        FlowDecoder.from_dir(root)
    (root / "cosyvoice.yaml").write_text(flow_yaml())
    (root / "flow.pt").write_bytes((root / "flow.pt").read_bytes()[:1000])
    with pytest.raises(UserError, match="flow.pt: cannot load the state dict"):
        FlowDecoder.from_dir(root)


@pytest.mark.parametrize("change, message", [
    (lambda a: (a[0].reshape(5, 5),) + a[1:], "token should be a 1-d integer array"),
    (lambda a: (a[0].astype(np.float32),) + a[1:], "token should be a 1-d integer array"),
    (lambda a: (a[0] + 5120,) + a[1:], r"ids must lie in \[0, 5120\)"),
    (lambda a: (a[0][:0],) + a[1:], "no target tokens"),
    (lambda a: a[:2] + (a[2][:, :79], a[3]), r"prompt_feat should be \[frames, 80\]"),
    (lambda a: a[:2] + (a[2][:0], a[3]), "frames > 0 exactly when prompt tokens are given"),
    (lambda a: a[:3] + (a[3][:191],), "embedding should have 192 values, got 191"),
])
def test_wrong_input_shapes_are_user_errors(flow, change, message):
    with pytest.raises(UserError, match=message) as info:
        flow.inference(*change(inputs()))
    assert "\n" not in str(info.value)
