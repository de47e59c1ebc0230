"""QualityFilter: every flag fires on a crafted bad sample and not on a good one."""
import numpy as np
import pytest

from filter_speech import speak
from engine.tokens import interleave
from filters.quality import QualityFilter
from filters.quality_checks import RATE_BOUNDS, loop_share, speech_rate

TEXT = "The weather is lovely today, isn't it?"
RNG = np.random.default_rng(0)


def _tokens(groups=120):
    return np.array(interleave(RNG.integers(0, 1024, 2 * groups), RNG.integers(0, 4096, 3 * groups)), np.int32)


def _row(**kw):
    row = {"id": "r", "text": TEXT, "lang": "en", "style": "speech", "audio": speak(TEXT), "tokens": _tokens()}
    return {**row, **kw}


@pytest.fixture(scope="module")
def qf():
    return QualityFilter()


def test_good_sample_has_no_flags(qf):
    v = qf([_row()])[0]
    assert v.keep and v.scores == {"quality_flags": []}


def _looped():
    segment = interleave(RNG.integers(0, 1024, 30), RNG.integers(0, 4096, 45))  # 15 groups, 1.8 s
    return np.array(segment * 12, np.int32)


@pytest.mark.parametrize("flag, row, reason", [
    ("invalid_tokens", dict(tokens=np.array([3, 65536, 66560, 66561, 66562], np.int32)), "invalid tokens: id 3 at position 0"),
    ("invalid_tokens", dict(tokens=np.array([65536, 65537, 66560], np.int32)), "invalid tokens: 3 audio ids"),
    ("invalid_tokens", dict(tokens=b"not npy"), "invalid tokens: undecodable"),
    ("token_loop", dict(tokens=_looped()), "token loop:"),
    ("token_run", dict(tokens=np.array(interleave([5] * 100, [7] * 150), np.int32)), "token run: vq02 id 65541 repeated 100x"),
    ("silence", dict(audio=np.r_[speak(TEXT), np.zeros(16000 * 5, np.float32)]), "silence 0."),
    ("clipping", dict(audio=np.clip(speak(TEXT) * 30, -1, 1)), "clipping 0."),
    ("too_fast", dict(text=TEXT * 10), "too fast:"),
    ("too_slow", dict(text="Hi there, you", audio=np.tile(speak(TEXT), 3)), "too slow:"),
    ("zero_length_audio", dict(audio=np.zeros(0, np.float32)), "zero-length audio"),
    ("missing_audio", dict(audio=None), "missing audio"),
    ("corrupt_audio", dict(audio=b"RIFF....garbage"), "corrupt audio"),
])
def test_each_flag_fires(qf, flag, row, reason):
    v = qf([_row(**row)])[0]
    assert not v.keep
    assert flag in v.scores["quality_flags"]
    assert reason in v.reason


def test_soft_flag_is_recorded_but_kept():
    v = QualityFilter(soft_flags=("clipping", "no_tokens"))([_row(audio=np.clip(speak(TEXT) * 30, -1, 1), tokens=None)])[0]
    assert v.keep and v.scores["quality_flags"] == ["no_tokens", "clipping"]


def test_humming_skips_the_rate_check(qf):
    assert qf([_row(text=TEXT * 10, style="humming")])[0].keep


def test_espeak_extremes_stay_inside_rate_bounds():
    lo, hi = RATE_BOUNDS["en"]
    for rate in (80, 450):
        assert lo < speech_rate(TEXT, speak(TEXT, rate=rate)) < hi
    lo, hi = RATE_BOUNDS["zh"]
    for rate in (80, 450):
        assert lo < speech_rate("今天天气很好，我们去散步吧。", speak("今天天气很好，我们去散步吧。", "cmn", rate)) < hi


def test_loop_share_ignores_silence_runs():
    silence = interleave([0] * 60, [0] * 90)
    share, _ = loop_share(np.r_[_tokens(60), silence].astype(np.int32))
    assert share == 0.0
