"""Batched resemblyzer embeddings: many utterances, one encoder pass.

    encoder = load_encoder("cpu", threads=1)
    emb = embed_batch(encoder, [wav_a, wav_b])     # preprocessed 16 kHz wavs -> float32 [2, 256]

Same result as ``VoiceEncoder.embed_utterance`` per wav (mean of 1.6 s partial embeddings,
L2-normalised), but the partials of all wavs go through the LSTM together, which is what makes it
fast on CPU.
"""
from __future__ import annotations

import warnings

import numpy as np

MIN_SAMPLES = 1600  # 0.1 s: below this the embedding is only padding
HINT = "speaker similarity needs `pip install resemblyzer` (it ships its weights)"


def load_encoder(device: str = "cpu", threads: int = 1):
    """resemblyzer.VoiceEncoder on ``device``; ``threads`` caps torch's CPU threads."""
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
    from importlib.metadata import version

    return f"resemblyzer-{version('resemblyzer')}"


def embed_batch(encoder, wavs: list[np.ndarray], max_partials: int = 256) -> np.ndarray:
    """Args: wavs already through ``resemblyzer.preprocess_wav`` (16 kHz float32 [samples]).
    Returns: float32 ``[len(wavs), 256]``, unit norm."""
    import torch
    from resemblyzer import audio

    if not wavs:
        return np.zeros((0, 256), np.float32)
    mels, owner = [], []
    for k, wav in enumerate(wavs):
        wav_slices, mel_slices = encoder.compute_partial_slices(len(wav), rate=1.3, min_coverage=0.75)
        if wav_slices[-1].stop > len(wav):
            wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
        mel = audio.wav_to_mel_spectrogram(wav)
        mels += [mel[s] for s in mel_slices]
        owner += [k] * len(mel_slices)
    partials = []
    with torch.no_grad():
        for start in range(0, len(mels), max_partials):
            batch = torch.from_numpy(np.stack(mels[start:start + max_partials])).to(encoder.device)
            partials.append(encoder(batch).cpu().numpy())
    partials, owner = np.concatenate(partials), np.asarray(owner)
    sums = np.zeros((len(wavs), partials.shape[1]), np.float64)
    np.add.at(sums, owner, partials)
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
