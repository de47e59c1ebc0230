"""stepforge filters: cheap quality checks, ASR-based CER/WER, speaker similarity, instruction
adherence, DNSMOS.

    from filters import QualityFilter, CERFilter, SpeakerSimilarityFilter, FilterChain
    chain = FilterChain([QualityFilter(), CERFilter(), SpeakerSimilarityFilter(min_ss=0.75)])
    chain.setup()
    records = chain.process(records)   # + scores, accepted, reject_reason (a Stage)

Heavy packages (faster-whisper, resemblyzer, funasr, onnxruntime) load in ``setup``, not on import.
"""
from filters.adherence import AdherenceFilter, voice_baselines
from filters.asr import ASR, ASRRouter, DEFAULT_ASR, load_asr
from filters.base import FLAGS, Filter, FilterChain, RowProblem, Verdict, add_flags, get_audio, reject, run_chain
from filters.cer import CERFilter, error_rate, text_scores
from filters.dnsmos import DNSMOSFilter
from filters.normalize import normalize, to_simplified
from filters.quality import QualityFilter
from filters.seedtts import seed_tts_error_rate, seed_tts_units
from filters.speaker import SpeakerSimilarityFilter

__all__ = [
    "ASR", "ASRRouter", "AdherenceFilter", "CERFilter", "DEFAULT_ASR", "DNSMOSFilter", "FLAGS", "Filter", "FilterChain", "QualityFilter", "RowProblem",
    "SpeakerSimilarityFilter", "Verdict", "add_flags", "error_rate", "get_audio", "load_asr",
    "normalize", "reject", "run_chain", "seed_tts_error_rate", "seed_tts_units", "text_scores", "to_simplified",
    "voice_baselines",
]
