"""Cheap checks that run before ASR and speaker similarity: tokens, duration, silence, clipping, loops.

    f = QualityFilter(max_silence=0.6, soft_flags=("too_slow",))
    verdicts = f(samples)          # scores: {"quality_flags": ["silence", ...]}

Flags (the reject reason names the measurement, e.g. "silence 0.93 > 0.60"):
    missing_audio / corrupt_audio / zero_length_audio, invalid_tokens, too_fast, too_slow,
    silence, clipping, token_loop, token_run; ``no_tokens`` (soft) when a row has no tokens.
A flag in ``soft_flags`` is recorded but does not reject.
"""
from __future__ import annotations

import io

import numpy as np

from engine.tokens import check_audio_ids
from filters.base import Filter, RowProblem, Verdict, get_audio
from filters.quality_checks import (RATE_BOUNDS, clipping_ratio, longest_run, loop_share,
                                    silence_ratio, speech_rate, text_units)


class QualityFilter(Filter):
    """Args:
        max_silence: largest silent-frame fraction. max_clipping: largest clipped-sample fraction.
        rate_bounds: lang -> (min, max) text units per voiced second (default :data:`RATE_BOUNDS`);
            languages without bounds and ``no_rate_styles`` skip the rate check, as do texts of
            fewer than ``min_units`` units.
        max_loop_share: largest share of repeated 2-group n-grams in the token stream.
        max_run_s: longest run of one code in a token stream, in seconds.
        soft_flags: flags recorded without rejecting.
    """

    name = "quality"
    columns = ("quality_flags",)

    def __init__(self, max_silence: float = 0.6, max_clipping: float = 0.01,
                 rate_bounds: dict | None = None, no_rate_styles=("humming",), min_units: int = 4,
                 max_loop_share: float = 0.4, max_run_s: float = 3.0, soft_flags=("no_tokens",)):
        self.max_silence, self.max_clipping = max_silence, max_clipping
        self.rate_bounds = RATE_BOUNDS if rate_bounds is None else rate_bounds
        self.no_rate_styles, self.min_units = tuple(no_rate_styles), min_units
        self.max_loop_share, self.max_run_s = max_loop_share, max_run_s
        self.soft_flags = set(soft_flags)

    def __call__(self, samples: list[dict]) -> list[Verdict]:
        return [self.check(s) for s in samples]

    def check(self, sample: dict) -> Verdict:
        """One row: every check that applies, all flags recorded, hard ones joined as the reason."""
        found: list[tuple[str, str]] = []  # (flag, reason)
        found += self._token_flags(sample.get("tokens"))
        try:
            wav = get_audio(sample)
        except RowProblem as exc:
            found.append((exc.flag, str(exc)))
        else:
            found += self._audio_flags(sample, wav)
        hard = [reason for flag, reason in found if flag not in self.soft_flags]
        return Verdict(not hard, "; ".join(hard), {"quality_flags": [flag for flag, _ in found]})

    def _token_flags(self, tokens) -> list[tuple[str, str]]:
        if tokens is None:
            return [("no_tokens", "no tokens")]
        try:
            ids = check_audio_ids(_decode_tokens(tokens))
        except ValueError as exc:
            return [("invalid_tokens", f"invalid tokens: {exc}")]
        if ids.size == 0:
            return [("invalid_tokens", "invalid tokens: no audio ids")]
        flags = []
        share, most = loop_share(ids)
        if share > self.max_loop_share:
            flags.append(("token_loop", f"token loop: {share:.0%} of 2-group n-grams repeat (one {most}x)"))
        stream, code, count, seconds = longest_run(ids)
        if seconds > self.max_run_s:
            flags.append(("token_run", f"token run: {stream} id {code} repeated {count}x ({seconds:.2f} s)"))
        return flags

    def _audio_flags(self, sample: dict, wav: np.ndarray) -> list[tuple[str, str]]:
        flags = []
        silence = silence_ratio(wav)
        if silence > self.max_silence:
            flags.append(("silence", f"silence {silence:.2f} > {self.max_silence:.2f}"))
        clipped = clipping_ratio(wav)
        if clipped > self.max_clipping:
            flags.append(("clipping", f"clipping {clipped:.3f} > {self.max_clipping:.3f}"))
        return flags + self._rate_flags(sample, wav)

    def _rate_flags(self, sample: dict, wav: np.ndarray) -> list[tuple[str, str]]:
        lang, text = sample.get("lang"), sample.get("text") or ""
        bounds = self.rate_bounds.get(lang)
        if bounds is None or sample.get("style") in self.no_rate_styles or text_units(text) < self.min_units:
            return []
        rate = speech_rate(text, wav)
        if rate is None:
            return []  # no voice at all: the silence check already says so
        lo, hi = bounds
        if rate > hi:
            return [("too_fast", f"too fast: {rate:.1f} units/s > {hi:.1f} ({lang})")]
        if rate < lo:
            return [("too_slow", f"too slow: {rate:.1f} units/s < {lo:.1f} ({lang})")]
        return []


def _decode_tokens(tokens) -> np.ndarray:
    """int ids from an array/list or .npy bytes; ValueError when they cannot be read."""
    if isinstance(tokens, (bytes, bytearray, memoryview)):
        try:
            tokens = np.load(io.BytesIO(bytes(tokens)), allow_pickle=False)
        except Exception:  # numpy raises several types for bad .npy data
            raise ValueError("undecodable .npy bytes") from None
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"token dtype {arr.dtype} is not an integer type")
    return arr
