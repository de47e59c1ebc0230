"""CERFilter with the real tiny.en: right/wrong content, no-ASR policies, bad rows."""
import numpy as np
import pytest

from filter_speech import speak
from filters.asr import ASRRouter
from filters.cer import CERFilter, text_scores

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


PACKED_ROWS = [RIGHT, "I would like a cup of coffee with milk, please.", "The train to the city leaves at noon.",
               "She painted the old fence a bright shade of green."]
WRONG = ["Completely different words were meant here.", "Nothing like the audio at all, really."]


def _packed_rows():
    wavs = [speak(t) for t in PACKED_ROWS]
    texts = [PACKED_ROWS[0], WRONG[0], PACKED_ROWS[2], WRONG[1]]
    return wavs, texts, [_row(id=str(k), text=t, audio=w.copy()) for k, (t, w) in enumerate(zip(texts, wavs))]


def _better_read(verdicts, texts, packed, alone, reread):
    for k, v in enumerate(verdicts):
        first = text_scores(texts[k], packed[k], "en")["cer"]
        second = text_scores(texts[k], alone[k], "en")["cer"] if reread[k] else first
        flags = v.scores.get("quality_flags") or []
        assert v.scores["asr_text"] == (alone[k] if second < first else packed[k])
        assert ("asr_alone" in flags) == (second < first)
        assert v.scores["cer"] == min(first, second)


def test_packed_rejects_are_read_again_alone_and_the_better_read_scores(router):
    """A packed window can give a row its neighbour's words: every reject is read again alone and
    the better of the two reads scores it; a kept row is read once."""
    asr = router.get("en")
    assert asr.pack and asr.recheck == "rejects"  # the embedded default
    wavs, texts, rows = _packed_rows()
    verdicts = CERFilter(router, max_cer=0.5)(rows)
    packed, alone = asr.transcribe(wavs, "en"), asr.transcribe_alone(wavs, "en")
    assert [v.keep for v in verdicts] == [True, False, True, False]
    _better_read(verdicts, texts, packed, alone, reread=[not v.keep for v in verdicts])


def test_recheck_all_reads_every_row_twice():
    from filters.asr import ASRRouter, load_asr

    asr = load_asr({"model": "tiny.en", "pack": True, "recheck": "all", "cpu_threads": 1})
    wavs, texts, rows = _packed_rows()
    verdicts = CERFilter(ASRRouter(models={"en": asr}), max_cer=0.5)(rows)
    _better_read(verdicts, texts, asr.transcribe(wavs, "en"), asr.transcribe_alone(wavs, "en"), reread=[True] * 4)


def test_without_recheck_a_packed_reject_keeps_its_packed_transcript():
    from filters.asr import ASRRouter, load_asr

    asr = load_asr({"model": "tiny.en", "pack": True, "cpu_threads": 1})
    assert asr.recheck is None
    wavs = [speak(PACKED_ROWS[1]), speak(PACKED_ROWS[2])]
    rows = [_row(text=WRONG[0], audio=wavs[0].copy()), _row(text=PACKED_ROWS[2], audio=wavs[1].copy())]
    wrong, right = CERFilter(ASRRouter(models={"en": asr}), max_cer=0.5)(rows)
    assert not wrong.keep and right.keep and "asr_alone" not in (wrong.scores.get("quality_flags") or [])
    assert [wrong.scores["asr_text"], right.scores["asr_text"]] == asr.transcribe(wavs, "en")


def test_read_twice_rechecks_every_packed_whisper_and_nothing_else():
    from filters.asr import DEFAULT_ASR, read_twice

    twice = read_twice(None)
    assert set(twice) == set(DEFAULT_ASR) and all(c["recheck"] == "all" and c["pack"] for c in twice.values())
    assert DEFAULT_ASR["en"]["recheck"] == "rejects"  # not mutated
    mixed = read_twice({"zh": {"backend": "paraformer", "model": "/m"}, "en": {"model": "tiny.en", "pack": False},
                        "ja": {"model": "base", "pack": True}})
    assert mixed == {"zh": {"backend": "paraformer", "model": "/m"}, "en": {"model": "tiny.en", "pack": False},
                     "ja": {"model": "base", "pack": True, "recheck": "all"}}


def test_bad_recheck_is_one_clear_error():
    from filters.config import FilterConfig
    from manifests.errors import UserError

    with pytest.raises(UserError, match=r"asr.en.recheck must be one of null, rejects, all, got 'sometimes'"):
        FilterConfig.from_dict({"asr": {"en": {"model": "tiny.en", "pack": True, "recheck": "sometimes"}}})
