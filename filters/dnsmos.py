"""DNSMOS P.835 quality: predicted signal (SIG), background (BAK) and overall (OVRL) MOS, 1..5.

    f = DNSMOSFilter(min_ovrl=2.0)
    f.setup()                        # loads the ONNX model once per worker
    verdicts = f(samples)            # scores: dnsmos_sig, dnsmos_bak, dnsmos_ovrl

The model is Microsoft's non-personalised DNSMOS P.835 (``sig_bak_ovr.onnx``, shipped by the
``speechmos`` package), run with onnxruntime directly as the DNS Challenge scorer does: the clip is
repeated up to 9.01 s, scored in 9.01 s windows one second apart, the raw outputs mapped through the
challenge's polynomial and averaged. A window costs ~0.55 s on one idle core (its 3x3 convolutions
over the full 900 x 161 log-power spectrogram); a short clip is repeated past 9 s (3.3 s to 13.2 s:
4 windows, ~2.2 s), more than ASR: the chain runs it last.

Those windows of a repeated clip are shifted copies of the same few seconds, and the doubling makes
the count jump (a 2.2 s clip is repeated to 17.6 s: 8 windows; a 2.3 s one to 9.2 s: 1; at most 9).
``max_windows`` scores at most that many, evenly spaced from the first to the last, and breaks with
the scorer for the sake of time. On
en-basic rows (eSpeak through the codec, 2.1 s and 4.5 windows on average; bench/RESULTS.md) two
windows moved OVRL by 0.010 on average (0.076 at most) from the scorer's mean, changed no verdict
at 2.0, and made the chain of checks 2.4x faster.

The default threshold is not Emilia-Pipe's 3.0: eSpeak (the reference teacher) is a formant
synthesizer and scores OVRL 2.14 / 2.62 / 2.85 (5th / 50th / 95th percentile over the 200
built-in rows), so 3.0 rejects 199 of 200 rows. 2.0 rejects 7 of them (4%, mostly rap) and still
rejects white noise (1.1-1.3), a speaker prompt with white noise added (1.6), hum and tones
(1.2-1.3) and digital silence (1.8; faint hiss scores 2.2: silence is QualityFilter's check). Set ``min_dnsmos_ovrl: 3.0`` for a neural teacher, as Emilia-Pipe does for
recorded speech.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from engine.errors import MissingPackage
from filters.base import Filter, RowProblem, Verdict, get_audio, reject

SR = 16000
WINDOW = int(9.01 * SR)
HOP = SR
# the DNS Challenge's mapping of the raw outputs to P.835 MOS (non-personalised model)
POLY_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
POLY_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
POLY_OVRL = np.poly1d([-0.06766283, 1.11546468, 0.04602535])
DEFAULT_MIN_OVRL = 2.0  # see the module docstring
HINT = "DNSMOS needs `pip install speechmos onnxruntime` (speechmos ships the ONNX model)"


def model_path() -> Path:
    """The packaged ``sig_bak_ovr.onnx`` (found without importing speechmos, which needs librosa)."""
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(HINT)
    return Path(list(spec.submodule_search_locations)[0]) / "dnsmos_models" / "sig_bak_ovr.onnx"


def windows(wav: np.ndarray, max_windows: int | None = None) -> np.ndarray:
    """float32 ``[samples]`` at 16 kHz -> ``[n, 144160]`` scoring windows (short clips repeated);
    ``max_windows``: keep at most that many, evenly spaced, the first and the last among them."""
    wav = np.clip(np.asarray(wav, np.float32), -1.0, 1.0)
    while len(wav) < WINDOW:
        wav = np.concatenate([wav, wav])
    count = int(np.floor(len(wav) / SR) - WINDOW / SR) + 1  # the scorer's count: whole seconds only
    starts = [i * HOP for i in range(count) if i * HOP + WINDOW <= len(wav)]
    if max_windows is not None and len(starts) > max_windows:
        starts = [starts[i] for i in np.unique(np.linspace(0, len(starts) - 1, max_windows).round().astype(int))]
    return np.stack([wav[s:s + WINDOW] for s in starts])


class DNSMOSFilter(Filter):
    """Rejects rows whose DNSMOS OVRL is below ``min_ovrl`` (None: score only, never reject).

    Args:
        min_ovrl: the OVRL threshold (1..5). threads: onnxruntime intra-op threads per worker.
        max_windows: score at most this many windows of a clip (None: all, as the scorer does).
    """

    name = "dnsmos"
    columns = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")

    def __init__(self, min_ovrl: float | None = DEFAULT_MIN_OVRL, threads: int = 1, max_windows: int | None = None):
        self.min_ovrl, self.threads, self.max_windows = min_ovrl, threads, max_windows
        self.resources = {"num_cpus": threads, "num_gpus": 0}
        self._session = None

    def setup(self) -> None:
        if self._session is not None:
            return
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingPackage(HINT) from None
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        self._session = ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])

    def scores(self, wav: np.ndarray) -> dict:
        """{"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"} of one float32 ``[samples]`` 16 kHz clip."""
        self.setup()
        raw = self._session.run(None, {"input_1": windows(wav, self.max_windows)})[0]  # [n, 3]: sig, bak, ovrl
        sig, bak, ovrl = (float(np.mean(p(raw[:, k]))) for k, p in enumerate((POLY_SIG, POLY_BAK, POLY_OVRL)))
        return {"dnsmos_sig": sig, "dnsmos_bak": bak, "dnsmos_ovrl": ovrl}

    def __call__(self, samples: list[dict]) -> list[Verdict]:
        return [self._one(s) for s in samples]

    def _one(self, sample: dict) -> Verdict:
        try:
            scores = self.scores(get_audio(sample))
        except RowProblem as exc:
            return reject(str(exc), dnsmos_sig=None, dnsmos_bak=None, dnsmos_ovrl=None)
        if self.min_ovrl is not None and scores["dnsmos_ovrl"] < self.min_ovrl:
            return reject(f"dnsmos ovrl {scores['dnsmos_ovrl']:.2f} < {self.min_ovrl:.2f}", **scores)
        return Verdict(True, "", scores)
