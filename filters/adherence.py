"""Instruction adherence: did a row speak the language, emotion, speed and style it was asked for?

    f = AdherenceFilter(router=cer_filter.router, baselines=voice_baselines(neutral_samples))
    f.setup()                      # reuses the CER filter's multilingual Whisper (no second copy)
    verdicts = f(samples)          # scores: adherence_* columns, adherence_ok, adherence_reason

Checks (each configurable in the filter config's ``adherence:`` section; ``null`` disables one):

- ``lang``: spoken-language id (faster-whisper ``detect_language`` on the multilingual Whisper the
  CER filter loaded) against the row's ``lang``; rejected when another language wins with at least
  ``min_other_prob``. A row whose CER is already at most ``skip_below_cer`` is taken as in its
  language (a forced-language transcript matched its text) and not run again: detection costs a
  30 s encoder pass per row. Speech rows only: humming has no language, and on rap's syllables cut
  to the beat Whisper's language id is unreliable (the CER still checks rap's words). Whisper base
  has no Cantonese (no ``<|yue|>`` token) nor Sichuanese:
  Chinese dialects are not told apart; such rows get the flag ``dialect_unverified``.
- ``emotion``: F0 level and range against the same voice's neutral reading: ``adherence_emotion``
  is the shift of the median F0 plus the shift of the 10-90 % F0 spread (semitones), signed in the
  emotion's direction (:data:`DIRECTION`: happy, surprised, angry, coquettish up; sad, calm down);
  rejected below ``per_intensity_st * intensity - tolerance_st`` (grows with intensity). Energy is
  not used: peak normalisation removes most of it.
- ``speed``: ``adherence_rate``, speech seconds per text character against the voice's normal
  reading (>1 faster), within the bounds of the row's speed tag. Checked on neutral rows only:
  emotions change the rate too (sad is slower), so an emotional row's speed is left unchecked.
- ``rap``: ``adherence_beat_cv``, onset-interval regularity (``onset_cv``, low = on the beat).
- ``humming``: ``adherence_voiced`` (voiced share of the speech span) high and ``adherence_words``
  (share of the text the ASR recovers, 1 - CER clipped at 0) low.
- clone: covered by speaker similarity (:mod:`filters.speaker`).

The voice baseline (:func:`voice_baselines`) comes from the run's own neutral, normal-speed
speech rows of the same (speaker, dialect); the filter job computes it in a pre-pass and hands it
to every worker. Without one, emotion and speed stay unscored (flag ``no_voice_baseline``).
Prosody is measured on the teacher's own rendering (``source_audio``) when the row has one: the
melvq stand-in codec's decoder keeps the spectral envelope but not the pitch.
"""
from __future__ import annotations

import numpy as np

from engine.audio import SAMPLE_RATE
from engine.prosody_measure import HOP_S, f0_track, onset_cv, speech_seconds
from filters.asr import MULTILINGUAL, ASRRouter, load_asr
from filters.base import Filter, RowProblem, Verdict, add_flags, get_audio, reject
from filters.cer import error_rate
from manifests.errors import UserError

CHECKS = ("lang", "emotion", "speed", "rap", "humming")
DEFAULT_ADHERENCE = {
    "lang": {"min_other_prob": 0.5, "skip_below_cer": 0.5},
    "emotion": {"per_intensity_st": 0.6, "tolerance_st": 1.5},
    "speed": {"slow2": [None, 0.85], "slow1": [None, 0.95], "normal": [0.8, 1.25],
              "fast1": [1.05, None], "fast2": [1.2, None]},
    "rap": {"max_beat_cv": 0.35},
    "humming": {"min_voiced": 0.72, "max_words": 0.5},
}
DIRECTION = {"happy": 1, "surprised": 1, "angry": 1, "coquettish": 1, "sad": -1, "calm": -1}
COLUMNS = ("adherence_lang", "adherence_lang_prob", "adherence_emotion", "adherence_rate",
           "adherence_beat_cv", "adherence_voiced", "adherence_words", "adherence_ok", "adherence_reason")
YIN_THRESHOLD = 0.3  # looser than f0_track's default: a tonal language's glides still count as voiced


