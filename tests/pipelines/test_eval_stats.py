"""eval.json's statistics (pipelines.eval_stats) and the seeded samples of a prompt
(pipelines.eval_prompts.with_samples): plain functions on small inputs, no models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from manifests.errors import UserError
from pipelines.eval_prompts import read_prompts, with_samples
from pipelines.eval_stats import bootstrap, format_stats, score_stats
from pipelines.pipeline_config import load_pipeline
from pipelines.synthesize import attempt_seed


def _rows(student: dict[str, list[float]], teacher: dict[str, list[float]], lang: str = "en") -> list[dict]:
    """Eval rows: per prompt id, the student's and the teacher's WER of each sample."""
    rows = []
    for pid, values in student.items():
        for k, (s, t) in enumerate(zip(values, teacher[pid])):
            rows.append({"id": pid if k == 0 else f"{pid}-{k}", "prompt_id": pid, "sample": k, "lang": lang,
                         "student": {"wer": s, "ss": 0.8, "accepted": s <= 0.35},
                         "teacher_eval": {"wer": t, "ss": 0.9, "accepted": t <= 0.35},
                         "teacher": {"wer": t}})
    return rows


def test_interval_brackets_the_mean_and_shrinks_with_more_prompts():
    rng = np.random.default_rng(1)
    small = rng.uniform(0, 1, 12)
    large = rng.uniform(0, 1, 400)
    a, b = bootstrap(small)["student"], bootstrap(large)["student"]
    for block, values in ((a, small), (b, large)):
        assert block["ci"][0] < block["mean"] < block["ci"][1]
        assert block["mean"] == pytest.approx(values.mean(), abs=1e-4)
    assert (b["ci"][1] - b["ci"][0]) < (a["ci"][1] - a["ci"][0])


def test_ratio_is_paired_over_prompts():
    # prompts differ a lot in difficulty, but the student is exactly twice the teacher on each:
    # a paired bootstrap sees no doubt about the ratio, while each mean alone is wide
    teacher = np.array([0.02, 0.5, 0.1, 0.9, 0.3, 0.05, 0.7, 0.2])
    block = bootstrap(2 * teacher, teacher)
    assert block["ratio"]["value"] == pytest.approx(2.0)
    assert block["ratio"]["ci"] == pytest.approx([2.0, 2.0])
    assert block["student"]["ci"][1] - block["student"]["ci"][0] > 0.3
    noisy = bootstrap(2 * teacher + np.array([0.1, -0.1] * 4), teacher)
    lo, hi = noisy["ratio"]["ci"]
    assert lo < noisy["ratio"]["value"] < hi
    assert bootstrap(teacher, np.zeros(8))["ratio"] == {"value": None, "ci": None}


def test_score_stats_averages_samples_per_prompt_first():
    # prompt a: 3 samples; prompt b: 1 sample with a WER but 2 without one (no ASR): each prompt
    # weighs the same in the mean, whatever its number of scored samples
    rows = _rows({"a": [0.0, 0.3, 0.6], "b": [1.0, 1.0, 1.0]}, {"a": [0.1, 0.1, 0.1], "b": [0.3, 0.3, 0.3]})
    for r in rows[4:]:
        r["student"]["wer"] = None
    stats = score_stats(rows, samples=3, teacher_side="teacher_eval")
    wer = stats["wer"]
    assert wer["n"] == 2 and wer["student"]["mean"] == pytest.approx((0.3 + 1.0) / 2)
    assert wer["teacher"]["mean"] == pytest.approx(0.2)
    assert wer["ratio"]["value"] == pytest.approx(0.65 / 0.2)
    assert stats["accepted"]["student"]["mean"] == pytest.approx((2 / 3 + 0) / 2, abs=1e-4)
    assert "cer" not in stats  # no character-language rows
    assert score_stats(rows, samples=3, teacher_side="teacher_eval") == stats  # a fixed seed: same figures
    text = format_stats(stats)
    assert "wer" in text and "3 sample(s) per prompt" in text and "this eval" in text


def test_samples_are_seeded_and_sample_zero_is_the_prompt(tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [{"id": "a1", "text": "It rained.", "lang": "en", "dialect": "english", "seed": 7},
             {"id": "b2", "text": "The dog ran.", "lang": "en", "dialect": "english", "seed": 9}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    prompts, _ = read_prompts(path)
    samples = with_samples(prompts, 3)
    assert [(p.prompt_id, p.sample, p.task.id) for p in samples] == [
        ("a1", 0, "a1"), ("a1", 1, "a1-1"), ("a1", 2, "a1-2"), ("b2", 0, "b2"), ("b2", 1, "b2-1"), ("b2", 2, "b2-2")]
    assert samples[0].task == prompts[0].task and samples[1].task.seed == attempt_seed(7, 1) != 7
    assert len({p.task.seed for p in samples}) == 6
    assert with_samples(prompts, 3) == samples  # the same prompts and count: the same seeds
    assert {p.task.text for p in samples[:3]} == {"It rained."}
    with pytest.raises(UserError, match="samples"):
        with_samples(prompts, 0)


def test_pipeline_eval_samples_and_teacher(tmp_path):
    base = "spec: {count: 4, texts: [{builtin: [en-basic]}]}\n"
    (tmp_path / "ok.yaml").write_text(base + "eval: {samples: 3, teacher: true}\n")
    assert load_pipeline(tmp_path / "ok.yaml").eval == {"samples": 3, "teacher": True}
    (tmp_path / "bad.yaml").write_text(base + "eval: {samples: 0, limit: true}\n")
    with pytest.raises(UserError) as err:
        load_pipeline(tmp_path / "bad.yaml")
    assert "eval.samples: must be at least 1" in str(err.value) and "eval.limit: expected int" in str(err.value)


def test_report_shows_each_mean_with_its_interval_and_the_ratio():
    from pipelines.report import stats_table

    rows = _rows({"a": [0.2, 0.4], "b": [0.6, 0.6], "c": [0.1, 0.3]}, {p: [0.1, 0.1] for p in "abc"})
    stats = score_stats(rows, samples=2, teacher_side="teacher_eval")
    html = stats_table(stats)
    lo, hi = stats["wer"]["ratio"]["ci"]
    assert f"{stats['wer']['ratio']['value']:.3f} [{lo:.3f}, {hi:.3f}]" in html
    assert "0.367 [" in html and "voiced in this eval" in html and "2 sample(s)" in html
    assert stats_table(None) == ""
