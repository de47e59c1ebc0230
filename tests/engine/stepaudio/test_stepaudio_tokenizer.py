"""Step-Audio-Tokenizer end to end (wav -> ids) vs upstream's wav2token (goldens/make_tokenizer.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.errors import MissingModel
from engine.stepaudio.tokenizer import StepAudioTokenizer
from manifests.errors import UserError
from tests.engine.stepaudio.tiny_paraformer import write_tiny_tokenizer_vq02
from tests.engine.stepaudio.tiny_vq06 import write_tiny_vq06_onnx

GOLDENS = Path(__file__).resolve().parent / "goldens" / "tokenizer"


def golden(name: str) -> np.ndarray:
    return np.load(GOLDENS / f"{name}.npy")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    tok_dir = write_tiny_tokenizer_vq02(tmp_path_factory.mktemp("tok"), seed=0)
    write_tiny_vq06_onnx(tok_dir / "speech_tokenizer_v1.onnx", seed=0)
    return tok_dir


@pytest.fixture(scope="module")
def tok(tok_dir) -> StepAudioTokenizer:
    return StepAudioTokenizer.from_dir(tok_dir)


@pytest.fixture(scope="module")
def prompt_wav(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wav") / "prompt.wav"
    sf.write(path, golden("prompt_44k_int16"), 44100, subtype="PCM_16")
    return path


@pytest.mark.parametrize("trim", [True, False], ids=["trim", "notrim"])
def test_ids_match_upstream_wav2token(tok, prompt_wav, trim):
    enc = tok.encode_file(prompt_wav, trim=trim)
    name = "trim" if trim else "notrim"
    np.testing.assert_array_equal(enc.vq02, golden(f"{name}_vq02"))
    np.testing.assert_array_equal(enc.vq06, golden(f"{name}_vq06"))
    np.testing.assert_array_equal(enc.ids, golden(f"{name}_ids"))
    np.testing.assert_array_equal(enc.decoder_tokens, golden(f"{name}_ids") - 65536)
    if trim:  # upstream's prompt length: whole 240-sample units plus 0.27 s
        assert (len(enc.wav16k) - 4320) % 240 == 0


def test_stereo_float_input_is_averaged(tok):
    pcm = golden("prompt_44k_int16")[44100:88200].astype(np.float32) / 32768  # 1 s of speech
    mono = tok.encode(pcm, 44100, trim=False)
    stereo = tok.encode(np.stack([pcm, pcm]), 44100, trim=False)
    assert len(mono.ids) >= 5 * 7
    np.testing.assert_array_equal(mono.ids, stereo.ids)


def test_bad_prompts(tok, tok_dir, tmp_path):
    with pytest.raises(UserError, match="silent"):
        tok.encode(np.zeros(44100, np.float32), 44100, source="quiet.wav")
    with pytest.raises(UserError, match="8000 Hz is below"):
        tok.encode(np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 8000)
    with pytest.raises(UserError, match="not one whole 2:3 group|too short"):
        tok.encode(np.random.default_rng(0).normal(0, 0.1, 300).astype(np.float32), 16000, trim=False)
    (tmp_path / "t").mkdir()
    with pytest.raises(MissingModel):
        StepAudioTokenizer.from_dir(tmp_path / "t")
