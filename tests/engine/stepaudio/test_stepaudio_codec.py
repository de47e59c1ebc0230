"""engine.stepaudio.codec: the released stack as one codec on a tiny checkpoint in the released layout.

The parts are checked against upstream in their own tests (goldens); here: the composition, the
interface melvq has (tokenize, detokenize, process, version), reproducibility and bad input.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.speakers import builtin_prompt
from engine.stepaudio import layout
from engine.stepaudio.codec import StepAudioCodec
from manifests.errors import UserError
from manifests.stage import Stage
from tests.engine.stepaudio.tiny_release import write_tiny_release


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("stepaudio"), lm_weights=False)


@pytest.fixture(scope="module")
def codec(model_path, tmp_path_factory):
    import soundfile as sf

    # a short default voice and 2 flow steps keep the decodes fast (the parts' own tests run 10)
    wav, sr = sf.read(builtin_prompt("lin")[0], dtype="float32")
    voice = tmp_path_factory.mktemp("voice") / "lin_1s.wav"
    sf.write(voice, wav[: sr], sr)
    return StepAudioCodec.from_spec(f"stepaudio:{model_path}", default_voice=voice, n_steps=2)


@pytest.fixture(scope="module")
def recording():
    import soundfile as sf

    wav, sr = sf.read(builtin_prompt("lin")[0], dtype="float32")
    return wav, sr


def test_interface(codec, model_path):
    assert isinstance(codec, Stage) and codec.name == "stepaudio" and codec.sample_rate == 22050
    assert codec.version == layout.resolve(f"stepaudio:{model_path}").version()
    assert codec.version.startswith("stepaudio-1+")


def test_round_trip_length_and_reproducibility(codec, recording):
    wav, sr = recording
    ids = codec.tokenize(wav, sr)
    assert ids.dtype == np.int32 and ids.size % 5 == 0 and ids.size > 0
    assert ((ids >= 65536) & (ids < 70656)).all()
    seconds = len(wav) / sr
    assert abs(ids.size / 41.67 - seconds) < 0.25
    out = codec.detokenize(ids)
    frames = int(ids.size / 41.67 * 22050 / 256)
    assert out.dtype == np.float32 and out.shape == (frames * 256,)
    assert np.isfinite(out).all() and np.abs(out).max() <= 0.99 + 1e-6
    short = codec.detokenize(ids[:30])
    np.testing.assert_array_equal(codec.detokenize(ids[:30]), short)  # seeded: the same audio again
    music = codec.detokenize(ids[:30], music=True)
    assert music.shape == short.shape and not np.array_equal(music, short)


def test_pickles_after_use(codec, recording):
    import pickle

    wav, sr = recording
    ids = codec.tokenize(wav, sr)[:20]
    out = codec.detokenize(ids)
    copy = pickle.loads(pickle.dumps(codec))  # as Ray ships a stage to a worker
    assert copy.version == codec.version
    np.testing.assert_array_equal(copy.detokenize(ids), out)


def test_voice_changes_the_decode(codec, recording):
    wav, sr = recording
    ids = codec.tokenize(wav, sr)[:30]
    other = codec.voice(builtin_prompt("ben")[0])
    assert other.embedding.shape == (192,) and other.mel.shape[1] == 80 and other.tokens.max() < 5120
    assert not np.array_equal(codec.detokenize(ids, voice=other), codec.detokenize(ids))


def test_process_records(codec, recording):
    wav, sr = recording
    ids = codec.tokenize(wav, sr)[:30]
    records = [
        {"id": "a", "tokens": ids, "style": "speech"},
        {"id": "b", "tokens": ids, "style": "rap", "speaker_wav": builtin_prompt("ben")[0]},
        {"id": "c", "tokens": np.array([65536, 3]), "style": "speech"},
        {"id": "d", "tokens": None, "error": "teacher failed"},
        {"id": "e", "tokens": ids, "speaker_wav": "/no/such/prompt.wav"},
    ]
    a, b, c, d, e = codec.process(records)
    assert a["audio"].shape == (int(30 / 41.67 * 22050 / 256) * 256,) and a["n_tokens"] == 30
    assert b["audio"].shape == a["audio"].shape and not np.array_equal(a["audio"], b["audio"])
    assert c["audio"] is None and c["error"].startswith("invalid teacher tokens")
    assert d["audio"] is None and d["error"] == "teacher failed"
    assert e["audio"] is None and e["error"].startswith("voice prompt:") and "/no/such/prompt.wav" in e["error"]


def test_spec_options(model_path, codec):
    import torch

    c = StepAudioCodec.from_spec(f"stepaudio:{model_path}?steps=3&seed=7&dither=0.5&device=cpu&"
                                 f"voice={codec.default_voice}&dtype=bfloat16")
    assert (c.n_steps, c.seed, c.dither, c.device, c.dtype) == (3, 7, 0.5, "cpu", torch.bfloat16)
    assert c.default_voice == codec.default_voice and c.version == codec.version
    assert StepAudioCodec.from_spec(f"stepaudio:{model_path}?device=cpu").dtype == torch.float32
    for query, message in (("?step=3", "unknown stepaudio codec option 'step'"),
                           ("?steps=x", "steps='x'.*not a valid int"),
                           ("?dtype=fp8", "not a valid dtype"),
                           ("?steps=0", "steps must be >= 1"),
                           ("?voice=/no/voice.wav", "/no/voice.wav: no such voice prompt file"),
                           ("?steps", "bad options")):
        with pytest.raises(UserError, match=message):
            StepAudioCodec.from_spec(f"stepaudio:{model_path}{query}")


def test_bad_input(codec, model_path, tmp_path):
    with pytest.raises(UserError, match="not an audio id"):
        codec.detokenize([65536, 42])
    with pytest.raises(UserError, match="below"):
        codec.tokenize(np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 8000)
    with pytest.raises(UserError, match="silent"):
        codec.tokenize(np.zeros(16000, np.float32), 16000)
    (model_path / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music/flow.pt").rename(tmp_path / "flow.pt")
    try:
        with pytest.raises(UserError, match="CosyVoice-300M-25Hz-Music/flow.pt: missing"):
            StepAudioCodec.from_spec(f"stepaudio:{model_path}")
    finally:
        (tmp_path / "flow.pt").rename(model_path / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music/flow.pt")
