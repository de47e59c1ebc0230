"""CERFilter with the real tiny.en: right/wrong content, no-ASR policies, bad rows."""
import numpy as np
import pytest

from filter_speech import speak
from filters.asr import ASRRouter
from filters.cer import CERFilter

RIGHT = "Open the window and let some fresh air into the room."


def _row(**kw):
    return {"id": "r", "text": RIGHT, "lang": "en", "style": "speech", "audio": speak(RIGHT), **kw}


@pytest.fixture(scope="module")
def cer(router):
    f = CERFilter(router, max_cer=0.2)
    f.setup()
    return f


def test_right_audio_kept_wrong_audio_rejected_with_reason(cer):
    good, bad = cer([_row(), _row(audio=speak("I would like a cup of coffee with milk, please."))])
    assert good.keep and good.scores["cer"] <= 0.2 and good.scores["wer"] == good.scores["cer"]
    assert good.scores["asr_model"] == "faster-whisper:tiny.en" and "window" in good.scores["asr_text"].lower()
    assert not bad.keep and bad.scores["cer"] > 0.5
    assert bad.reason == f"cer {bad.scores['cer']:.2f} > 0.20"


def test_no_asr_for_zh_rejects_by_default(cer):
    (v,) = cer([_row(text="今天天气很好", lang="zh", audio=speak("今天天气很好", "cmn"))])
    assert not v.keep and v.reason == "no ASR for zh" and v.scores["cer"] is None


def test_no_asr_for_zh_unscored_policy_keeps_with_flag(router):
    f = CERFilter(router, no_asr={"zh": "unscored"})
    zh, en = f([_row(text="今天天气很好", lang="zh", audio=speak("今天天气很好", "cmn")),
                _row(audio=speak("Something else entirely was said here today."))])
    assert zh.keep and zh.scores["cer"] is None and zh.scores["quality_flags"] == ["unscored_cer"]
    assert not en.keep  # the policy is per language: English is still scored


def test_style_thresholds(router):
    f = CERFilter(router, max_cer=0.0, per_style={"rap": 1.0})
    half_wrong = speak("Open the door and let some cold water into the house.")
    speech, rap, hum = f([_row(audio=half_wrong), _row(audio=half_wrong, style="rap"), _row(style="humming")])
    assert not speech.keep and rap.keep and rap.scores["cer"] == speech.scores["cer"]
    assert hum.keep and hum.scores["quality_flags"] == ["unscored_cer"] and "asr_text" not in hum.scores


def test_dialect_thresholds_the_looser_applies_and_cantonese_is_unscored(router):
    f = CERFilter(router, max_cer=0.0, per_dialect={"english-gb": 1.0, "english-us": 0.0})
    half_wrong = speak("Open the door and let some cold water into the house.")
    gb, us, rap, yue = f([_row(audio=half_wrong, dialect="english-gb"), _row(audio=half_wrong, dialect="english-us"),
                          _row(audio=half_wrong, dialect="english-us", style="rap"),
                          _row(dialect="cantonese")])
    assert gb.keep and not us.keep and gb.scores["cer"] == us.scores["cer"] > 0
    assert rap.keep == (rap.scores["cer"] <= 0.5)  # rap's 0.5 is looser than the dialect's 0.0
    assert yue.keep and yue.scores["quality_flags"] == ["unscored_cer"]  # the default: no Cantonese ASR


@pytest.mark.parametrize("audio, reason", [
    (None, "missing audio"), (np.zeros(0, np.float32), "zero-length audio"), (b"\x00garbage", "corrupt audio"),
])
def test_bad_audio_rejected_without_failing_the_batch(cer, audio, reason):
    bad, good = cer([_row(audio=audio), _row()])
    assert not bad.keep and bad.reason.startswith(reason)
    assert good.keep


class _FlakyASR:
    """Fails any batch holding a 1-second clip: stands in for a backend crash on one row."""

    name = "flaky"

    def transcribe(self, batch, lang):
        if any(len(w) == 16000 for w in batch):
            raise RuntimeError("decoder exploded")
        return ["open the window and let some fresh air into the room"] * len(batch)


def test_backend_failure_fails_only_its_row():
    f = CERFilter(ASRRouter({}, models={"en": _FlakyASR()}))
    ok, broken = f([_row(), _row(audio=np.full(16000, 0.1, np.float32))])
    assert ok.keep and ok.scores["cer"] == 0.0 and ok.scores["asr_model"] == "flaky"
    assert not broken.keep and broken.reason == "asr failed: decoder exploded"


def test_bad_policy_name():
    with pytest.raises(ValueError, match="no-ASR policy"):
        CERFilter(ASRRouter({}), no_asr={"zh": "ignore"})
