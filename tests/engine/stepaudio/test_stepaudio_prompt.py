"""Prompt conditioning: the prompt mel and the CAM++ embedding against upstream's frontend on a
real recording (goldens made by goldens/make_prompt.py), and bad prompts and models refused in
one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.errors import MissingModel
from engine.stepaudio.prompt import PromptConditioner
from manifests.errors import UserError
from tiny_campplus import write_tiny_campplus
from tiny_flow import flow_yaml

GOLD = Path(__file__).parent / "goldens" / "prompt"
WAV = GOLD / "tingting_1200ms.wav"
# float32 FFTs and matmuls round differently on other CPUs (the goldens were written on an AVX2
# host; on an AVX-512 one, 2026-12-01, the mel differed by up to 2.3e-4); a wrong window, filter
# bank or weight is off by orders of magnitude more
TOL = 1e-3


def gold(name: str) -> np.ndarray:
    return np.load(GOLD / f"{name}.npy")


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cosyvoice")
    (d / "cosyvoice.yaml").write_text(flow_yaml(), encoding="utf-8")
    write_tiny_campplus(d / "campplus.onnx", seed=0)
    return d


@pytest.fixture(scope="module")
def cond(decoder_dir) -> PromptConditioner:
    return PromptConditioner.from_dir(decoder_dir)


def test_mel_config_comes_from_the_yaml(cond):
    c = cond.mel_config
    assert (c.n_fft, c.num_mels, c.sampling_rate, c.hop_size, c.win_size, c.fmin, c.fmax, c.center) == \
        (1024, 80, 22050, 256, 1024, 0, 8000, False)


def test_prompt_mel_matches_upstream(cond):
    wav = gold("wav22k")
    mel = cond.mel(wav)
    assert mel.dtype == np.float32 and mel.shape == (len(wav) // 256, 80) == gold("mel").shape
    assert np.abs(mel - gold("mel")).max() <= TOL


def test_embedding_matches_upstream(cond):
    emb = cond.embedding(gold("wav16k"))
    assert emb.dtype == np.float32 and emb.shape == (192,)
    assert np.abs(emb - gold("embedding")).max() <= TOL


def test_from_file_matches_upstream_end_to_end(cond):
    feats = cond.from_file(WAV)  # load, channel mean, resample to 22.05 and 16 kHz: all ours
    assert np.abs(feats.mel - gold("mel")).max() <= TOL
    assert np.abs(feats.embedding - gold("embedding")).max() <= TOL


def test_stereo_24bit_file_gives_the_mono_features(cond, tmp_path):
    wav, sr = sf.read(WAV, dtype="float32")
    sf.write(tmp_path / "stereo.flac", np.stack([wav, wav], 1), sr, subtype="PCM_24")
    feats = cond.from_file(tmp_path / "stereo.flac")
    assert np.abs(feats.mel - gold("mel")).max() <= TOL  # 16-bit values are exact in 24-bit


def test_8khz_prompt_is_refused_in_one_line(cond, tmp_path):
    wav, sr = sf.read(WAV, dtype="float32")
    sf.write(tmp_path / "phone.wav", wav[::sr // 8000 + 1][: 8000], 8000)
    with pytest.raises(UserError) as e:
        cond.from_file(tmp_path / "phone.wav")
    assert "\n" not in str(e.value) and "phone.wav: sample rate 8000 Hz is below 16000 Hz" in str(e.value)


def test_silent_prompt_is_refused_in_one_line(cond, tmp_path):
    sf.write(tmp_path / "silence.wav", np.zeros(22050, np.float32), 22050)
    with pytest.raises(UserError) as e:
        cond.from_file(tmp_path / "silence.wav")
    assert "\n" not in str(e.value) and "silence.wav: the audio is silent" in str(e.value)


def test_too_short_prompt_is_refused(cond):
    with pytest.raises(UserError, match="too short for a voice prompt"):
        cond(gold("wav16k")[:800], 16000, "short.wav")


def test_missing_or_truncated_campplus(decoder_dir, tmp_path):
    (tmp_path / "cosyvoice.yaml").write_text((decoder_dir / "cosyvoice.yaml").read_text())
    with pytest.raises(MissingModel, match="campplus.onnx: no such file"):
        PromptConditioner.from_dir(tmp_path)
    data = (decoder_dir / "campplus.onnx").read_bytes()
    (tmp_path / "campplus.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        PromptConditioner.from_dir(tmp_path)
    assert "\n" not in str(e.value) and "campplus.onnx: not a loadable ONNX model" in str(e.value)


def test_unknown_feat_extractor_key_is_refused(tmp_path):
    (tmp_path / "cosyvoice.yaml").write_text("feat_extractor: !name:matcha.utils.audio.mel_spectrogram\n"
                                             "    n_fft: 1024\n    n_mel: 80\n")
    write_tiny_campplus(tmp_path / "campplus.onnx")
    with pytest.raises(UserError, match="feat_extractor has an unknown key 'n_mel'"):
        PromptConditioner.from_dir(tmp_path)


def test_campplus_with_another_input_contract_is_refused(decoder_dir, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMean", ["feats"], ["output"], axes=[1], keepdims=0)], "wrong",
                              [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "frames", 40])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 40])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "campplus.onnx"))
    (tmp_path / "cosyvoice.yaml").write_text((decoder_dir / "cosyvoice.yaml").read_text())
    with pytest.raises(UserError) as e:
        PromptConditioner.from_dir(tmp_path)
    assert "\n" not in str(e.value)
    assert "campplus.onnx: input 'feats' is tensor(float) ['batch', 'frames', 40], expected float [batch, frames, 80]" in str(e.value)
