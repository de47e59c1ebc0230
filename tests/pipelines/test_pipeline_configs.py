"""The shipped pipeline YAMLs (make quickstart's, the tests' tiny one) parse and point at the
shipped spec and distill config."""
from __future__ import annotations

import pytest

from pipelines.pipeline_config import load_pipeline
from tests.conftest import CONFIGS


@pytest.mark.parametrize("name, tasks", [("quickstart.yaml", 200), ("pipeline_tiny.yaml", 12), ("en_basic.yaml", 4000)])
def test_shipped_pipelines_parse(name, tasks):
    pipeline = load_pipeline(CONFIGS / name)
    assert pipeline.spec.count == tasks
    assert pipeline.distill["student"]["arch"] == "step1"


def test_en_basic_pipeline_evaluates_with_samples_and_the_teacher():
    pipeline = load_pipeline(CONFIGS / "en_basic.yaml")
    assert pipeline.spec.texts.keys() == {"en"} and pipeline.filter_config().max_cer == 0.35
    assert pipeline.eval["samples"] > 1 and pipeline.eval["teacher"] is True
    assert pipeline.distill["data"]["heldout"] > 48 and pipeline.distill["student"]["overrides"]["hidden_size"] == 192