def adherence_settings(config: dict | None, where: str = "adherence") -> dict:
    """Merge a user's ``adherence:`` section over :data:`DEFAULT_ADHERENCE` (check -> settings or
    None). Raises UserError for an unknown check or key."""
    out = {k: dict(v) for k, v in DEFAULT_ADHERENCE.items()}
    for check, value in (config or {}).items():
        if check not in CHECKS:
            raise UserError(f"{where}: unknown check {check!r} (choose from {', '.join(CHECKS)})")
        if value is None:
            out[check] = None
            continue
        if not isinstance(value, dict):
            raise UserError(f"{where}.{check}: expected a mapping or null, got {value!r}")
        unknown = sorted(set(value) - set(DEFAULT_ADHERENCE[check]))
        if unknown:
            raise UserError(f"{where}.{check}: unknown key {unknown[0]!r} "
                            f"(allowed: {', '.join(DEFAULT_ADHERENCE[check])})")
        out[check] = {**(out[check] or DEFAULT_ADHERENCE[check]), **value}
    return out


def baseline_key(sample: dict) -> str:
    """The voice a baseline belongs to: clone speaker (or the default voice) and dialect."""
    return f"{sample.get('speaker') or ''}|{sample.get('dialect') or ''}"


def is_baseline_row(sample: dict) -> bool:
    return (sample.get("emotion") == "neutral" and sample.get("speed") == "normal"
            and sample.get("style") == "speech")


def text_units(text: str) -> int:
    return sum(ch.isalnum() for ch in text or "")


def prosody(sample: dict) -> dict:
    """{"median_st", "spread_st" (NaN when unvoiced), "voiced", "spu" (speech s per character)}
    of a sample's teacher rendering (``source_audio``) or its audio. Raises RowProblem."""
    wav = get_audio(sample, "source_audio" if sample.get("source_audio") is not None else "audio")
    f0 = f0_track(wav, SAMPLE_RATE, fmax=400.0, threshold=YIN_THRESHOLD)
    span = speech_seconds(wav, SAMPLE_RATE)
    median = spread = float("nan")
    if f0.size >= 5:
        p10, p50, p90 = np.percentile(f0, [10, 50, 90])
        median, spread = float(12 * np.log2(p50 / 100)), float(12 * np.log2(p90 / p10))
    return {"median_st": median, "spread_st": spread, "voiced": min(1.0, f0.size * HOP_S / max(span, HOP_S)),
            "spu": span / max(text_units(sample.get("text")), 1), "wav": wav}


def voice_baselines(samples: list[dict]) -> dict:
    """{baseline_key: {"median_st", "spread_st", "spu"}}: medians over the neutral, normal-speed
    speech samples given (others are ignored; unreadable ones skipped)."""
    groups: dict[str, list[dict]] = {}
    for s in samples:
        if not is_baseline_row(s):
            continue
        try:
            p = prosody(s)
        except RowProblem:
            continue
        groups.setdefault(baseline_key(s), []).append(p)
    out = {}
    for key, ps in groups.items():
        stats = {k: float(np.nanmedian([p[k] for p in ps])) if any(np.isfinite(p[k]) for p in ps) else None
                 for k in ("median_st", "spread_st", "spu")}
        if None not in stats.values():
            out[key] = {**stats, "rows": len(ps)}
    return out


