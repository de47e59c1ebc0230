"""bench/faults.py in small: one kill -9 at a seeded random moment of synthesize and of filter, the
same command rerun, then ``stepforge verify`` and every task once in the journal, the manifest and
the verdicts (the full matrix: ``python -m bench.faults``)."""
from __future__ import annotations

import random

import pytest

from bench.faults import Filter, Synthesize, run_trials
from tests.conftest import CONFIGS

pytestmark = pytest.mark.slow


def _one_trial(case, window_s: float, seed: int, work):
    case.window_s = window_s  # no uncut baseline here: a window shorter than the command's time
    [trial] = run_trials(case, 1, random.Random(seed), work)
    assert trial.outcome == "ok", trial.reasons
    assert trial.killed, f"{case.name} ended within {trial.delay_s} s, before the kill"
    return trial


def test_synthesize_killed_at_a_random_moment_reruns_to_each_task_once(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text((CONFIGS / "tiny.yaml").read_text().replace("count: 12", "count: 6"))
    _one_trial(Synthesize(spec, shard_size=2), window_s=8.0, seed=19, work=tmp_path)


def test_filter_killed_at_a_random_moment_reruns_to_each_verdict_once(synthesized_run, tmp_path):
    _one_trial(Filter(synthesized_run[0]), window_s=12.0, seed=19, work=tmp_path)
