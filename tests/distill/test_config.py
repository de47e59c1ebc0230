"""distill.config: shipped configs load; bad keys and values fail naming the key."""
from __future__ import annotations

import pytest

from distill.config import ConfigError, load_config, model_fingerprint
from tests.conftest import CONFIGS


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("distill_*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg["student"]["arch"] == "step1" and cfg["train"]["steps"] > cfg["train"]["warmup_steps"]


def test_overrides_are_typed_and_reach_nested_keys():
    cfg = load_config(CONFIGS / "distill_tiny.yaml", ["train.lr=1e-3", "student.overrides={num_hidden_layers: 2}"])
    assert cfg["train"]["lr"] == 1e-3 and cfg["student"]["overrides"] == {"num_hidden_layers": 2}
    assert model_fingerprint(cfg) != model_fingerprint(load_config(CONFIGS / "distill_tiny.yaml"))
    assert model_fingerprint(load_config(None, ["train.lr=0.5"])) == model_fingerprint(load_config())
    sampling = load_config(None, ["eval.sampling={temperature: 0.3, top_k: 20}"])["eval"]["sampling"]
    assert sampling == {"temperature": 0.3, "top_k": 20}


@pytest.mark.parametrize("override, message", [
    ("train.nope=1", "unknown key train.nope"),
    ("train.warmup_steps=500", "train.warmup_steps"),
    ("loss.kd_ratio=2", "loss.kd_ratio"),
    ("student.arch=gpt", "student.arch"),
    ("train.precision=int4", "train.precision"),
    ("data.max_tokens=0", "data.max_tokens"),
    ("data.share_prefix=3", "data.share_prefix"),
    ("eval.sampling={temp: 1}", "eval.sampling takes temperature, top_k and top_p"),
    ("train.dropout=1", "train.dropout"),
    ("train.dropout=yes", "train.dropout"),
    ("train.export=first", "train.export"),
    ("train", "section.key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(CONFIGS / "distill_tiny.yaml", [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such distill config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
