"""Content check: transcribe the generated audio and compare with the text it should say.

    f = CERFilter(ASRRouter(), max_cer=0.2, per_style={"rap": 0.5}, per_dialect={"cantonese": None})
    f.setup()                            # loads every configured ASR model once, fails fast
    verdicts = f(samples)                # scores: cer, wer, asr_text, asr_model

``cer`` is the error rate the threshold applies to: character error rate for Chinese/Japanese
(text split into characters), word error rate for English and other spaced languages; ``wer`` is
the word error rate where words exist (None for character languages). Per utterance, after the
seed-tts-eval normalisation in :mod:`filters.normalize`.
"""
from __future__ import annotations

import os

import jiwer

from filters.asr import ASRRouter
from filters.base import Filter, RowProblem, Verdict, add_flags, get_audio, reject
from filters.normalize import CHAR_LANGS, normalize
from manifests.errors import UserError

DEFAULT_PER_STYLE = {"rap": 0.5, "humming": None}  # None: not transcribed (no words to check)
# Whisper base (the embedded zh ASR) has no Cantonese and writes Mandarin for it: a CER against the
# text would measure the dialect, not the content (median 1.00 on the reference teacher)
DEFAULT_PER_DIALECT = {"cantonese": None}
POLICIES = ("reject", "unscored")


def error_rate(reference: str, hypothesis: str, lang: str) -> float:
    """Normalised edit-distance rate of ``hypothesis`` against ``reference`` (0.0 = identical).
    An empty reference scores 0.0 against an empty hypothesis and 1.0 otherwise."""
    ref, hyp = normalize(reference, lang), normalize(hypothesis, lang)
    if not ref:
        return float(bool(hyp))
    return float(jiwer.wer(" ".join(ref), " ".join(hyp)))


def text_scores(reference: str, hypothesis: str, lang: str) -> dict:
    """{"cer": the thresholded rate, "wer": word error rate or None for character languages}."""
    rate = error_rate(reference, hypothesis, lang)
    return {"cer": rate, "wer": None if lang in CHAR_LANGS else rate}


