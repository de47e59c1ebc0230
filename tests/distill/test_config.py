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


def test_an_unset_warmup_follows_the_step_count():
    assert load_config()["train"]["warmup_steps"] == 20  # the default, within the default 200 steps
    assert load_config(None, ["train.steps=10"])["train"]["warmup_steps"] == 1
    assert load_config(None, ["train.steps=1"])["train"]["warmup_steps"] == 0
    assert load_config(None, ["train.steps=5000"])["train"]["warmup_steps"] == 20
    # Set by the user (an override, or the file): kept as set, and refused when it does not fit.
    assert load_config(None, ["train.steps=10", "train.warmup_steps=3"])["train"]["warmup_steps"] == 3
    with pytest.raises(ConfigError, match="got 20"):
        load_config(None, ["train.steps=10", "train.warmup_steps=20"])
    with pytest.raises(ConfigError, match="got 30"):
        load_config(CONFIGS / "distill_tiny.yaml", ["train.steps=10"])  # the file sets 30


def test_the_resolved_config_round_trips(tmp_path):
    from distill.config import load_resolved, write_resolved

    cfg = load_config(CONFIGS / "distill_tiny.yaml", ["train.steps=40"])
    path = write_resolved(cfg, ["/runs/a"], tmp_path, world=1)
    assert path == tmp_path / "distill.yaml"
    assert "--module distill.recipe --config" in path.read_text().splitlines()[1]
    assert load_resolved(path) == (cfg, ["/runs/a"], str(tmp_path.resolve()))
    assert load_config(path) == cfg  # the runs and out that the CLI adds are not config keys
    (tmp_path / "plain.yaml").write_text("train: {steps: 5}\n")
    with pytest.raises(ConfigError, match="not a resolved distill config"):
        load_resolved(tmp_path / "plain.yaml")
