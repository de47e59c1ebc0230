"""DNSMOSFilter with the real DNSMOS P.835 model: speech scores above noise and silence."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from engine.audio import resample
from engine.speakers import BUILTIN_SPEAKERS
from filters.base import FilterChain
from filters.dnsmos import DNSMOSFilter, windows

SPEAKERS = sorted(BUILTIN_SPEAKERS.glob("*.wav"))


def _wav(path) -> np.ndarray:
    wav, sr = sf.read(path, dtype="float32")
    return resample(wav, sr)


@pytest.fixture(scope="module")
def dnsmos():
    f = DNSMOSFilter(min_ovrl=1.5)
    f.setup()
    return f


def test_windows_repeat_short_clips_and_hop_one_second():
    assert windows(np.ones(16000, np.float32)).shape == (7, 144160)  # 1 s repeated to 16 s
    assert windows(np.ones(16000 * 11, np.float32)).shape == (2, 144160)
    # the DNS Challenge scorer counts int(floor(seconds) - 9.01) + 1 windows: 3.3 s is repeated to
    # 13.2 s, which gives 4 (not the 5 that would fit in 13.2 s)
    assert windows(np.ones(int(3.3 * 16000), np.float32)).shape == (4, 144160)
    assert windows(np.ones(int(9.5 * 16000), np.float32)).shape == (1, 144160)


def test_max_windows_keeps_the_first_and_last_evenly_spaced():
    ramp = np.arange(int(2.2 * 16000), dtype=np.float32) / 1e6  # repeated to 17.6 s: 8 windows
    every = windows(ramp)
    assert every.shape[0] == 8
    two, four = windows(ramp, max_windows=2), windows(ramp, max_windows=4)
    assert np.array_equal(two, every[[0, 7]])
    assert np.array_equal(four, every[[0, 2, 5, 7]])
    assert np.array_equal(windows(ramp, max_windows=20), every)


def test_fewer_windows_score_a_repeated_clip_alike():
    f = DNSMOSFilter(min_ovrl=None)
    capped = DNSMOSFilter(min_ovrl=None, max_windows=2)
    clip = _wav(SPEAKERS[0])[:int(2.2 * 16000)]  # 8 windows, as many en-basic rows have
    assert windows(clip).shape[0] == 8
    full, fast = f.scores(clip), capped.scores(clip)
    assert fast != full  # two of the nine windows, not the same computation
    assert abs(fast["dnsmos_ovrl"] - full["dnsmos_ovrl"]) < 0.1


def test_speech_scores_above_noise_and_silence(dnsmos):
    rng = np.random.default_rng(0)
    speech = [dnsmos.scores(_wav(p)) for p in SPEAKERS]
    ovrl = [s["dnsmos_ovrl"] for s in speech]
    assert all(1 <= v <= 5 for s in speech for v in s.values())
    noise = [dnsmos.scores((level * rng.standard_normal(48000)).astype(np.float32)) for level in (0.3, 0.05, 0.01)]
    silence = [dnsmos.scores(np.zeros(48000, np.float32)),
               dnsmos.scores((1e-3 * rng.standard_normal(48000)).astype(np.float32))]
    assert min(ovrl) > max(n["dnsmos_ovrl"] for n in noise) + 0.5
    # near-silence is rated only a little below eSpeak (the silence check is QualityFilter's job)
    assert np.mean(ovrl) > max(s["dnsmos_ovrl"] for s in silence) + 0.3
    noisy = dnsmos.scores(np.clip(_wav(SPEAKERS[0]) + 0.1 * rng.standard_normal(len(_wav(SPEAKERS[0]))), -1, 1))
    assert noisy["dnsmos_bak"] < speech[0]["dnsmos_bak"] - 0.5  # background noise is what BAK rates


def test_filter_rejects_below_threshold_keeps_columns_and_names_bad_rows(dnsmos):
    rng = np.random.default_rng(1)
    rows = [{"id": "speech", "audio": _wav(SPEAKERS[1])},
            {"id": "noise", "audio": 0.3 * rng.standard_normal(48000).astype(np.float32)},
            {"id": "empty", "audio": np.zeros(0, np.float32)}]
    speech, noise, empty = FilterChain([dnsmos]).process(rows)
    assert speech["accepted"] and speech["dnsmos_ovrl"] >= 1.5
    assert not noise["accepted"] and noise["reject_reason"] == f"dnsmos ovrl {noise['dnsmos_ovrl']:.2f} < 1.50"
    assert not empty["accepted"] and empty["reject_reason"] == "zero-length audio" and empty["dnsmos_ovrl"] is None
    (scored,) = DNSMOSFilter(min_ovrl=None)([{"audio": rows[1]["audio"]}])
    assert scored.keep and scored.scores["dnsmos_ovrl"] == pytest.approx(noise["dnsmos_ovrl"], abs=1e-4)


def test_config_threshold_is_checked_and_dnsmos_runs_last():
    from filters.config import FilterConfig
    from manifests.errors import UserError

    chain = FilterConfig().build_chain()
    assert isinstance(chain[-1], DNSMOSFilter) and chain[-1].min_ovrl == 2.0
    assert FilterConfig(min_dnsmos_ovrl=None).build_chain()[-1].min_ovrl is None
    assert FilterConfig(min_dnsmos_ovrl=3.0).hash != FilterConfig().hash
    assert FilterConfig.from_dict({"max_dnsmos_windows": 2}).build_chain()[-1].max_windows == 2
    assert FilterConfig().build_chain()[-1].max_windows is None
    assert FilterConfig(max_dnsmos_windows=2).hash != FilterConfig().hash
    for bad in (0, 1.5, "two", True):
        with pytest.raises(UserError, match="max_dnsmos_windows must be an integer >= 1 or null"):
            FilterConfig.from_dict({"max_dnsmos_windows": bad})
    for bad in (7, "high", True):
        with pytest.raises(UserError, match="min_dnsmos_ovrl must be a MOS in 1..5"):
            FilterConfig.from_dict({"min_dnsmos_ovrl": bad})


def test_verdicts_written_before_the_columns_existed_still_load(tmp_path):
    import pyarrow.parquet as pq

    from manifests import RunDir
    from manifests.schema import FILTER_SCHEMA, manifest_table

    run = RunDir(tmp_path)
    old = FILTER_SCHEMA.remove(FILTER_SCHEMA.get_field_index("dnsmos_ovrl"))
    run.filter_journal.mkdir(parents=True)
    pq.write_table(manifest_table([{"id": "a", "attempt": 0, "accepted": True, "cer": 0.1}], old),
                   run.filter_journal / "part-000000.parquet")
    (row,) = run.verdict_table().to_pylist()
    assert row["accepted"] and row["dnsmos_ovrl"] is None and row["cer"] == pytest.approx(0.1)
