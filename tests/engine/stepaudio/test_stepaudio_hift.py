"""HiFT vocoder: parity with upstream's HiFTGenerator on the same tiny weights (goldens made by
goldens/make_hift.py), strict loading of ``hift.pt`` and the yaml, output contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import MissingModel
from engine.stepaudio.hift import HiFT
from engine.stepaudio.hift_weights import HiFTConfig
from manifests.errors import UserError
from tiny_hift import TINY_HIFT, tiny_hift_state, write_hift_yaml, write_tiny_hift

GOLD = Path(__file__).parent / "goldens" / "hift"
TOL = 1e-5
# float32 FFTs and matmuls round differently on other CPUs (the goldens were written on an AVX2
# host; on an AVX-512 one, 2026-12-01, the seeded waveform differed by up to 3.0e-4); a wrong window, filter
# bank or weight is off by orders of magnitude more
WAV_TOL = 2e-3


def gold(name: str) -> np.ndarray:
    return np.load(GOLD / f"{name}.npy")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hift")
    write_hift_yaml(d, write_tiny_hift(d, seed=0))
    return d


@pytest.fixture(scope="module")
def hift(tiny_dir) -> HiFT:
    return HiFT.from_dir(tiny_dir)


def test_config_comes_from_the_yaml(hift):
    assert hift.cfg.base_channels == TINY_HIFT["base_channels"] == 16
    assert hift.cfg.f0_cond_channels == 16 and hift.cfg.sampling_rate == 22050
    assert hift.samples_per_frame == 256
    assert HiFTConfig().base_channels == 512  # the released size is only upstream's default


def test_f0_matches_upstream(hift):
    f0 = hift.f0(torch.from_numpy(gold("mel"))[None])[0].numpy()
    want = gold("f0")
    assert (want > 10).any() and (want <= 10).any()  # both voiced and unvoiced frames
    assert np.abs(f0 - want).max() <= TOL * max(1.0, np.abs(want).max())


def test_source_matches_upstream_with_the_same_random_state(hift):
    f0 = torch.from_numpy(gold("f0"))[None]
    source = hift.source(f0, torch.Generator().manual_seed(int(gold("seed"))))[0].numpy()
    assert source.shape == gold("source").shape
    assert np.abs(source - gold("source")).max() <= TOL


def test_inference_matches_upstream(hift):
    wav = hift.inference(gold("mel"), seed=int(gold("seed")))
    want = gold("wav_seeded")
    assert wav.dtype == np.float32 and wav.shape == (gold("mel").shape[1] * 256,) == want.shape
    assert np.abs(wav - want).max() <= WAV_TOL
    assert np.abs(want).max() <= 0.99 and np.abs(want).max() > 0.05


def test_inference_with_a_fixed_source_matches_upstream(hift):
    wav = hift.inference(gold("mel"), source=gold("fixed_source"))
    assert np.abs(wav - gold("wav_fixed_source")).max() <= TOL


def test_seed_makes_it_reproducible(hift):
    mel = gold("mel")
    a, b, c = hift.inference(mel, seed=3), hift.inference(mel, seed=3), hift.inference(mel, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_mel_or_source_shape(hift):
    with pytest.raises(ValueError, match=r"\[80, frames\]"):
        hift.inference(np.zeros((40, 10), np.float32))
    with pytest.raises(ValueError, match="2560 samples"):
        hift.inference(np.zeros((80, 10), np.float32), source=np.zeros(100, np.float32))


def test_missing_and_unexpected_keys_in_one_line(hift):
    state = tiny_hift_state()
    del state["conv_pre.weight_g"], state["resblocks.5.convs2.2.bias"]
    state["conv_pre.weight"] = torch.zeros(16, 80, 7)
    with pytest.raises(UserError) as e:
        HiFT(hift.cfg, state, "x/hift.pt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("x/hift.pt:")
    assert "missing keys: conv_pre.weight_g, resblocks.5.convs2.2.bias" in msg
    assert "unexpected keys: conv_pre.weight" in msg


def test_wrong_shape_is_named(hift):
    state = tiny_hift_state()
    state["ups.1.weight_v"] = torch.zeros(8, 4, 12)
    with pytest.raises(UserError, match=r"ups\.1\.weight_v has shape \[8, 4, 12\], expected \[8, 4, 16\]"):
        HiFT(hift.cfg, state)


def test_files_missing_or_broken(tmp_path, tiny_dir):
    with pytest.raises(MissingModel, match="cosyvoice.yaml: no such file"):
        HiFT.from_dir(tmp_path)
    write_hift_yaml(tmp_path, write_tiny_hift(tmp_path))
    data = (tiny_dir / "hift.pt").read_bytes()
    (tmp_path / "hift.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="hift.pt: not a readable PyTorch state dict"):
        HiFT.from_dir(tmp_path)
    (tmp_path / "hift.pt").unlink()
    with pytest.raises(MissingModel, match="hift.pt: no such file"):
        HiFT.from_dir(tmp_path)


def test_unknown_yaml_key_is_refused(tmp_path):
    section = write_tiny_hift(tmp_path)
    section["upsample_ratez"] = [8, 8]
    write_hift_yaml(tmp_path, section)
    with pytest.raises(UserError, match="hift has an unknown key 'upsample_ratez'"):
        HiFT.from_dir(tmp_path)


def test_reads_the_hift_section_of_the_full_released_yaml(tmp_path, hift):
    from tiny_flow import flow_yaml

    section = write_tiny_hift(tmp_path)
    (tmp_path / "cosyvoice.yaml").write_text(flow_yaml(hift=section), encoding="utf-8")
    assert HiFT.from_dir(tmp_path).cfg == hift.cfg


def test_released_sizes_list_exactly_upstreams_keys():
    import json

    from engine.stepaudio.hift_weights import hift_shapes, weight_normed

    ours = {}
    for name, shape in hift_shapes(HiFTConfig()).items():
        if weight_normed(name):
            ours[name + "_g"] = [shape[0]] + [1] * (len(shape) - 1)
            ours[name + "_v"] = list(shape)
        else:
            ours[name] = list(shape)
    assert ours == json.loads((GOLD / "released_keys.json").read_text())
