"""Incremental decoding (engine.codec.stream): ids in any pieces give the whole decode's log-mel
frame for frame, a waveform of its length as close to the mel's magnitudes as the whole
decode's, and codecs without a stream decoder still decode."""
from __future__ import annotations

import numpy as np
import pytest

from engine import tokens
from engine.codec import load_codec, mel
from engine.codec.stream import StreamDecoder, WholeDecoder, open_stream


@pytest.fixture(scope="module")
def codec():
    return load_codec()


@pytest.fixture(scope="module")
def ids(codec):
    from engine.audio import preprocess
    from engine.espeak import render

    wav, sr = render("Seven bright kites drifted over the quiet harbour at dawn.", voice="en-us", rate=170)
    return codec.tokenize(preprocess(wav, sr))


def stream(decoder, ids, seed):
    """Push ``ids`` in random pieces; returns (the pieces of audio out, ids pushed before the first)."""
    rng = np.random.default_rng(seed)
    out, i, first = [], 0, None
    while i < len(ids):
        n = int(rng.integers(1, 14))
        out.append(decoder.push(ids[i:i + n]))
        i += n
        if first is None and len(out[-1]):
            first = i
    out.append(decoder.finish())
    return out, first


def convergence(wav, target):
    """Spectral convergence of ``wav`` to the magnitudes ``target`` (Griffin-Lim's objective)."""
    got = np.abs(mel.stft(wav))[:len(target)]
    return float(np.linalg.norm(got - target) / np.linalg.norm(target))


@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_audio_matches_the_whole_decode(codec, ids, seed):
    whole_mel = codec.decode_mel(*tokens.deinterleave(ids))
    whole = codec.detokenize(ids)
    decoder = codec.stream_decoder()
    pieces, first = stream(decoder, ids, seed)
    streamed = np.concatenate(pieces)
    assert np.abs(decoder.mel - whole_mel).max() <= 1e-4  # the same frames, computed on windows
    assert streamed.dtype == np.float32 and len(streamed) == len(whole)
    assert sum(len(p) > 0 for p in pieces) > 3  # it did stream
    groups_ctx, frames_ctx = codec.context
    need = (decoder.block + decoder.lookahead + frames_ctx) / mel.FRAMES_PER_GROUP + groups_ctx
    assert first <= (int(np.ceil(need)) + 3) * tokens.GROUP  # audio starts after a bounded look-ahead
    target = mel.mel_to_magnitude(whole_mel)
    assert convergence(streamed, target) <= convergence(whole, target) + 0.03


def test_the_stream_is_deterministic_whatever_the_pieces(codec, ids):
    a = np.concatenate(stream(codec.stream_decoder(), ids, 3)[0])
    b = np.concatenate(stream(codec.stream_decoder(), ids, 4)[0])
    c = np.concatenate(stream(codec.stream_decoder(), ids, 3)[0])
    assert np.array_equal(a, c)  # the same pieces: the same samples
    # other pieces: the same blocks, but the CPU's kernels may round them differently by batch
    # shape (bit-equal on AVX2; on an AVX-512 host, 2026-12-01, 1.3e-3 at most, -64 dB relative)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-2 and np.linalg.norm(a - b) <= 1e-3 * np.linalg.norm(a)


def test_bad_streams_are_refused(codec, ids):
    decoder = codec.stream_decoder()
    decoder.push(ids[:7])
    with pytest.raises(ValueError, match="whole 5-id groups"):
        decoder.finish()
    decoder = codec.stream_decoder()
    decoder.push(ids[:10])
    decoder.finish()
    with pytest.raises(ValueError, match="after finish"):
        decoder.push(ids[10:15])
    with pytest.raises(ValueError, match="overlap"):
        StreamDecoder(codec, block=4, overlap=8)


def test_a_codec_without_a_stream_decoder_decodes_whole_at_the_end(codec, ids):
    class Plain:  # a codec with detokenize only (as the Step-Audio codec today)
        detokenize = staticmethod(codec.detokenize)

    decoder = open_stream(Plain())
    assert isinstance(decoder, WholeDecoder) and isinstance(open_stream(codec), StreamDecoder)
    assert len(decoder.push(ids[:50])) == 0 and len(decoder.push(ids[50:])) == 0
    assert np.array_equal(decoder.finish(), codec.detokenize(ids))
