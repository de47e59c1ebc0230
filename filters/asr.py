"""ASR backends behind one interface, and the per-language router the CER filter uses.

    router = ASRRouter({"en": {"backend": "faster-whisper", "model": "tiny.en"},
                        "zh": {"backend": "paraformer", "model": "/models/paraformer-zh"}})
    router.load()                                   # every model once, fails fast
    texts = router.transcribe([wav_a, wav_b], "en")  # float32 [samples] at 16 kHz each

Backend configs:
- ``faster-whisper``: ``model`` = "tiny.en" or "base" (CTranslate2 models shipped as pip packages,
  :mod:`filters.whisper_packages`), a local CTranslate2 Whisper dir, or a local Hugging Face Whisper dir (converted
  once, e.g. whisper-large-v3 for reported numbers); see :class:`filters.whisper.WhisperASR` for
  ``beam_size``, ``cpu_threads``, ``device``, ``compute_type``, ``batch_size``, ``pack``,
  ``recheck``.
- ``paraformer``: ``model`` = a local FunASR Paraformer dir (needs ``pip install funasr``).

The embedded default (:data:`DEFAULT_ASR`): tiny.en for English (better and faster there than
multilingual base), Whisper base for Chinese, Japanese and Korean (one model shared). Whisper base
has no Cantonese: it writes Mandarin for Cantonese speech, so score Cantonese with another model
or keep it unscored (``per_dialect: {cantonese: null}``).
"""
from __future__ import annotations

import inspect
from typing import Protocol

import numpy as np

from filters.paraformer import ParaformerASR
from filters.whisper import WhisperASR
from manifests.errors import UserError

# tiny.en on 2 CPU cores: several short utterances share one 30 s window (see WhisperASR.pack),
# and a row the CER filter would reject is read again alone, the better read kept (recheck), since a
# packed window can give it a neighbour's words. One thread per model: on CPU the filter job scales by
# running one worker per core.
MULTILINGUAL = {"backend": "faster-whisper", "model": "base", "pack": True, "recheck": "rejects", "cpu_threads": 1}
DEFAULT_ASR = {"en": {"backend": "faster-whisper", "model": "tiny.en", "pack": True, "recheck": "rejects",
                      "cpu_threads": 1},
               "zh": MULTILINGUAL, "ja": MULTILINGUAL, "ko": MULTILINGUAL}
BACKENDS = ("faster-whisper", "paraformer")


class ASR(Protocol):
    """Speech -> text for one language at a time."""

    name: str  # model id recorded with the scores, e.g. "faster-whisper:tiny.en"

    def transcribe(self, batch: list[np.ndarray], lang: str) -> list[str]:
        """Args: batch of float32 ``[samples]`` waveforms at 16 kHz; lang: "en", "zh", ...
        Returns: one raw (unnormalised) transcript per waveform, in order."""

    # A backend whose batch decoding can mix rows (packed Whisper) may also have ``recheck``
    # ("rejects" or "all") and ``transcribe_alone(batch, lang)``, one row per decode: the CER
    # filter then reads those rows a second time and keeps the better read.


def read_twice(config: dict | None) -> dict:
    """The ASR configs (None: :data:`DEFAULT_ASR`) with every packed Whisper reading every row
    twice, in its window and alone (``recheck: all``): the better read scores the row, and student
    and teacher rows are read alike (``stepforge eval``)."""
    out = {}
    for lang, c in (DEFAULT_ASR if config is None else config).items():
        c = dict(c)
        if c.get("backend", "faster-whisper") == "faster-whisper" and c.get("pack"):
            c["recheck"] = "all"
        out[lang] = c
    return out


def load_asr(config: dict) -> ASR:
    """Build and load one backend from its config (see the module docstring).

    Raises:
        UserError: unknown backend or option. ``engine.errors.MissingPackage`` /
        ``MissingModel`` (UserErrors too): missing package or model dir, with an install hint.
    """
    config = dict(config)
    backend = config.pop("backend", "faster-whisper")
    if backend not in BACKENDS:
        raise UserError(f"unknown ASR backend {backend!r} (choose from {', '.join(BACKENDS)})")
    cls = WhisperASR if backend == "faster-whisper" else ParaformerASR
    allowed = list(inspect.signature(cls).parameters)
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise UserError(f"ASR {backend}: unknown option {unknown[0]!r} (allowed: backend, {', '.join(allowed)})")
    return cls(**config)


class ASRRouter:
    """Maps a text language to the ASR backend configured for it.

    Args:
        config: ``{lang: backend config}``; None -> :data:`DEFAULT_ASR`. Languages that share an
            identical backend config share one loaded model.
        models: ``{lang: ASR}`` already built (they take precedence over ``config``).
    """

    def __init__(self, config: dict | None = None, models: dict | None = None):
        self.config = {lang: dict(c) for lang, c in (DEFAULT_ASR if config is None else config).items()}
        self._given = dict(models or {})
        self._models: dict[str, ASR] = dict(self._given)

    @property
    def languages(self) -> set[str]:
        return set(self.config) | set(self._given)

    def has(self, lang: str) -> bool:
        return lang in self.languages

    def load(self) -> None:
        """Load every configured backend now (before any row), each distinct config once;
        calling it again loads nothing twice."""
        loaded: dict[str, ASR] = {}
        for lang, cfg in self.config.items():
            if lang in self._models:
                continue
            key = repr(sorted(cfg.items()))
            if key not in loaded:
                loaded[key] = load_asr(cfg)
            model = loaded[key]
            if hasattr(model, "supports") and not model.supports(lang):
                raise UserError(f"ASR {model.name} configured for {lang} cannot transcribe {lang}")
            self._models[lang] = model

    def get(self, lang: str) -> ASR:
        if not self.has(lang):
            raise KeyError(f"no ASR for {lang}")
        if lang not in self._models:
            self.load()
        return self._models[lang]

    def transcribe(self, batch: list[np.ndarray], lang: str) -> list[str]:
        return self.get(lang).transcribe(batch, lang)
