"""SpeakerSimilarityFilter with the real resemblyzer encoder."""
import numpy as np
import pytest
import soundfile as sf

from filter_speech import speak
from filters.speaker import SpeakerSimilarityFilter
from engine.speaker_embed import embed_batch

PROMPT = "This is my natural voice, listen closely to how I speak every word."
TARGET = "The weather is lovely today, and the garden is full of flowers."


@pytest.fixture(scope="module")
def prompt_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "us.wav"
    sf.write(path, speak(PROMPT, "en-us"), 16000)
    return str(path)


@pytest.fixture(scope="module")
def ssf(encoder):
    f = SpeakerSimilarityFilter(min_ss=0.0)
    f.encoder, f.model = encoder, "resemblyzer-0.1.4"
    return f


def test_same_voice_scores_higher_than_another_voice(ssf, prompt_path):
    same, other = ssf([{"audio": speak(TARGET, "en-us"), "speaker_wav": prompt_path},
                       {"audio": speak(TARGET, "en-us+f3"), "speaker_wav": prompt_path}])
    assert same.scores["ss"] > other.scores["ss"] + 0.1
    assert same.scores["ss_model"].startswith("resemblyzer-") and same.scores["ss_ref"] == "prompt"


def test_threshold_rejects_with_reason(encoder, prompt_path):
    f = SpeakerSimilarityFilter(min_ss=0.99)
    f.encoder, f.model = encoder, "resemblyzer-0.1.4"
    (v,) = f([{"audio": speak(TARGET, "en-us+f3"), "speaker_wav": prompt_path}])
    assert not v.keep and v.reason == f"ss {v.scores['ss']:.2f} < 0.99"


def test_batched_embeddings_match_resemblyzer(encoder):
    from resemblyzer import preprocess_wav

    wavs = [preprocess_wav(speak(t)) for t in (PROMPT, TARGET, "Short one.")]
    ours = embed_batch(encoder, wavs, max_partials=4)  # forces several encoder passes
    theirs = np.stack([encoder.embed_utterance(w) for w in wavs])
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    import torch

    threads = torch.get_num_threads()
    capped = embed_batch(encoder, wavs, threads=1)  # the clone search's setting
    np.testing.assert_allclose(capped, theirs, atol=1e-5)
    assert torch.get_num_threads() == threads


def test_reference_fallbacks_and_unscored(ssf):
    rows = [{"audio": speak(TARGET), "source_audio": speak(PROMPT)},
            {"audio": speak(TARGET), "reference_audio": speak(PROMPT, "en-us+f3")},
            {"audio": speak(TARGET)}]
    source, reference, none = ssf(rows)
    assert source.scores["ss_ref"] == "source" and reference.scores["ss_ref"] == "reference"
    assert source.scores["ss"] > reference.scores["ss"]
    assert none.keep and none.scores == {"ss": None, "quality_flags": ["unscored_ss"]}


def test_prompt_embedding_is_cached(ssf, prompt_path):
    ssf([{"audio": speak(TARGET), "speaker_wav": prompt_path}])
    cached = ssf._cache[prompt_path]
    ssf([{"audio": speak(TARGET), "speaker_wav": prompt_path}])
    assert ssf._cache[prompt_path] is cached


@pytest.mark.parametrize("row, reason", [
    ({"audio": None}, "missing audio"),
    ({"audio": np.zeros(0, np.float32)}, "zero-length audio"),
    ({"audio": np.zeros(32000, np.float32)}, "no voiced audio"),
    ({"audio": b"junk"}, "corrupt audio"),
    ({"speaker_wav": "/no/such/prompt.wav"}, "unreadable speaker prompt /no/such/prompt.wav"),
])
def test_bad_rows_rejected_alone(ssf, prompt_path, row, reason):
    bad, good = ssf([{"audio": speak(TARGET), **row}, {"audio": speak(TARGET), "speaker_wav": prompt_path}])
    assert not bad.keep and bad.reason.startswith(reason)
    assert good.keep and good.scores["ss"] is not None
