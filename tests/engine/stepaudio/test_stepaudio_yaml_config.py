"""engine.stepaudio.yaml_config: HyperPyYAML read as data, nothing executed."""
from __future__ import annotations

import pytest

from engine.stepaudio.yaml_config import parse_hyperpyyaml, read_hyperpyyaml, require
from manifests.errors import UserError

TEXT = """
__set_seed: !apply:torch.manual_seed [1986]
sample_rate: 22050
spk_embed_dim: 192
hop: 256
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    spk_embed_dim: !ref <spk_embed_dim>
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                inference_cfg_rate: 0.7
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            channels: [256, 256]
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    hop_size: !ref <hop>
    sampling_rate: !ref <sample_rate>
frames_per_second: !ref <sample_rate> / <hop>
path: !ref <flow[decoder][estimator][channels][0]>/x.pt
hifigan: !new:cosyvoice.hifigan.hifigan.HiFiGan
    generator: !ref <flow.spk_embed_dim>
    mpd: !new:matcha.hifigan.models.MultiPeriodDiscriminator
"""


def test_tags_become_plain_dicts_and_refs_resolve():
    cfg = parse_hyperpyyaml(TEXT)
    assert cfg["__set_seed"] == {"_apply": "torch.manual_seed", "_args": [1986]}
    flow = cfg["flow"]
    assert flow["_class"] == "cosyvoice.flow.flow.MaskedDiffWithXvec"
    assert flow["spk_embed_dim"] == 192
    assert flow["decoder"]["cfm_params"] == {"_class": "omegaconf.DictConfig",
                                             "content": {"sigma_min": 1e-06, "inference_cfg_rate": 0.7}}
    assert flow["decoder"]["estimator"]["channels"] == [256, 256]
    assert cfg["feat_extractor"] == {"_name": "matcha.utils.audio.mel_spectrogram",
                                     "hop_size": 256, "sampling_rate": 22050}
    assert cfg["frames_per_second"] == pytest.approx(22050 / 256)
    assert cfg["path"] == "256/x.pt"
    assert cfg["hifigan"]["generator"] == 192
    assert cfg["hifigan"]["mpd"] == {"_class": "matcha.hifigan.models.MultiPeriodDiscriminator"}


def test_nothing_is_executed(tmp_path):
    marker = tmp_path / "ran"
    text = f"x: !apply:pathlib.Path.touch [{str(marker)!r}]\ny: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(UserError, match="not valid YAML"):
        parse_hyperpyyaml(text)
    assert parse_hyperpyyaml(text.splitlines()[0])["x"]["_apply"] == "pathlib.Path.touch"
    assert not marker.exists()


@pytest.mark.parametrize("text, message", [
    ("a: !ref <nowhere>", "!ref <nowhere> names no value"),
    ("a: !ref <a>", "refers to itself"),
    ("a: [1", "not valid YAML"),
    ("- 1", "mapping at the top level"),
])
def test_bad_yaml_is_one_line_user_error(text, message):
    with pytest.raises(UserError, match=message) as info:
        parse_hyperpyyaml(text, "dir/cosyvoice.yaml")
    assert "\n" not in str(info.value) and "dir/cosyvoice.yaml" in str(info.value)


def test_missing_file_and_missing_key(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        read_hyperpyyaml(tmp_path / "cosyvoice.yaml")
    (tmp_path / "cosyvoice.yaml").write_text(TEXT)
    cfg = read_hyperpyyaml(tmp_path / "cosyvoice.yaml")
    with pytest.raises(UserError, match="missing key 'hift'"):
        require(cfg, "hift", "cosyvoice.yaml")