class CERFilter(Filter):
    """Rejects rows whose transcript is too far from their text.

    Args:
        asr: an :class:`ASRRouter`, or its ``{lang: backend config}`` dict; None = English tiny.en.
        max_cer: reject when the rate is above this.
        per_style: style -> threshold overriding ``max_cer``; None = keep without transcribing
            (flag ``unscored_cer``). Merged over :data:`DEFAULT_PER_STYLE`.
        per_dialect: dialect -> threshold, the same way (e.g. ``{"cantonese": None}`` where the
            ASR cannot read the dialect). Merged over :data:`DEFAULT_PER_DIALECT`. With both a
            style and a dialect threshold the looser one applies; None in either means unscored.
        no_asr: lang -> "reject" | "unscored" for languages the router has no ASR for.
        default_no_asr: the policy for languages not in ``no_asr``.
    """

    name = "cer"
    columns = ("cer", "wer", "asr_text", "asr_model", "quality_flags")

    def __init__(self, asr: ASRRouter | dict | None = None, max_cer: float = 0.2,
                 per_style: dict | None = None, no_asr: dict | None = None,
                 default_no_asr: str = "reject", per_dialect: dict | None = None):
        self.router = asr if isinstance(asr, ASRRouter) else ASRRouter(asr)
        self.max_cer = max_cer
        self.per_style = {**DEFAULT_PER_STYLE, **(per_style or {})}
        self.per_dialect = {**DEFAULT_PER_DIALECT, **(per_dialect or {})}
        self.no_asr = dict(no_asr or {})
        for policy in [default_no_asr, *self.no_asr.values()]:
            if policy not in POLICIES:
                raise UserError(f"unknown no-ASR policy {policy!r} (choose from {', '.join(POLICIES)})")
        self.default_no_asr = default_no_asr
        threads = max([int(c.get("cpu_threads") or min(os.cpu_count() or 1, 4))
                       for c in self.router.config.values()] or [1])
        gpu = any(c.get("device") == "cuda" for c in self.router.config.values())
        self.resources = {"num_cpus": threads, "num_gpus": 1 if gpu else 0}

    def setup(self) -> None:
        self.router.load()

    def __call__(self, samples: list[dict]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(samples)
        wavs, todo = {}, {}
        for i, sample in enumerate(samples):
            verdicts[i], wav = self._precheck(sample)
            if verdicts[i] is None:
                wavs[i] = wav
                todo.setdefault(sample["lang"], []).append(i)
        for lang, rows in todo.items():
            self._score(lang, rows, [wavs[i] for i in rows], samples, verdicts)
        return verdicts

    def _precheck(self, sample: dict):
        """(verdict, None) when no ASR is needed (unscored style or language, bad audio), else
        (None, float32 [samples] audio to transcribe)."""
        lang = sample.get("lang") or ""
        unscored = Verdict(True, "", add_flags({"cer": None, "wer": None}, "unscored_cer"))
        if self.limit(sample) is None:
            return unscored, None
        if not self.router.has(lang):
            if self.no_asr.get(lang, self.default_no_asr) == "unscored":
                return unscored, None
            return reject(f"no ASR for {lang or '(no lang)'}", cer=None, wer=None), None
        try:
            return None, get_audio(sample)
        except RowProblem as exc:
            return reject(str(exc), cer=None, wer=None), None

    def limit(self, sample: dict) -> float | None:
        """The row's CER threshold (style and dialect overrides), None: not transcribed."""
        limits = [self.per_style.get(sample.get("style"), self.max_cer)]
        if sample.get("dialect") in self.per_dialect:
            limits.append(self.per_dialect[sample["dialect"]])
        return None if None in limits else max(limits)

    def _score(self, lang: str, rows: list[int], wavs: list, samples: list[dict], verdicts: list) -> None:
        asr = self.router.get(lang)
        texts = self._transcribe(asr.transcribe, wavs, lang)
        for i, hyp in zip(rows, texts):
            verdicts[i] = self._verdict(samples[i], hyp, lang, asr.name)
        recheck = getattr(asr, "recheck", None)
        if recheck:
            # a packed window can hand a row its neighbour's words: read it again alone, keep the better
            # read (a row read without error cannot be read better)
            again = [k for k, i in enumerate(rows) if verdicts[i].scores.get("cer")
                     and (recheck == "all" or not verdicts[i].keep)]
            texts = self._transcribe(asr.transcribe_alone, [wavs[k] for k in again], lang)
            for k, hyp in zip(again, texts):
                second = self._verdict(samples[rows[k]], hyp, lang, asr.name, "asr_alone")
                if second.scores.get("cer") is not None and second.scores["cer"] < verdicts[rows[k]].scores["cer"]:
                    verdicts[rows[k]] = second

    def _verdict(self, sample: dict, hyp, lang: str, model: str, *flags: str) -> Verdict:
        if isinstance(hyp, Exception):
            return reject(f"asr failed: {hyp}", cer=None, wer=None)
        scores = {**text_scores(sample.get("text") or "", hyp, lang), "asr_text": hyp, "asr_model": model}
        if flags:
            add_flags(scores, *flags)
        limit = self.limit(sample)
        ok = scores["cer"] <= limit
        return Verdict(ok, "" if ok else f"cer {scores['cer']:.2f} > {limit:.2f}", scores)

    @staticmethod
    def _transcribe(transcribe, wavs: list, lang: str) -> list:
        """Batch first; if the batch fails, row by row so one bad row fails only itself."""
        if not wavs:
            return []
        try:
            return list(transcribe(wavs, lang))
        except Exception:  # noqa: BLE001 - any backend error; retried per row below
            pass
        out = []
        for wav in wavs:
            try:
                out.append(transcribe([wav], lang)[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out
