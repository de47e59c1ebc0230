"""Shared fixtures for the filter tests: models loaded once per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def router():
    """The embedded default ASR (tiny.en, packing on), loaded once."""
    from filters.asr import ASRRouter

    r = ASRRouter()
    r.load()
    return r


@pytest.fixture(scope="session")
def encoder():
    from engine.speaker_embed import load_encoder

    return load_encoder("cpu", threads=1)
