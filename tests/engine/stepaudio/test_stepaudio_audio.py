"""engine.stepaudio.audio and .fbank: loading every format, upstream's preprocessing and the Kaldi
fbank, on their own terms and against upstream's outputs (goldens/vq02, made by make_vq02.py)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from engine.stepaudio.audio import (check_audible, load_audio, load_prompt, peak_normalize,
                                    preprocess, resample, speech_bounds, trim_prompt)
from engine.stepaudio.fbank import fbank, num_frames
from manifests.errors import UserError


def tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("subtype,fmt,ext", [("PCM_16", "WAV", "wav"), ("PCM_24", "WAV", "wav"),
                                             ("FLOAT", "WAV", "wav"), ("PCM_16", "FLAC", "flac")])
def test_load_audio_formats_and_stereo(tmp_path, subtype, fmt, ext):
    left, right = tone(22050, 0.2), tone(22050, 0.2, 880.0, 0.25)
    path = tmp_path / f"a.{ext}"
    sf.write(path, np.stack([left, right], axis=1), 22050, subtype=subtype, format=fmt)
    wav, sr = load_audio(path)
    assert sr == 22050 and wav.dtype == np.float32 and wav.shape == left.shape
    tol = 1e-6 if subtype == "FLOAT" else 2.0 ** -15
    assert np.max(np.abs(wav - (left + right) / 2)) <= tol


def test_load_audio_bad_input(tmp_path):
    with pytest.raises(UserError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(UserError, match="bad.wav: cannot read audio"):
        load_audio(bad)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(UserError, match="no samples"):
        load_audio(empty)


@pytest.mark.parametrize("sr", [44100, 48000, 22050, 24000, 8000])
def test_resample_keeps_a_tone(sr):
    x = tone(sr, 0.5, 1000.0)
    y = resample(x, sr, 16000)
    assert y.dtype == np.float32 and len(y) == math.ceil(len(x) * 16000 / sr)
    ref = tone(16000, 0.5, 1000.0)[: len(y)]
    mid = slice(400, len(y) - 400)  # the edges see the zero padding
    assert np.max(np.abs(y[mid] - ref[mid])) < 2e-3


def test_resample_removes_what_the_new_rate_cannot_hold():
    y = resample(tone(48000, 0.5, 12000.0), 48000, 16000)  # above the 8 kHz Nyquist
    assert np.max(np.abs(y[400:-400])) < 1e-3
    assert np.array_equal(resample(tone(16000, 0.1), 16000, 16000), tone(16000, 0.1))


def test_peak_normalize():
    x = tone(16000, 0.1, amp=0.25)
    assert np.isclose(np.max(np.abs(peak_normalize(x))), 0.999, atol=1e-6)
    quiet = tone(16000, 0.1, amp=0.001)  # below the 0.01 floor: gain is capped at 99.9
    assert np.isclose(np.max(np.abs(peak_normalize(quiet))), 0.0999, atol=1e-5)
    assert not np.any(peak_normalize(np.zeros(100, np.float32)))


def test_trim_prompt_keeps_the_speech_and_the_upstream_length():
    wav = np.zeros(32000, np.float32)
    wav[8000:20000] = tone(16000, 0.75)
    s, e = speech_bounds(wav)
    assert 7600 <= s <= 8000 and 20000 <= e <= 20400
    out = trim_prompt(wav)
    n = math.ceil((e - s) / 240)
    assert len(out) == n * 240 + 4320
    assert np.array_equal(out[: len(out)], np.pad(wav, (0, 10000))[s - 800: s - 800 + len(out)])


def test_trim_prompt_pads_in_front_and_at_the_end():
    wav = tone(16000, 0.5)  # speech from sample 0: 800 zeros go in front, the tail is padded
    out = trim_prompt(wav)
    assert len(out) == math.ceil(8000 / 240) * 240 + 4320
    assert not np.any(out[:800]) and np.array_equal(out[800:8800], wav)
    assert not np.any(out[8800:])


def test_preprocess_refuses_8khz_and_handles_stereo():
    with pytest.raises(UserError, match="p.wav: sample rate 8000 Hz is below"):
        preprocess(tone(8000, 0.5), 8000, source="p.wav")
    stereo = np.stack([tone(32000, 0.5), tone(32000, 0.5)])
    out = preprocess(stereo, 32000, trim=False)
    assert out.shape == (8000,) and np.isclose(np.max(np.abs(out)), 0.999, atol=1e-6)


def test_check_audible():
    check_audible(tone(16000, 0.1))
    with pytest.raises(UserError, match="x.wav: the audio is silent \\(digital silence\\)"):
        check_audible(np.zeros(16000, np.float32), "x.wav")
    with pytest.raises(UserError, match="-80 dBFS"):
        check_audible(tone(16000, 0.1, amp=1e-4))


def test_load_prompt(tmp_path):
    wav = np.zeros(48000, np.float32)
    wav[12000:36000] = tone(48000, 0.5)
    sf.write(tmp_path / "p.wav", wav, 48000, subtype="PCM_24")
    out = load_prompt(tmp_path / "p.wav")
    assert out.dtype == np.float32 and (len(out) - 4320) % 240 == 0
    assert np.isclose(np.max(np.abs(out)), 0.999, atol=2e-3)
    assert np.array_equal(out, preprocess(load_audio(tmp_path / "p.wav")[0], 48000))
    sf.write(tmp_path / "p8.wav", tone(8000, 0.5), 8000)
    with pytest.raises(UserError, match="p8.wav: sample rate 8000 Hz"):
        load_prompt(tmp_path / "p8.wav")
    sf.write(tmp_path / "quiet.wav", np.zeros(16000, np.float32), 16000)
    with pytest.raises(UserError, match="quiet.wav: the audio is silent"):
        load_prompt(tmp_path / "quiet.wav")


def test_fbank_shapes_and_a_tone_in_its_bin():
    x = tone(16000, 1.0, 1000.0) * 32768
    f = fbank(x, window="hamming")
    assert f.shape == (num_frames(16000), 80) == (98, 80) and f.dtype == torch.float32
    peak_bin = int(f.mean(0).argmax())
    centre = 700 * (math.exp(((peak_bin + 1) * (1127 * math.log(1 + 8000 / 700)
                                                 - 1127 * math.log(1 + 20 / 700)) / 81
                              + 1127 * math.log(1 + 20 / 700)) / 1127) - 1)
    assert abs(centre - 1000) < 120
    assert fbank(np.zeros(399, np.float32)).shape == (0, 80)
    assert fbank(x[:16000], snip_edges=False).shape == (num_frames(16000, snip_edges=False), 80)


def test_fbank_dither_and_mean():
    x = tone(16000, 0.5) * 32768
    a = fbank(x, dither=1.0, generator=torch.Generator().manual_seed(0))
    b = fbank(x, dither=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and not torch.equal(a, fbank(x))
    m = fbank(x, subtract_mean=True)
    assert torch.allclose(m.mean(0), torch.zeros(80), atol=1e-4)
    assert torch.allclose(m, fbank(x) - fbank(x).mean(0), atol=1e-5)



# --- parity with upstream (goldens/make_vq02.py ran torchaudio, librosa and Step-Audio's utils) --
GOLD = Path(__file__).parent / "goldens" / "vq02"


def gold(name: str) -> np.ndarray:
    return np.load(GOLD / f"{name}.npy")


def max_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def test_parity_resample():
    assert max_err(resample(gold("resample_in_44k"), 44100, 16000), gold("resample_44k_16k")) <= 1e-5
    noise = gold("resample_in_noise")
    for a, b in ((48000, 16000), (48000, 22050), (24000, 16000), (22050, 16000), (16000, 22050)):
        assert max_err(resample(noise, a, b), gold(f"resample_noise_{a}_{b}")) <= 1e-5, (a, b)


def test_parity_normalize_and_trim():
    x16 = gold("tingting_16k")
    assert max_err(peak_normalize(x16), gold("norm")) <= 1e-6
    trimmed = trim_prompt(gold("norm"))
    assert trimmed.shape == gold("trim").shape and max_err(trimmed, gold("trim")) == 0.0
    assert max_err(preprocess(x16, 16000), gold("trim")) <= 1e-6


# float32 FFTs and matmuls round differently on other CPUs (the goldens were written on an AVX2
# host; on an AVX-512 one, 2026-12-01, the log mel differed by up to 7.3e-5); a wrong window, filter
# bank or weight is off by orders of magnitude more
FBANK_TOL = 5e-4


def test_parity_fbank():
    seg = gold("tingting_16k")[:8000]
    assert max_err(fbank(seg * 32768, window="hamming"), gold("fbank_hamming")) <= FBANK_TOL
    assert max_err(fbank(seg, subtract_mean=True), gold("fbank_povey_cmn")) <= FBANK_TOL
