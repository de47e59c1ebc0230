"""melvq codec: token rates and 2:3 alignment, id layout, training determinism, shipped weights,
and the ``stepforge codec`` commands on files."""
from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

from engine import tokens
from engine.codec import assign, load_codec, mel
from engine.codec.train import TrainConfig, train
from pipelines.cli import main as cli
from tests.conftest import TINY_CODEC



@pytest.fixture(scope="module")
def codec():
    return load_codec()


@pytest.fixture(scope="module")
def speech():
    """A preprocessed eSpeak sentence (16 kHz), never part of the training text."""
    from engine.audio import preprocess
    from engine.espeak import render

    wav, sr = render("Seven bright kites drifted over the quiet harbour.", voice="en-us", rate=170)
    return preprocess(wav, sr)


def _log_mel_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two waveforms' log-mel spectrograms (common length)."""
    ma, mb = mel.log_mel(a), mel.log_mel(b)
    n = min(len(ma), len(mb))
    return float(np.corrcoef(ma[:n].ravel(), mb[:n].ravel())[0, 1])


@pytest.mark.parametrize("n_samples", [1, 1919, 1920, 1921, 16000, 48017])
def test_rates_and_alignment(codec, n_samples):
    wav = 0.1 * np.sin(np.arange(n_samples) * 0.07).astype(np.float32)
    vq02, vq06 = codec.encode(wav)
    groups = -(-n_samples // 1920)
    assert vq02.dtype == np.int32 and vq06.dtype == np.int32
    assert (len(vq02), len(vq06)) == (2 * groups, 3 * groups)
    assert len(codec.decode(vq02, vq06)) == groups * 1920  # 120 ms per group


def test_empty_and_bad_input(codec):
    vq02, vq06 = codec.encode(np.zeros(0, np.float32))
    assert len(vq02) == len(vq06) == 0
    with pytest.raises(ValueError, match="mono"):
        codec.encode(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="vq06 code 4096"):
        codec.decode([0, 1], [0, 1, 4096])
    with pytest.raises(ValueError, match="not 2N and 3N"):
        codec.decode([0, 1], [0, 1])


def test_tokenize_layout(codec, speech):
    ids = codec.tokenize(speech)
    groups = -(-len(speech) // 1920)
    assert ids.dtype == np.int32 and len(ids) == 5 * groups
    slots = ids.reshape(-1, 5)
    assert ((slots[:, :2] >= 65536) & (slots[:, :2] < 66560)).all()
    assert ((slots[:, 2:] >= 66560) & (slots[:, 2:] < 70656)).all()
    vq02, vq06 = tokens.deinterleave(ids)
    np.testing.assert_array_equal(vq02, codec.encode(speech)[0])
    assert len(codec.detokenize(ids)) == groups * 1920
    with pytest.raises(ValueError, match="position 0"):
        codec.detokenize(np.r_[100, ids[1:]])


def test_assign_matches_brute_force():
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(500, 12)).astype(np.float32), rng.normal(size=(64, 12)).astype(np.float32)
    brute = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(assign(x, c), brute)


def test_training_is_deterministic(tmp_path):
    a = train(TrainConfig(**TINY_CODEC, seed=3), tmp_path / "a.npz")
    b = train(TrainConfig(**TINY_CODEC, seed=3), tmp_path / "b.npz")
    c = train(TrainConfig(**TINY_CODEC, seed=4), tmp_path / "c.npz")
    assert a == b and a != c
    ca, cc = load_codec(str(tmp_path / "a.npz")), load_codec(str(tmp_path / "c.npz"))
    np.testing.assert_array_equal(ca.codebook.vq06, load_codec(str(tmp_path / "b.npz")).codebook.vq06)
    assert ca.sizes == (8, 16) and not np.array_equal(ca.codebook.vq02, cc.codebook.vq02)


def test_codebook_order_first_stage_codes_the_cepstra_second_the_residual(tmp_path):
    from engine.codec import weights
    from engine.codec.quantize import DualCodebook

    rng = np.random.default_rng(0)
    q = 3
    ceps = (rng.normal(size=(12 * 400, q)) * [4.0, 2.0, 1.0]).astype(np.float32)
    for first in ("vq06", "vq02"):
        book = DualCodebook.fit(ceps, (16, 32), iters=5, seed=0, first=first)
        assert book.first == first and book.vq02.shape == (16, 6 * q) and book.vq06.shape == (32, 4 * q)
        codes02, codes06 = book.encode(ceps)
        assert (len(codes02), len(codes06)) == (800, 1200)
        own = {"vq02": (codes02, book.vq02, 6), "vq06": (codes06, book.vq06, 4)}
        codes, centroids, frames = own[first]
        # The first stage is nearest-centroid coding of the cepstra themselves ...
        np.testing.assert_array_equal(codes, assign(ceps.reshape(-1, frames * q), centroids))
        # ... and the second stage only ever lowers the error the first one left.
        alone = ((centroids[codes].reshape(-1, q) - ceps) ** 2).mean()
        both = ((book.reconstruct(codes02, codes06) - ceps) ** 2).mean()
        assert both < 0.8 * alone
    with pytest.raises(ValueError, match="first='vq03'"):
        DualCodebook(book.vq02, book.vq06, "vq03")
    # Weights written before the order was stored decode and encode as vq02-first.
    legacy = tmp_path / "legacy.npz"
    weights.save(legacy, {"vq02": book.vq02, "vq06": book.vq06}, {}, {})
    old = load_codec(str(legacy))
    assert old.codebook.first == "vq02"
    np.testing.assert_array_equal(old.codebook.encode(ceps)[0], assign(ceps.reshape(-1, 6 * q), old.codebook.vq02))


def test_shipped_weights_round_trip(codec, speech):
    assert codec.version.startswith("melvq-1+") and codec.sizes == (1024, 4096)
    assert codec.codebook.first == "vq06"
    resynth = codec.decode(*codec.encode(speech))
    rng = np.random.default_rng(0)
    n = len(codec.encode(speech)[0]) // 2
    noise = codec.decode(rng.integers(0, 1024, 2 * n), rng.integers(0, 4096, 3 * n))
    good, bad = _log_mel_corr(speech, resynth), _log_mel_corr(speech, noise)
    # Measured: ~0.93 for the round trip, ~0.3 for random codes.
    assert good > 0.85 and good > bad + 0.3


def test_decode_smoothing_comes_with_the_weights(codec, speech):
    from engine.codec.codec import MelVQCodec

    assert codec.smooth == 1.0  # stored in the shipped weights' decoder config
    codes = codec.encode(speech)
    sharp = MelVQCodec(codec.codebook, codec.decoder, codec.version, smooth=0.0).decode_mel(*codes)
    smooth = codec.decode_mel(*codes)
    assert smooth.shape == sharp.shape
    step = lambda m: float(np.abs(np.diff(m, axis=0)).mean())  # noqa: E731
    assert step(smooth) < 0.8 * step(sharp)
    # Smoothing only redistributes energy along time: the mean log-mel barely moves.
    assert abs(float(smooth.mean() - sharp.mean())) < 0.05


def test_load_codec_errors(tmp_path):
    with pytest.raises(ValueError, match="no such codec weights"):
        load_codec(str(tmp_path / "missing.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_codec(str(junk))


def test_cli_encode_decode_files(tmp_path, speech, capsys):
    wav = tmp_path / "in.wav"
    sf.write(wav, speech, 16000)
    assert cli(["codec", "encode", str(wav), str(tmp_path / "ids.npy")]) == 0
    ids = np.load(tmp_path / "ids.npy")
    assert ids.dtype == np.int32 and len(ids) == 5 * -(-len(speech) // 1920)
    assert cli(["codec", "encode", str(wav), str(tmp_path / "ids.txt"), "--format", "txt"]) == 0
    text = (tmp_path / "ids.txt").read_text()
    assert tokens.from_audio_string(text.strip()) == ids.tolist()
    for src, out in (("ids.npy", "out.flac"), ("ids.txt", "out.wav")):
        assert cli(["codec", "decode", str(tmp_path / src), str(tmp_path / out)]) == 0
        audio, sr = sf.read(tmp_path / out)
        assert sr == 16000 and len(audio) == len(ids) // 5 * 1920


def test_cli_errors_name_the_file(tmp_path, capsys):
    bad_wav = tmp_path / "corrupt.wav"
    bad_wav.write_bytes(b"RIFF\x00\x00garbage")
    assert cli(["codec", "encode", str(bad_wav), str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt.wav" in err and len(err.splitlines()) == 1
    bad_ids = tmp_path / "bad.npy"
    np.save(bad_ids, np.array([65536, 65537, 5, 66560, 66561], np.int32))  # a text id in a vq06 slot
    assert cli(["codec", "decode", str(bad_ids), str(tmp_path / "x.wav")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.npy" in err and "position 2" in err and len(err.splitlines()) == 1


def test_cli_train_tiny_and_rerun_is_a_no_op(tmp_path, capsys):
    out = tmp_path / "w.npz"
    argv = ["codec", "train", "--out", str(out), "--utterances", "4", "--vq02-size", "8",
            "--vq06-size", "16", "--kmeans-iters", "2", "--decoder-steps", "2", "--channels", "8"]
    assert cli(argv) == 0
    assert "wrote" in capsys.readouterr().out
    codec = load_codec(str(out))
    assert codec.sizes == (8, 16) and len(codec.tokenize(np.zeros(3840, np.float32))) == 10
    assert codec.codebook.first == "vq06"
    stamp = out.stat().st_mtime_ns
    assert cli(argv) == 0 and "up to date" in capsys.readouterr().out and out.stat().st_mtime_ns == stamp
    # Another order is another setting: not up to date, and it is stored with the weights.
    assert cli(argv + ["--first", "vq02"]) == 0 and "wrote" in capsys.readouterr().out
    assert load_codec(str(out)).codebook.first == "vq02"


def test_the_bench_holds_out_what_the_codec_never_trains_on():
    from engine.codec import corpus

    trained = {text for text, _ in corpus.training_sentences()}
    held = corpus.heldout_sentences()
    assert len(held) == corpus.HELDOUT_EN and not trained & set(held)
    words = corpus.random_word_sentences(50)
    assert words == corpus.random_word_sentences(50) and len(set(words)) == 50  # seeded, distinct
    basic = (corpus.DATA_DIR / "sentences_en-basic.txt").read_text().lower()
    vocab = set(re.findall(r"[a-z]+", basic))
    assert all(6 <= len(s.split()) <= 10 and set(s.split()) <= vocab for s in words)
    texts = [r.text for r in corpus.heldout_renderings(2, texts="random-words")]
    assert texts == words * 2
