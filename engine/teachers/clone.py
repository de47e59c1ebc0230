"""Voice cloning for the reference teacher: the eSpeak variant and pitch nearest to a prompt.

Every candidate (variant x pitch level) is rendered once per process, embedded with resemblyzer
and its median F0 measured. For a prompt, each variant's pitch is read off its measured pitch
scale at the prompt's median F0 (the embedding separates timbres far better than nearby
pitches), and the variant whose embedding at that pitch is nearest (cosine) to the prompt wins.

    >>> search = CloneSearch()
    >>> match = search.match_file("engine/data/speakers/amy.wav", "The transcript.")
    >>> match.variant, match.pitch, round(match.similarity, 2)
    ('f2', 56, 0.87)
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.audio import SAMPLE_RATE, preprocess, read_audio
from engine.espeak import render
from engine.prosody_measure import f0_stats
from engine.speaker_embed import embed_batch, load_encoder
from engine.teachers.isolate import pristine

# f5 is left out: it is f2's formants with a higher pitch floor, which the pitch search covers.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4")
PITCHES = (20, 50, 80)
# Candidates read fixed texts in the prompt's language: embeddings shift with language.
CANDIDATE_VOICES = {"en": "en-us", "zh": "cmn"}
CANDIDATE_TEXTS = {
    "en": "Please call Stella and ask her to bring these things with her.",
    "zh": "今天天气很好，我们一起去公园散步吧。",
}
_CJK = re.compile(r"[\u3400-\u9fff]")


@dataclass(frozen=True)
class CloneMatch:
    """The chosen voice: eSpeak variant, pitch (0..100), cosine similarity of the best candidate
    to the prompt (resemblyzer), and the prompt's median F0 in Hz."""

    variant: str
    pitch: int
    similarity: float
    prompt_f0: float


def text_language(text: str) -> str:
    """'zh' when the text has CJK ideographs, else 'en' (the two candidate sets we keep)."""
    return "zh" if _CJK.search(text or "") else "en"


def _render_candidates(lang: str, keys: list[tuple[str, int]]) -> list[tuple[np.ndarray, int]]:
    text, voice = CANDIDATE_TEXTS[lang], CANDIDATE_VOICES[lang]
    return [render(text, voice=f"{voice}+{variant}", pitch=pitch) for variant, pitch in keys]


@dataclass
class _Candidates:
    keys: list[tuple[str, int]]  # (variant, pitch level)
    embeddings: np.ndarray       # [n, 256], unit norm
    f0: np.ndarray               # [n] median F0 in Hz


class CloneSearch:
    """Nearest eSpeak voice to a speaker prompt. Thread-safe; caches are per instance."""

    def __init__(self, variants=VARIANTS, pitches=PITCHES):
        self.variants, self.pitches = tuple(variants), tuple(sorted(pitches))
        self._encoder = None
        self._candidates: dict[str, _Candidates] = {}
        self._by_path: dict[tuple, CloneMatch] = {}
        self._lock = threading.RLock()

    def _embed(self, wavs: list[np.ndarray]) -> np.ndarray:
        with self._lock:
            if self._encoder is None:
                self._encoder = load_encoder("cpu", threads=0)  # 0: the process's setting stays
        # The teacher declares one CPU: one thread for the encoder passes only.
        return embed_batch(self._encoder, wavs, threads=1)

    def candidates(self, lang: str) -> _Candidates:
        """Render and embed every variant x pitch once for ``lang`` ('en' or 'zh')."""
        with self._lock:
            if lang not in self._candidates:
                keys = [(v, p) for v in self.variants for p in self.pitches]
                wavs = [preprocess(w, sr) for w, sr in pristine(_render_candidates, lang, keys)]
                f0 = np.array([f0_stats(w, SAMPLE_RATE)["median"] for w in wavs])
                self._candidates[lang] = _Candidates(keys, self._embed(wavs), f0)
            return self._candidates[lang]

    def match(self, wav16k: np.ndarray, lang: str = "en") -> CloneMatch:
        """Best variant and pitch for a preprocessed 16 kHz prompt ``float32 [samples]``.

        Each variant is scored at the prompt's own pitch: its embedding is interpolated between
        the two grid pitches around the prompt's F0, so a variant is not favoured merely for
        having a grid point that happens to sit at the prompt's pitch.
        """
        cands = self.candidates(lang)
        prompt = self._embed([wav16k])[0]
        f0 = f0_stats(wav16k, SAMPLE_RATE)["median"]
        best = max((self._score(cands, v, prompt, f0) for v in self.variants), key=lambda r: r[1])
        return CloneMatch(best[0], best[2], best[1], f0)

    def _score(self, cands: _Candidates, variant: str, prompt: np.ndarray, f0: float):
        rows = [i for i, (v, _) in enumerate(cands.keys) if v == variant]
        log_f0 = np.log(cands.f0[rows])
        levels = np.array([cands.keys[i][1] for i in rows], float)
        x = np.log(f0) if np.isfinite(f0) else log_f0[len(rows) // 2]
        # eSpeak's pitch scale is monotonic per variant: interpolate, extrapolating past the ends.
        j = int(np.clip(np.searchsorted(log_f0, x), 1, len(rows) - 1))
        a = (x - log_f0[j - 1]) / (log_f0[j] - log_f0[j - 1])
        pitch = int(np.clip(round(levels[j - 1] + a * (levels[j] - levels[j - 1])), 0, 100))
        a = float(np.clip(a, 0, 1))
        emb = (1 - a) * cands.embeddings[rows[j - 1]] + a * cands.embeddings[rows[j]]
        return variant, float(emb @ prompt / np.linalg.norm(emb)), pitch

    def match_file(self, path: str, text: str = "") -> CloneMatch:
        """:meth:`match` for a prompt file (any rate), cached per (path, language); a file
        rewritten in place (new size or mtime) is matched again."""
        stat = Path(path).stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, text_language(text))
        if key not in self._by_path:
            wav, sr = read_audio(path)
            self._by_path[key] = self.match(preprocess(wav, sr), key[-1])
        return self._by_path[key]


_default: CloneSearch | None = None


def default_search() -> CloneSearch:
    """The process-wide search, so candidates are embedded once per process."""
    global _default
    if _default is None:
        _default = CloneSearch()
    return _default
