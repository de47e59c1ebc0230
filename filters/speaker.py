"""Speaker similarity: cosine between resemblyzer embeddings of the generated audio and a reference.

    f = SpeakerSimilarityFilter(min_ss=0.75, references={"narrator": "voices/narrator.wav"})
    f.setup()
    verdicts = f(samples)     # scores: ss, ss_model ("resemblyzer-0.1.4"), ss_ref

The reference of a row is, in order: its clone prompt (``speaker_wav``), ``reference_audio``
(path, array or encoded bytes), ``references[speaker]``, the teacher's own rendering
(``source_audio``); a row with none is kept unscored (flag ``unscored_ss``).

resemblyzer (GE2E, 256-d) scores are not comparable with the WavLM-large SS numbers of the
seed-tts-eval protocol (Step-Audio reports 0.66-0.73 there): always report ``ss_model`` with them.
"""
from __future__ import annotations

import numpy as np

from engine.audio import SAMPLE_RATE, read_audio
from engine.speaker_embed import MIN_SAMPLES, embed_batch, load_encoder, model_id
from engine.speakers import prompt_path
from filters.base import Filter, RowProblem, Verdict, add_flags, get_audio, reject


class SpeakerSimilarityFilter(Filter):
    """Args:
        min_ss: reject when the cosine similarity is below this (resemblyzer scale).
        references: speaker/voice name -> reference audio path, for rows without a clone prompt.
        threads: torch CPU threads (also the declared ``num_cpus``). batch_partials: 1.6 s
            windows per encoder forward.
    """

    name = "speaker"
    columns = ("ss", "ss_model", "ss_ref", "quality_flags")

    def __init__(self, min_ss: float = 0.75, references: dict | None = None, threads: int = 1,
                 device: str = "cpu", batch_partials: int = 256):
        self.min_ss, self.references = min_ss, dict(references or {})
        self.threads, self.device, self.batch_partials = threads, device, batch_partials
        self.resources = {"num_cpus": threads, "num_gpus": 1 if device == "cuda" else 0}
        self.encoder = None
        self._cache: dict[str, np.ndarray] = {}  # path -> embedding: prompts repeat across rows

    def setup(self) -> None:
        self.encoder = load_encoder(self.device, self.threads)
        self.model = model_id()

    def __call__(self, samples: list[dict]) -> list[Verdict]:
        if self.encoder is None:
            self.setup()
        self._warm_cache(samples)
        verdicts: list[Verdict | None] = [None] * len(samples)
        pending = []  # (row, generated wav, (reference, kind, is_embedding))
        for i, sample in enumerate(samples):
            try:
                wav = _voiced(get_audio(sample), "audio")
                ref = self._reference(sample)
            except RowProblem as exc:
                verdicts[i] = reject(str(exc), ss=None)
                continue
            if ref is None:
                verdicts[i] = Verdict(True, "", add_flags({"ss": None}, "unscored_ss"))
            else:
                pending.append((i, wav, ref))
        self._score(pending, verdicts)
        return verdicts

    def _score(self, pending: list, verdicts: list) -> None:
        # one batched encoder pass over every generated wav and every reference still a wav
        wavs = [p[1] for p in pending] + [p[2][0] for p in pending if not p[2][2]]
        embeds = iter(embed_batch(self.encoder, wavs, self.batch_partials))
        gen = [next(embeds) for _ in pending]
        for (i, _, (ref, kind, is_embedding)), g in zip(pending, gen):
            r = ref if is_embedding else next(embeds)
            ss = float(np.dot(g, r))
            scores = {"ss": ss, "ss_model": self.model, "ss_ref": kind}
            ok = ss >= self.min_ss
            verdicts[i] = Verdict(ok, "" if ok else f"ss {ss:.2f} < {self.min_ss:.2f}", scores)

    def _reference(self, sample: dict):
        """(reference, kind, is_embedding): paths give cached embeddings, arrays or bytes give
        preprocessed wavs; None when the row has no reference."""
        if sample.get("speaker_wav"):
            return self._embed_path(_prompt(sample), "speaker prompt"), "prompt", True
        ref = sample.get("reference_audio")
        if isinstance(ref, str) and ref:
            return self._embed_path(ref, "reference audio"), "reference", True
        if ref is not None and not isinstance(ref, str):
            return _voiced(get_audio(sample, "reference_audio"), "reference audio"), "reference", False
        name = sample.get("speaker") or sample.get("voice")
        if name in self.references:
            return self._embed_path(self.references[name], "reference audio"), "reference", True
        if sample.get("source_audio") is not None:
            return _voiced(get_audio(sample, "source_audio"), "source audio"), "source", False
        return None

    def _embed_path(self, path: str, what: str) -> np.ndarray:
        if path not in self._cache:
            self._warm_cache([{"reference_audio": path}])
        if isinstance(self._cache[path], RowProblem):
            raise RowProblem(f"unreadable {what} {path}")
        return self._cache[path]

    def _warm_cache(self, samples: list[dict]) -> None:
        """Embed every reference path of the batch not yet cached, in one encoder pass."""
        paths = {str(p) for s in samples for p in (s.get("speaker_wav") and _prompt(s), s.get("reference_audio"),
                 self.references.get(s.get("speaker") or s.get("voice") or "")) if isinstance(p, str) and p}
        paths = sorted(paths - set(self._cache))
        wavs = {}
        for path in paths:
            try:
                wav, sr = read_audio(path)
                wavs[path] = _voiced(wav, "reference", sr)
            except (ValueError, RowProblem) as exc:
                self._cache[path] = RowProblem(str(exc))  # remembered: a bad prompt stays bad
        for path, emb in zip(wavs, embed_batch(self.encoder, list(wavs.values()), self.batch_partials)):
            self._cache[path] = emb
        while len(self._cache) > 4096:
            self._cache.pop(next(iter(self._cache)))


def _prompt(sample: dict) -> str:
    """The file of a row's clone prompt (a packaged prompt is stored by name; engine.speakers)."""
    return prompt_path(str(sample["speaker_wav"]), str(sample.get("speaker") or ""))


def _voiced(wav: np.ndarray, what: str, sr: int = SAMPLE_RATE) -> np.ndarray:
    """resemblyzer's preprocessing (volume, long silences cut); RowProblem when nothing is left."""
    from resemblyzer import preprocess_wav

    wav = np.asarray(wav, np.float32)
    if wav.size == 0 or np.abs(wav).max() < 1e-4:  # digital silence: resemblyzer divides by zero
        raise RowProblem(f"no voiced {what} for a speaker embedding")
    out = preprocess_wav(wav, source_sr=sr)
    if len(out) < MIN_SAMPLES:
        raise RowProblem(f"no voiced {what} for a speaker embedding")
    return out
