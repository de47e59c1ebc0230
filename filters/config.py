"""Filter thresholds and models: one small config, from a spec's ``filter:`` section, a YAML file
or CLI flags (in that order of precedence, flags last).

    max_cer: 0.2                 # reject above this CER (zh) / WER (en)
    per_style: {rap: 0.5, humming: null}    # null: not transcribed, kept unscored
    per_dialect: {mandarin: 0.9}            # the same per dialect (the looser of the two applies;
                                            # default {cantonese: null}: Whisper base has no Cantonese)
    min_ss: 0.6                  # resemblyzer cosine; not comparable with WavLM SS figures
    min_dnsmos_ovrl: 2.0         # DNSMOS P.835 OVRL; null: score only (why not 3.0: filters.dnsmos)
    max_dnsmos_windows: 2        # score at most 2 of a clip's 9 s windows (default null: all, as the
                                 # DNS Challenge scorer; a short clip is repeated into up to 9)
    adherence: {emotion: {tolerance_st: 1.5}, rap: null}   # instruction checks (filters.adherence);
                                 # merged over its DEFAULT_ADHERENCE; null disables a check, or all
    asr: {en: {backend: faster-whisper, model: tiny.en}}   # default: filters.asr.DEFAULT_ASR
    no_asr: {fr: unscored}       # languages without an ASR: reject (default) or unscored
    quality: {max_silence: 0.6, max_clipping: 0.01}
    workers: null                # filter actors (default: fill the CPUs)
    score_rejected: false        # run every filter on every row (eval); verdicts are unchanged
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from filters.adherence import AdherenceFilter, adherence_settings
from filters.asr import DEFAULT_ASR
from filters.cer import DEFAULT_PER_DIALECT, CERFilter
from filters.config_checks import check_adherence, check_sections, count
from manifests.values import is_number
from filters.dnsmos import DEFAULT_MIN_OVRL, DNSMOSFilter
from filters.quality import QualityFilter
from filters.speaker import SpeakerSimilarityFilter
from manifests.errors import UserError


@dataclass
class FilterConfig:
    max_cer: float = 0.2
    per_style: dict = field(default_factory=lambda: {"rap": 0.5, "humming": None})
    per_dialect: dict = field(default_factory=lambda: dict(DEFAULT_PER_DIALECT))
    min_ss: float = 0.6
    min_dnsmos_ovrl: float | None = DEFAULT_MIN_OVRL
    max_dnsmos_windows: int | None = None
    adherence: dict | None = field(default_factory=dict)
    asr: dict | None = None
    no_asr: dict = field(default_factory=dict)
    default_no_asr: str = "reject"
    quality: dict = field(default_factory=dict)
    ss_threads: int = 1
    workers: int | None = None
    batch_size: int = 16  # rows per call: packed tiny.en fills a 30 s window with ~8
    score_rejected: bool = False

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "filter config") -> "FilterConfig":
        if data is not None and not isinstance(data, dict):
            raise UserError(f"{where}: expected a mapping of filter keys, got {data!r}")
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted((k for k in data if k not in known), key=str)  # YAML keys may be ints
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(known))})")
        config = cls(**data)
        config.check(where)
        return config

    def check(self, where: str) -> None:
        """Raises UserError naming ``where`` (the file or spec section) and the bad field."""
        for name in ("max_cer", "min_ss"):
            value = getattr(self, name)
            if not is_number(value):
                raise UserError(f"{where}: {name} must be a number, got {value!r}")
        count(self.batch_size, f"{where}: batch_size")
        if not 0 <= self.max_cer:
            raise UserError(f"{where}: max_cer must be >= 0, got {self.max_cer}")
        if not -1 <= self.min_ss <= 1:
            raise UserError(f"{where}: min_ss must be in -1..1 (a cosine), got {self.min_ss}")
        ovrl = self.min_dnsmos_ovrl
        if ovrl is not None and (not is_number(ovrl) or not 1 <= ovrl <= 5):
            raise UserError(f"{where}: min_dnsmos_ovrl must be a MOS in 1..5 or null, got {ovrl!r}")
        count(self.max_dnsmos_windows, f"{where}: max_dnsmos_windows", optional=True)
        if self.adherence is not None:
            if not isinstance(self.adherence, dict):
                raise UserError(f"{where}: adherence must be a mapping of checks or null, got {self.adherence!r}")
            check_adherence(self.adherence, f"{where}: adherence")
            adherence_settings(self.adherence, f"{where}: adherence")
        check_sections(self, where)

    def overridden(self, **values) -> "FilterConfig":
        """A copy with the non-None ``values`` set (CLI flags)."""
        data = {**asdict(self), **{k: v for k, v in values.items() if v is not None}}
        return FilterConfig.from_dict(data)

    @property
    def hash(self) -> str:
        """What the verdicts depend on (thresholds and models, not pool sizes)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("workers", "batch_size", "ss_threads")}
        # the models the default stands for: a new default rescores runs that relied on the old one
        data["asr"] = DEFAULT_ASR if self.asr is None else self.asr
        if not data["score_rejected"]:
            del data["score_rejected"]  # hashes from before the key existed stay valid
        if data["max_dnsmos_windows"] is None:
            del data["max_dnsmos_windows"]  # the same
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def build_chain(self, baselines: dict | None = None) -> list:
        """Cheap checks first, so the expensive models only see survivors (DNSMOS costs the most).
        ``baselines``: the run's voice baselines for the adherence checks
        (:func:`filters.adherence.voice_baselines`); the adherence filter reuses the CER filter's
        Whisper and only runs language id on rows the CER did not already vouch for."""
        cer = CERFilter(asr=self.asr, max_cer=self.max_cer, per_style=self.per_style,
                        no_asr=self.no_asr, default_no_asr=self.default_no_asr, per_dialect=self.per_dialect)
        chain = [QualityFilter(**self.quality), cer, SpeakerSimilarityFilter(min_ss=self.min_ss, threads=self.ss_threads)]
        if self.adherence is not None:
            chain.append(AdherenceFilter(self.adherence, router=cer.router, baselines=baselines))
        return chain + [DNSMOSFilter(min_ovrl=self.min_dnsmos_ovrl, max_windows=self.max_dnsmos_windows)]
