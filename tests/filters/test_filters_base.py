"""The filter interface: audio loading problems and merging a chain of verdicts."""
import numpy as np
import pytest

from engine.audio import to_flac
from filters.base import Filter, RowProblem, Verdict, get_audio, reject, run_chain


@pytest.mark.parametrize("audio, reason", [
    (None, "missing audio"),
    (np.zeros(0, np.float32), "zero-length audio"),
    (b"", "zero-length audio"),
    (b"this is not a flac file", "corrupt audio"),
    (np.array([0.1, np.nan], np.float32), "corrupt audio (NaN or inf samples)"),
    (np.zeros((2, 3, 4), np.float32), "corrupt audio (shape"),
])
def test_bad_audio_names_the_problem(audio, reason):
    with pytest.raises(RowProblem) as err:
        get_audio({"audio": audio})
    assert str(err.value).startswith(reason)


def test_flac_bytes_are_decoded_and_resampled():
    wav = np.sin(np.linspace(0, 2000, 22050)).astype(np.float32) * 0.5
    out = get_audio({"audio": to_flac(wav, 22050)})
    assert out.dtype == np.float32 and abs(len(out) - 16000) <= 1


class _Threshold(Filter):
    name = "threshold"

    def __init__(self, key, limit):
        self.key, self.limit, self.seen = key, limit, []

    def __call__(self, samples):
        self.seen += [s["id"] for s in samples]
        return [Verdict(True, "", {self.key: s["x"], "quality_flags": [self.key]}) if s["x"] <= self.limit
                else reject(f"{self.key} {s['x']} > {self.limit}", **{self.key: s["x"]}) for s in samples]


def test_chain_skips_rejected_rows_and_merges_scores():
    first, second = _Threshold("a", 5), _Threshold("b", 2)
    rows = [{"id": "low", "x": 1}, {"id": "mid", "x": 3}, {"id": "high", "x": 9}]
    verdicts = run_chain([first, second], rows)
    assert [v.keep for v in verdicts] == [True, False, False]
    assert verdicts[1].reason == "b 3 > 2" and verdicts[2].reason == "a 9 > 5"
    assert second.seen == ["low", "mid"]  # "high" was already rejected
    assert verdicts[0].scores == {"a": 1, "b": 1, "quality_flags": ["a", "b"]}


def test_chain_can_score_rejected_rows():
    second = _Threshold("b", 2)
    verdicts = run_chain([_Threshold("a", 5), second], [{"id": "high", "x": 9}], score_rejected=True)
    assert second.seen == ["high"] and verdicts[0].reason == "a 9 > 5" and verdicts[0].scores["b"] == 9


def test_chain_decodes_audio_once_and_keeps_bad_bytes_for_the_filters():
    class _Seen(Filter):
        def __call__(self, samples):
            self.types = [type(s["audio"]).__name__ for s in samples]
            return [Verdict(True) for _ in samples]

    seen = _Seen()
    wav = np.zeros(1600, np.float32) + 0.1
    run_chain([seen], [{"audio": to_flac(wav)}, {"audio": b"junk"}])
    assert seen.types == ["ndarray", "bytes"]
