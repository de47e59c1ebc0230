"""Training and held-out speech for the codec, rendered in process with eSpeak NG.

The text is the project's built-in sentences (engine/data/sentences_{en,zh}.txt). The last
``HELDOUT_EN`` English sentences are never trained on: the round-trip bench scores them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import espeak
from engine.audio import preprocess

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
HELDOUT_EN = 50
# eSpeak voice *file* names: "en" is British English (eSpeak has no file called "en-gb").
ENGLISH_VOICES = ("en-us", "en", "en-gb-scotland", "en-029")
CHINESE_VOICES = ("cmn", "yue", "hak")
VARIANTS = ("",) + tuple(f"+m{i}" for i in range(1, 8)) + tuple(f"+f{i}" for i in range(1, 6))
# The breathy variants (f2, f3, f5) are trained on too: eSpeak's breath noise is seeded on every
# render (engine.espeak), so their renderings, and the shipped weights, rebuild bit for bit.
TRAIN_VARIANTS = VARIANTS


@dataclass(frozen=True)
class Rendering:
    """One utterance to render: text, eSpeak voice and prosody."""

    text: str
    voice: str
    rate: int
    pitch: int
    range: int
    volume: int

    def render(self) -> np.ndarray:
        """Preprocessed (16 kHz, peak-normalised, trimmed) float32 waveform ``[samples]``."""
        wav, sr = espeak.render(self.text, voice=self.voice, rate=self.rate, pitch=self.pitch,
                                range=self.range, volume=self.volume)
        return preprocess(wav, sr)


def _render_chunk(renderings: list[Rendering], transform) -> list[np.ndarray]:
    return [transform(r.render()) if transform else r.render() for r in renderings]


def render_all(renderings: list[Rendering], workers: int = 2, chunk: int = 100, transform=None,
               progress=None) -> list[np.ndarray]:
    """Render in fresh worker processes, ``chunk`` renderings per process.

    eSpeak NG keeps state between calls (its output for a text depends on what the process
    rendered before), so each chunk starts in a new process: the result depends only on the
    renderings, never on the caller's history. ``transform`` (a module-level function, e.g.
    ``mel.log_mel``) runs in the worker on each preprocessed waveform.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks = [renderings[i:i + chunk] for i in range(0, len(renderings), chunk)]
    ctx = multiprocessing.get_context("spawn")
    out: list[np.ndarray] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        for done in pool.map(_render_chunk, chunks, [transform] * len(chunks)):
            out.extend(done)
            if progress:
                progress("render", len(out), len(renderings))
    return out


def _sentences(lang: str) -> list[str]:
    path = DATA_DIR / f"sentences_{lang}.txt"
    if not path.exists():
        raise ValueError(f"{path}: sentence list missing")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def training_sentences() -> list[tuple[str, tuple[str, ...]]]:
    """(sentence, voices to draw from) for every sentence the codec may train on."""
    english = _sentences("en")[:-HELDOUT_EN]
    return [(s, ENGLISH_VOICES) for s in english] + [(s, CHINESE_VOICES) for s in _sentences("zh")]


def heldout_sentences() -> list[str]:
    """The last ``HELDOUT_EN`` English sentences (never used for training)."""
    return _sentences("en")[-HELDOUT_EN:]


def random_rendering(text: str, voices: tuple[str, ...], rng: np.random.Generator, variants=VARIANTS,
                     rate=(100, 350), pitch=(10, 90), range_=(10, 90), volume=(60, 150)) -> Rendering:
    """A rendering with voice, variant and prosody drawn uniformly from the given ranges."""
    voice = voices[rng.integers(len(voices))] + variants[rng.integers(len(variants))]
    draw = lambda lo_hi: int(rng.integers(lo_hi[0], lo_hi[1] + 1))  # noqa: E731
    return Rendering(text, voice, draw(rate), draw(pitch), draw(range_), draw(volume))


def training_renderings(n: int, seed: int) -> list[Rendering]:
    """``n`` renderings cycling through the training sentences in a seeded order."""
    rng = np.random.default_rng(seed)
    pool = training_sentences()
    order = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])[:n]
    return [random_rendering(pool[i][0], pool[i][1], rng, TRAIN_VARIANTS) for i in order]


def heldout_renderings(per_sentence: int = 1, seed: int = 1234, texts: str = "sentences") -> list[Rendering]:
    """Held-out English renderings with moderate prosody (a teacher's neutral-to-lively range), of
    the held-out sentences or (``texts="random-words"``) of :func:`random_word_sentences`."""
    rng = np.random.default_rng(seed)
    chosen = heldout_sentences() if texts == "sentences" else random_word_sentences(HELDOUT_EN)
    return [random_rendering(s, ENGLISH_VOICES, rng, rate=(130, 250), pitch=(25, 75), range_=(25, 75),
                             volume=(80, 120))
            for _ in range(per_sentence) for s in chosen]


def random_word_sentences(n: int, seed: int = 7, words: tuple[int, int] = (6, 10)) -> list[str]:
    """``n`` strings of 6-10 words drawn at random from the ~240 common words of the en-basic
    sentences: no grammar for the ASR's language model to lean on, so errors are the audio's."""
    vocab = sorted({w for s in _sentences("en-basic") for w in re.findall(r"[a-z]+", s.lower()) if len(w) > 1})
    rng = np.random.default_rng(seed)
    return [" ".join(vocab[i] for i in rng.choice(len(vocab), rng.integers(words[0], words[1] + 1)))
            for _ in range(n)]
