"""Batched resemblyzer speaker embeddings: many utterances, one encoder pass.

    encoder = load_encoder("cpu", threads=1)
    emb = embed_batch(encoder, [wav_a, wav_b])     # preprocessed 16 kHz wavs -> float32 [2, 256]

Same result as ``VoiceEncoder.embed_utterance`` per wav (mean of 1.6 s partial embeddings,
L2-normalised), but the partials of all wavs go through the LSTM together, which is what makes it
fast on CPU. The clone search of the reference teacher and the speaker-similarity filter both
embed with it.
"""
from __future__ import annotations

import contextlib
import warnings
from importlib.metadata import version

import numpy as np

MIN_SAMPLES = 1600  # 0.1 s: below this the embedding is only padding
HINT = ("speaker embeddings (similarity filter, voice cloning) need `pip install resemblyzer` "
        "(it ships its weights)")
PARTIAL_RATE, MIN_COVERAGE = 1.3, 0.75  # embed_utterance's defaults


def load_encoder(device: str = "cpu", threads: int = 1):
    """resemblyzer.VoiceEncoder on ``device``; ``threads`` (0 = leave as is) caps torch's CPU
    threads for the whole process."""
    try:
        import torch

        with warnings.catch_warnings():  # resemblyzer imports a deprecated scipy path
            warnings.simplefilter("ignore", DeprecationWarning)
            from resemblyzer import VoiceEncoder
    except ImportError:
        raise ImportError(HINT) from None
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    return VoiceEncoder(device, verbose=False)


def model_id() -> str:
    """The encoder's name and version, e.g. ``"resemblyzer-0.1.4"`` (reported beside scores)."""
    return f"resemblyzer-{version('resemblyzer')}"


def embed_batch(encoder, wavs: list[np.ndarray], max_partials: int = 256,
                threads: int | None = None) -> np.ndarray:
    """Embed utterances in batched encoder passes.

    Args:
        encoder: a ``resemblyzer.VoiceEncoder`` (:func:`load_encoder`).
        wavs: 16 kHz float32 ``[samples]`` each, already through ``resemblyzer.preprocess_wav``
            (or at least resampled to 16 kHz).
        max_partials: 1.6 s windows per encoder forward (bounds memory).
        threads: torch CPU threads for these passes only (restored after); None = as set.
    Returns:
        float32 ``[len(wavs), 256]``, unit norm.
    """
    if not wavs:
        return np.zeros((0, 256), np.float32)
    mels, owner = partial_mels(encoder, wavs)
    with _torch_threads(threads):
        partials = _encode(encoder, mels, max_partials)
    sums = np.zeros((len(wavs), partials.shape[1]), np.float64)
    np.add.at(sums, owner, partials)
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)


def partial_mels(encoder, wavs: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The mel windows of every wav, as ``embed_utterance`` cuts them, and the index of the wav
    each window belongs to (``int [n_windows]``)."""
    from resemblyzer import audio

    mels, owner = [], []
    for k, wav in enumerate(wavs):
        wav_slices, mel_slices = encoder.compute_partial_slices(len(wav), PARTIAL_RATE, MIN_COVERAGE)
        if wav_slices[-1].stop > len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = audio.wav_to_mel_spectrogram(wav)
        mels += [mel[s] for s in mel_slices]
        owner += [k] * len(mel_slices)
    return mels, np.asarray(owner)


def _encode(encoder, mels: list[np.ndarray], max_partials: int) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(mels), max_partials):
            batch = torch.from_numpy(np.stack(mels[start:start + max_partials])).to(encoder.device)
            out.append(encoder(batch).cpu().numpy())
    return np.concatenate(out)


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Cap torch's CPU threads inside the block: a many-thread LSTM on a shared machine, in a
    worker that declared one CPU, ran 3x slower."""
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
