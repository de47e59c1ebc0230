"""The filter interface: score a batch of samples, answer keep or (reject, reason) per row.

A sample is one dict, a manifest row plus its decoded payloads::

    {"id", "text", "lang", "dialect", "style", "speaker", "speaker_wav",
     "audio": float32 [samples] at 16 kHz (flac/wav bytes and None are accepted too),
     "tokens": int32 [n] Step-Audio LM ids (or .npy bytes, or None),
     ...plus the scores of filters that ran before}

A filter returns one :class:`Verdict` per sample, in order, and never raises for one bad row: a
missing, corrupt or empty payload is a rejected verdict whose reason names the problem. Filters
are :class:`~manifests.stage.Stage` s and know nothing of Ray; the filter job runs a
:class:`FilterChain` (itself a stage) on generic actor pools using the ``resources`` they declare::

    chain = FilterChain([QualityFilter(), CERFilter(), SpeakerSimilarityFilter()])
    chain.setup()                       # loads models once per actor
    records = chain.process(records)    # + cer, ss, quality_flags, accepted, reject_reason ...
    verdicts = run_chain(chain.filters, samples)   # the same, as Verdicts
"""
from __future__ import annotations

import io
from abc import abstractmethod
from dataclasses import dataclass, field

import numpy as np

from engine.audio import SAMPLE_RATE, resample
from manifests.stage import Stage, combined_resources

FLAGS = "quality_flags"  # shared column: every filter appends to it, none overwrites it


@dataclass
class Verdict:
    """One row's outcome. ``scores`` maps manifest columns to values (``cer``, ``ss``,
    ``quality_flags`` as a list of flag names ...); a column a filter could not score is None."""

    keep: bool
    reason: str = ""
    scores: dict = field(default_factory=dict)


def reject(reason: str, **scores) -> Verdict:
    return Verdict(False, reason, scores)


class Filter(Stage):
    """Scores a batch of samples. Subclasses set ``name``, ``columns`` (the score columns they
    add) and ``resources`` (what one instance needs, for sizing an actor pool), and implement
    ``__call__``; ``setup`` loads models once per worker."""

    name: str = "filter"
    columns: tuple[str, ...] = ()
    resources: dict = {"num_cpus": 1, "num_gpus": 0}

    @abstractmethod
    def __call__(self, samples: list[dict]) -> list[Verdict]:
        """One verdict per sample, in order."""

    def process(self, records: list[dict]) -> list[dict]:
        """This filter alone as a stage: :meth:`FilterChain.process` of a chain of one."""
        return FilterChain([self]).process(records)


class FilterChain(Stage):
    """Filters in order (cheap first) as one stage: each record gains the filters' score columns,
    ``accepted`` and ``reject_reason``. A record that arrives rejected (``accepted`` False, e.g.
    its payload could not be read) passes through unscored.

    Args:
        filters: the chain (:meth:`filters.config.FilterConfig.build_chain`).
        score_rejected: run every filter on every row (eval); verdicts are unchanged.
    """

    name = "filters"

    def __init__(self, filters: list[Filter], score_rejected: bool = False):
        self.filters, self.score_rejected = filters, score_rejected
        self.resources = combined_resources(filters)

    def setup(self) -> None:
        for f in self.filters:
            f.setup()

    def process(self, records: list[dict]) -> list[dict]:
        out = [dict(r) for r in records]
        live = [i for i, r in enumerate(records) if r.get("accepted") is not False]
        for i, v in zip(live, run_chain(self.filters, [records[i] for i in live], self.score_rejected)):
            out[i].update(v.scores, accepted=v.keep, reject_reason=v.reason)
        return out


class RowProblem(ValueError):
    """A row's payload cannot be used; the message is the reject reason, ``flag`` its short name
    (e.g. "zero_length_audio")."""

    def __init__(self, reason: str, flag: str = "bad_row"):
        super().__init__(reason)
        self.flag = flag


def get_audio(sample: dict, key: str = "audio") -> np.ndarray:
    """The sample's audio as float32 ``[samples]`` at 16 kHz.

    Accepts an array (taken as 16 kHz mono) or encoded bytes (flac/wav, resampled).
    Raises:
        RowProblem: "missing audio", "corrupt audio (...)", "zero-length audio".
    """
    what = key.replace("_", " ")
    value = sample.get(key)
    if value is None:
        raise RowProblem(f"missing {what}", f"missing_{key}")
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = _decode(bytes(value), key)
    try:
        wav = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise RowProblem(f"corrupt {what} (not a waveform: {type(value).__name__})", f"corrupt_{key}") from None
    if wav.ndim == 2:  # [samples, channels]
        wav = wav.mean(axis=1)
    if wav.ndim != 1:
        raise RowProblem(f"corrupt {what} (shape {wav.shape})", f"corrupt_{key}")
    if wav.size == 0:
        raise RowProblem(f"zero-length {what}", f"zero_length_{key}")
    if not np.isfinite(wav).all():
        raise RowProblem(f"corrupt {what} (NaN or inf samples)", f"corrupt_{key}")
    return wav


def _decode(data: bytes, key: str) -> np.ndarray:
    import soundfile as sf

    what = key.replace("_", " ")
    if not data:
        raise RowProblem(f"zero-length {what}", f"zero_length_{key}")
    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for bad data
        detail = str(exc).split(": ", 1)[-1]  # drop soundfile's "Error opening <BytesIO ...>"
        raise RowProblem(f"corrupt {what} ({detail})", f"corrupt_{key}") from None
    if len(wav) == 0:
        raise RowProblem(f"zero-length {what}", f"zero_length_{key}")
    return resample(wav.mean(axis=1), sr, SAMPLE_RATE)


def add_flags(scores: dict, *flags: str) -> dict:
    """Append flag names to ``scores["quality_flags"]`` (created when absent)."""
    scores.setdefault(FLAGS, [])
    scores[FLAGS] = list(scores[FLAGS]) + [f for f in flags if f not in scores[FLAGS]]
    return scores


def run_chain(filters: list[Filter], samples: list[dict], score_rejected: bool = False) -> list[Verdict]:
    """Run filters in order (cheap first) and merge their verdicts per row.

    A row rejected by one filter is not sent to the later ones unless ``score_rejected``; its
    reason is the first filter's. Later filters see earlier scores as sample keys. Encoded audio
    (flac/wav bytes) is decoded once here, not once per filter.
    """
    samples = [_predecode(s) for s in samples]
    merged = [Verdict(True, "", {}) for _ in samples]
    for f in filters:
        live = [i for i, v in enumerate(merged) if v.keep or score_rejected]
        if not live:
            break
        out = f([{**samples[i], **merged[i].scores} for i in live])
        for i, v in zip(live, out):
            _merge(merged[i], v)
    return merged


def _predecode(sample: dict) -> dict:
    """Decode encoded audio once for the whole chain; undecodable payloads stay as they are so
    each filter reports the problem itself."""
    out = dict(sample)
    for key in ("audio", "source_audio", "reference_audio"):
        if isinstance(out.get(key), (bytes, bytearray, memoryview)):
            try:
                out[key] = get_audio(out, key)
            except RowProblem:
                pass
    return out


def _merge(into: Verdict, v: Verdict) -> None:
    flags = v.scores.get(FLAGS) or []
    into.scores.update({k: val for k, val in v.scores.items() if k != FLAGS})
    add_flags(into.scores, *flags)
    if into.keep and not v.keep:
        into.keep, into.reason = False, v.reason
