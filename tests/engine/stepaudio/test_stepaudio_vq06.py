"""vq06 (speech_tokenizer_v1.onnx path): parity with upstream on the tiny graph, chunking, bad input.

Goldens: tests/engine/stepaudio/goldens/make_vq06.py (upstream Step-Audio get_vq06_code and
whisper.log_mel_spectrogram on the same tiny graph and a 2 s excerpt of a real recording).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import MissingModel
from engine.stepaudio.vq06 import CHUNK_SAMPLES, Vq06Tokenizer, log_mel, n_codes, split_chunks
from manifests.errors import UserError
from tests.engine.stepaudio.tiny_vq06 import write_tiny_vq06_onnx

GOLDENS = Path(__file__).resolve().parent / "goldens" / "vq06"


def golden(name: str) -> np.ndarray:
    return np.load(GOLDENS / f"{name}.npy")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    return write_tiny_vq06_onnx(tmp_path_factory.mktemp("vq06") / "speech_tokenizer_v1.onnx", seed=0)


@pytest.fixture(scope="module")
def tok(onnx_path) -> Vq06Tokenizer:
    return Vq06Tokenizer.from_file(onnx_path)


def test_log_mel_matches_upstream_whisper_frontend():
    wav = golden("wav16k")
    for x, ref in [(wav, golden("log_mel")), (wav[:1000], golden("log_mel_short"))]:
        ours = log_mel(x)
        assert ours.dtype == np.float32 and ours.shape == ref.shape == (128, len(x) // 160)
        assert np.abs(ours - ref).max() <= 2e-4  # FFT rounding differs across CPUs (up to 2.0e-5 seen)


def test_codes_match_upstream_on_the_tiny_graph(tok):
    wav = golden("wav16k")
    tiled = np.tile(wav, 16)
    cases = {"codes": wav, "codes_short": wav[:1000], "codes_long": tiled[:CHUNK_SAMPLES + 32000],
             "codes_longdrop": tiled[:CHUNK_SAMPLES + 300]}
    for name, x in cases.items():
        ours = tok.codes(x)
        assert ours.dtype == np.int32
        np.testing.assert_array_equal(ours, golden(name), err_msg=name)
    assert len(golden("codes")) == 50 and len(golden("codes_long")) == 750 + 50


def test_code_count_follows_the_frame_count(tok):
    x = golden("wav16k")
    for n in (480, 799, 800, 4321, 16000):
        assert len(tok.codes(x[:n])) == n_codes(n // 160)


def test_chunks_are_hard_30s_and_drop_short_tails():
    x = np.zeros(2 * CHUNK_SAMPLES + 479, np.float32)
    assert [len(c) for c in split_chunks(x)] == [CHUNK_SAMPLES, CHUNK_SAMPLES]
    assert [len(c) for c in split_chunks(x[:CHUNK_SAMPLES + 480])] == [CHUNK_SAMPLES, 480]


def test_missing_truncated_and_corrupt_files(tmp_path, onnx_path):
    with pytest.raises(MissingModel, match="no such file"):
        Vq06Tokenizer.from_file(tmp_path / "speech_tokenizer_v1.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(onnx_path.read_bytes()[: onnx_path.stat().st_size // 2])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file at all")
    for bad in (cut, junk):
        with pytest.raises(UserError, match="truncated or corrupt") as e:
            Vq06Tokenizer.from_file(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_wrong_contract_is_one_clear_line(tmp_path):
    wrong_name = write_tiny_vq06_onnx(tmp_path / "a.onnx", input_names=("speech", "feats_length"))
    with pytest.raises(UserError, match="expected inputs") as e:
        Vq06Tokenizer.from_file(wrong_name)
    assert "speech" in str(e.value) and "\n" not in str(e.value)
    wrong_out = write_tiny_vq06_onnx(tmp_path / "b.onnx", output_name="tokens")
    with pytest.raises(UserError, match="output 'indices'"):
        Vq06Tokenizer.from_file(wrong_out)
    wrong_mels = write_tiny_vq06_onnx(tmp_path / "c.onnx", n_mels=80)
    with pytest.raises(UserError, match=r"expected float \[1, 128, T\]"):
        Vq06Tokenizer.from_file(wrong_mels)


def test_bad_audio(tok):
    x = golden("wav16k")
    with pytest.raises(UserError, match="too short"):
        tok.codes(np.zeros(0, np.float32))
    with pytest.raises(UserError, match="too short"):
        tok.codes(x[:479])
    with pytest.raises(UserError, match="mono"):
        tok.codes(np.stack([x, x]))
    with pytest.raises(UserError, match="float"):
        tok.codes((x * 32767).astype(np.int16))
    bad = x.copy()
    bad[7] = np.nan
    with pytest.raises(UserError, match="NaN"):
        tok.codes(bad)
    with pytest.raises(UserError, match=r"log-mel of shape \(80, 10\)"):
        tok.codes_for_mel(np.zeros((80, 10), np.float32))
    assert len(tok.codes(x[None, :4800])) == n_codes(30)  # [1, n] is mono too
