"""Griffin-Lim of many signals at once (engine.codec.vocoder.griffin_lim_many) gives each what
phasing it alone gives, and the VocoderBatcher that serve's streams share answers every caller
with its own block's result, batching the blocks that wait together."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from engine.codec import load_codec, mel
from engine.codec.stream import VocoderBatcher
from engine.codec.vocoder import griffin_lim_from, griffin_lim_many, random_phases


def alone(magnitude, angles, n_samples, n_iter=32, momentum=0.99):
    """Griffin-Lim of one signal as the textbook writes it: the centred STFT and its inverse."""
    previous = np.zeros_like(angles)
    for _ in range(n_iter):
        rebuilt = mel.stft(mel.istft(magnitude * angles, n_samples))[:len(magnitude)]
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        previous = rebuilt
        angles = accelerated / np.maximum(np.abs(accelerated), 1e-8)
    return mel.istft(magnitude * angles, n_samples), angles


def jobs(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i, frames in enumerate(sizes):
        magnitude = np.abs(rng.standard_normal((frames, mel.N_FFT // 2 + 1))).astype(np.float32)
        out.append((magnitude, random_phases(magnitude.shape, seed=i), frames * mel.HOP))
    return out


def test_signals_phased_together_come_out_as_each_phased_alone():
    batch = jobs([36, 1, 60, 7, 204])
    together = griffin_lim_many(batch, n_iter=16)
    for job, (wav, phases) in zip(batch, together):
        ref_wav, ref_phases = alone(*job, n_iter=16)
        assert wav.dtype == np.float32 and wav.shape == ref_wav.shape
        assert np.abs(wav - ref_wav).max() <= 1e-3 * np.abs(ref_wav).max()
        assert phases.shape == job[0].shape
        assert np.allclose(np.abs(phases), 1.0, atol=1e-4)
    # and a signal's result does not depend on what it was batched with
    again = griffin_lim_many([batch[2]], n_iter=16)[0][0]
    assert np.array_equal(again, together[2][0])


def test_a_bad_job_is_refused():
    magnitude, angles, n = jobs([10])[0]
    with pytest.raises(ValueError, match="magnitudes"):
        griffin_lim_many([(magnitude, angles[:5], n)])
    with pytest.raises(ValueError, match="samples"):
        griffin_lim_many([(magnitude, angles, n + 1)])


def test_the_batcher_answers_each_caller_with_its_own_block_and_batches_waiting_blocks():
    batcher = VocoderBatcher(threads=1)
    try:
        big = jobs([400], seed=9)[0]
        small = jobs([24, 48, 36, 60, 12, 30], seed=3)
        results: dict = {}
        started = threading.Event()

        def busy():  # holds the batcher's one thread while the small blocks queue up
            started.set()
            results["big"] = batcher(*big, n_iter=200)

        def call(i):
            results[i] = batcher(*small[i], n_iter=8)

        threads = [threading.Thread(target=busy)] + [threading.Thread(target=call, args=(i,)) for i in range(len(small))]
        threads[0].start()
        started.wait()
        for t in threads[1:]:
            t.start()
        for t in threads:
            t.join(timeout=300)
        for i, job in enumerate(small):
            wav, phases = results[i]
            assert np.array_equal(wav, griffin_lim_from(*job, n_iter=8)[0])
        assert max(batcher.batch_sizes) > 1  # the blocks that waited were phased together
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(*small[0])


def test_a_failing_block_fails_its_caller_only():
    batcher = VocoderBatcher(threads=1)
    try:
        magnitude, angles, n = jobs([20])[0]
        with pytest.raises(ValueError):
            batcher(magnitude, angles[:3], n)
        wav, _ = batcher(magnitude, angles, n, n_iter=4)
        assert len(wav) == n
    finally:
        batcher.close()


def test_a_stream_decoded_through_the_batcher_equals_one_decoded_alone():
    from engine.audio import preprocess
    from engine.espeak import render

    codec = load_codec()
    wav, sr = render("Seven bright kites drifted over the quiet harbour.", voice="en-us")
    ids = codec.tokenize(preprocess(wav, sr))
    batcher = VocoderBatcher()
    try:
        outs = []
        for vocoder in (None, batcher):
            decoder = codec.stream_decoder(vocoder=vocoder) if vocoder else codec.stream_decoder()
            pieces = [decoder.push(ids[i:i + 10]) for i in range(0, len(ids), 10)] + [decoder.finish()]
            outs.append(np.concatenate(pieces))
        assert np.array_equal(outs[0], outs[1])
    finally:
        batcher.close()
