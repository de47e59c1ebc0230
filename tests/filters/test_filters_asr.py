"""ASR backends: the real tiny.en on eSpeak speech, packing, routing and fail-fast errors."""
import sys

import numpy as np
import pytest

from filter_speech import speak
from filters.asr import ASRRouter, load_asr
from filters.cer import error_rate
from filters.whisper_pack import lay_out, plan_windows, split_words

SENTENCES = [
    "Open the window and let some fresh air into the room.",
    "Where is the nearest train station?",
    "I don't know what you're talking about.",
    "Can you help me carry these boxes upstairs?",
]


def test_tiny_en_transcribes_each_row_of_a_packed_batch(router):
    texts = router.transcribe([speak(s) for s in SENTENCES], "en")
    assert len(texts) == len(SENTENCES)
    for i, text in enumerate(texts):
        assert error_rate(SENTENCES[i], text, "en") <= 0.2, text
        for j, other in enumerate(SENTENCES):
            if j != i:  # each transcript belongs to its own row, not a neighbour's
                assert error_rate(other, text, "en") >= 0.6, (other, text)


def test_wrong_text_gets_a_high_wer(router):
    (text,) = router.transcribe([speak("I would like a cup of coffee with milk, please.")], "en")
    assert error_rate(SENTENCES[0], text, "en") >= 0.8


def test_unpacked_protocol_mode_agrees():
    asr = load_asr({"backend": "faster-whisper", "model": "tiny.en", "pack": False, "batch_size": 2})
    texts = asr.transcribe([speak(s) for s in SENTENCES[:2]], "en")
    assert [error_rate(s, t, "en") <= 0.2 for s, t in zip(SENTENCES, texts)] == [True, True]


def test_audio_longer_than_a_window_is_transcribed(router):
    long = np.concatenate([speak(s) for s in SENTENCES * 3] + [np.zeros(16000 * 4, np.float32)])
    assert len(long) > 30 * 16000
    (text,) = router.transcribe([long], "en")
    assert error_rate(" ".join(SENTENCES * 3), text, "en") <= 0.3


def test_plan_windows_fills_and_covers():
    durations = [12.0, 3.0, 9.0, 20.0, 1.5, 28.5]
    windows = plan_windows(durations, gap_s=1.0, window_s=30.0)
    assert sorted(i for w in windows for i in w) == list(range(len(durations)))
    for w in windows:
        assert sum(durations[i] + 1.0 for i in w) <= 30.0
    assert len(windows) == 3


def test_lay_out_and_split_words_round_trip():
    audio, spans = lay_out([np.ones(16000, np.float32), np.ones(8000, np.float32)], gap_s=1.0)
    assert len(audio) == 16000 + 8000 + 2 * 16000
    assert spans == [(0.5, 1.5), (2.5, 3.0)]
    words = [(" one", 0.7), (" two.", 1.4), (" three", 2.2), (" four", 2.8)]
    assert split_words(words, spans) == ["one two.", "three four"]


def test_missing_model_dir_fails_fast_with_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install faster-whisper"):
        ASRRouter({"en": {"backend": "faster-whisper", "model": str(tmp_path / "nope")}}).load()
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_asr({"model": str(tmp_path)})


def test_english_only_model_refused_for_chinese():
    with pytest.raises(ValueError, match="cannot transcribe zh"):
        ASRRouter({"zh": {"backend": "faster-whisper", "model": "tiny.en"}}).load()


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown ASR backend"):
        load_asr({"backend": "nope"})


def test_paraformer_names_what_is_missing(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install funasr.*does not exist"):
        load_asr({"backend": "paraformer", "model": str(tmp_path / "missing")})
    monkeypatch.setitem(sys.modules, "funasr", None)  # as if funasr were not installed
    with pytest.raises(ImportError, match="Paraformer needs `pip install funasr`"):
        load_asr({"backend": "paraformer", "model": str(tmp_path)})
