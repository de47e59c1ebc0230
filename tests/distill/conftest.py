"""A tiny synthesized and filtered run shared by the distillation tests (about 30 s, once)."""
from __future__ import annotations

import pytest

from tests.conftest import CONFIGS, stepforge


@pytest.fixture(scope="session")
def filtered_run(tmp_path_factory):
    """``pipelines/configs/tiny.yaml`` (12 tasks, en + zh) synthesized by the reference teacher
    and filtered with the spec's thresholds."""
    out = tmp_path_factory.mktemp("distill") / "run"
    stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--no-progress", check=True)
    stepforge("filter", out, "--no-progress", check=True)
    return out
