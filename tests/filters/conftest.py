"""Shared fixtures for the filter tests: models loaded once per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def router():
    """The embedded English ASR (tiny.en, packing on), loaded once; no other language."""
    from filters.asr import DEFAULT_ASR, ASRRouter

    r = ASRRouter({"en": DEFAULT_ASR["en"]})
    r.load()
    return r


@pytest.fixture(scope="session")
def encoder():
    from engine.speaker_embed import load_encoder

    return load_encoder("cpu", threads=1)