class AdherenceFilter(Filter):
    """Rejects rows that did not follow their instruction (see the module docstring).

    Args:
        settings: the ``adherence:`` config (merged over :data:`DEFAULT_ADHERENCE`).
        router: the CER filter's :class:`ASRRouter`, whose multilingual Whisper is reused for
            language id and humming transcripts (None: load Whisper base on first need).
        baselines: :func:`voice_baselines` of the run.
    """

    name = "adherence"
    columns = (*COLUMNS, "quality_flags")

    def __init__(self, settings: dict | None = None, router: ASRRouter | None = None, baselines: dict | None = None):
        self.settings = adherence_settings(settings)
        self.router, self.baselines = router, dict(baselines or {})
        self._whisper = None

    def setup(self) -> None:
        if self.settings["lang"] or self.settings["humming"]:
            self.whisper()

    def whisper(self):
        """The multilingual :class:`filters.whisper.WhisperASR`: the router's when it has one."""
        if self._whisper is None:
            if self.router is not None:
                self.router.load()
                for lang in sorted(self.router.languages):
                    asr = self.router.get(lang)
                    if getattr(getattr(asr, "model", None), "model", None) is not None and asr.model.model.is_multilingual:
                        self._whisper = asr
                        break
            if self._whisper is None:
                self._whisper = load_asr(MULTILINGUAL)
        return self._whisper

    def __call__(self, samples: list[dict]) -> list[Verdict]:
        return [self._one(s) for s in samples]

    def _one(self, sample: dict) -> Verdict:
        scores = {c: None for c in COLUMNS}
        try:
            measured = prosody(sample) if any(self.settings[c] for c in ("emotion", "speed", "rap", "humming")) else {}
            audio = get_audio(sample)
        except RowProblem as exc:
            return reject(str(exc), **scores)
        failures = []
        for check in CHECKS:
            if self.settings[check]:
                failure = getattr(self, f"_{check}")(sample, audio, measured, scores)
                if failure:
                    failures.append(f"{check}: {failure}")
        scores["adherence_ok"] = not failures
        scores["adherence_reason"] = "; ".join(failures)
        flags = scores.pop("_flags", [])
        add_flags(scores, *flags)
        return Verdict(not failures, f"adherence {scores['adherence_reason']}" if failures else "", scores)

    def _baseline(self, sample: dict, scores: dict):
        base = self.baselines.get(baseline_key(sample))
        if base is None:
            scores.setdefault("_flags", []).append("no_voice_baseline")
        return base

    def _lang(self, sample, audio, measured, scores) -> str:
        lang, cfg = sample.get("lang") or "", self.settings["lang"]
        if sample.get("style") != "speech":
            return ""  # humming has no language; rap's beat-cut syllables mislead Whisper's language id
        if lang == "zh":
            scores.setdefault("_flags", []).append("dialect_unverified")
        cer = sample.get("cer")
        if cer is not None and cfg["skip_below_cer"] is not None and cer <= cfg["skip_below_cer"]:
            return ""
        top, _, probs = self.whisper().model.detect_language(audio)
        probs = dict(probs)
        scores["adherence_lang"], scores["adherence_lang_prob"] = top, float(probs.get(lang, 0.0))
        if top != lang and probs[top] >= cfg["min_other_prob"]:
            note = " (Whisper base cannot tell Chinese dialects apart: dialect not checked)" if lang == "zh" else ""
            return f"spoken {top} ({probs[top]:.2f}), asked {lang}{note}"
        return ""

    def _emotion(self, sample, audio, measured, scores) -> str:
        direction = DIRECTION.get(sample.get("emotion"))
        if direction is None or sample.get("style") != "speech":
            return ""
        base = self._baseline(sample, scores)
        if base is None or not np.isfinite(measured["median_st"]):
            return ""
        shift = (measured["median_st"] - base["median_st"]) + (measured["spread_st"] - base["spread_st"])
        score = direction * shift
        scores["adherence_emotion"] = score
        cfg, k = self.settings["emotion"], int(sample.get("intensity") or 0)
        need = cfg["per_intensity_st"] * k - cfg["tolerance_st"]
        if score < need:
            return (f"{sample['emotion']}{k}: F0 shift {score:+.1f} st toward {sample['emotion']} "
                    f"vs the voice's neutral reading (needs >= {need:+.1f})")
        return ""

    def _speed(self, sample, audio, measured, scores) -> str:
        bounds = self.settings["speed"].get(sample.get("speed"))
        if bounds is None or sample.get("style") != "speech" or sample.get("emotion") != "neutral":
            return ""
        base = self._baseline(sample, scores)
        if base is None or measured["spu"] <= 0:
            return ""
        rate = base["spu"] / measured["spu"]
        scores["adherence_rate"] = rate
        lo, hi = bounds
        if (lo is not None and rate < lo) or (hi is not None and rate > hi):
            limits = " and ".join(s for s in ((f">= {lo}" if lo is not None else ""), (f"<= {hi}" if hi is not None else "")) if s)
            return f"{sample['speed']}: rate {rate:.2f}x the voice's normal reading (needs {limits})"
        return ""

    def _rap(self, sample, audio, measured, scores) -> str:
        if sample.get("style") != "rap":
            return ""
        cv = onset_cv(measured["wav"], SAMPLE_RATE)
        scores["adherence_beat_cv"] = None if not np.isfinite(cv) else cv
        limit = self.settings["rap"]["max_beat_cv"]
        if np.isfinite(cv) and cv > limit:
            return f"beat onset cv {cv:.2f} > {limit} (no regular beat)"
        return ""

    def _humming(self, sample, audio, measured, scores) -> str:
        if sample.get("style") != "humming":
            return ""
        cfg, lang = self.settings["humming"], sample.get("lang") or ""
        scores["adherence_voiced"] = voiced = measured["voiced"]
        failures = []
        if voiced < cfg["min_voiced"]:
            failures.append(f"voiced {voiced:.2f} < {cfg['min_voiced']}")
        whisper = self.whisper()
        if cfg["max_words"] is not None and whisper.supports(lang):
            hyp = whisper.transcribe([audio], lang)[0]
            words = max(0.0, 1.0 - error_rate(sample.get("text") or "", hyp, lang))
            scores["adherence_words"] = words
            if words > cfg["max_words"]:
                failures.append(f"{words:.0%} of the text recognised > {cfg['max_words']:.0%}")
        return ", ".join(failures)
