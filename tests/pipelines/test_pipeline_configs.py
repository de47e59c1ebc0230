"""The shipped pipeline YAMLs (make quickstart's, the tests' tiny one) parse and point at the
shipped spec and distill config."""
from __future__ import annotations

import pytest

from pipelines.pipeline_config import load_pipeline
from tests.conftest import CONFIGS


@pytest.mark.parametrize("name, tasks", [("quickstart.yaml", 200), ("pipeline_tiny.yaml", 12)])
def test_shipped_pipelines_parse(name, tasks):
    pipeline = load_pipeline(CONFIGS / name)
    assert pipeline.spec.count == tasks
    assert pipeline.distill["student"]["arch"] == "step1"
