"""`stepforge eval --samples K --teacher reference` end to end: a tiny random Step1 student and
the reference teacher voice two prompts of a real tiny teacher run twice each (seeded), both are
filtered the same way, and eval.json gives means with 95% CIs and the student/teacher ratio."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from manifests import RunDir, read_sample
from pipelines.eval_prompts import prompt_record
from tests.conftest import stepforge

pytestmark = pytest.mark.slow
MAX_SECONDS = 1.5  # a random student babbles until the cap
SAMPLES = 2


def _tokens(run) -> dict[str, np.ndarray]:
    """id -> the int32 ids of each committed sample of ``run`` (latest attempt)."""
    out = {}
    for r in sorted(RunDir(run).read_manifest().to_pylist(), key=lambda r: r["attempt"]):
        if r["status"] == "ok":
            out[r["id"]] = np.load(io.BytesIO(read_sample(RunDir(run).path / r["shard"], r["offset"])["tokens.npy"]))
    return out


@pytest.fixture(scope="module")
def sampled(filtered_run, tmp_path_factory):
    """(EVAL dir, eval.json, prompts path, student dir, prompt ids, eval stdout)."""
    from engine.models import build_student, export

    root = tmp_path_factory.mktemp("eval-samples")
    rows = sorted((r for r in RunDir(filtered_run).read_manifest().to_pylist() if r["lang"] == "en"),
                  key=lambda r: r["id"])[:2]
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(prompt_record(r, filtered_run)) + "\n" for r in rows))
    student = export(build_student("step1", "tiny", seed=0), root / "student")
    out = root / "eval"
    proc = stepforge("eval", student, "--prompts", prompts, "--out", out, "--max-seconds", MAX_SECONDS,
                     "--samples", SAMPLES, "--teacher", "reference", "--no-progress", check=True)
    return out, json.loads((out / "eval.json").read_text()), prompts, student, [r["id"] for r in rows], proc.stdout


def test_k_samples_per_prompt_for_student_and_teacher(sampled, filtered_run):
    out, report, _, _, ids, stdout = sampled
    wanted = {i if k == 0 else f"{i}-{k}" for i in ids for k in range(SAMPLES)}
    assert set(_tokens(out)) == wanted and set(_tokens(out / "teacher")) == wanted
    assert report["samples"] == SAMPLES and report["n_prompts"] == 2 and report["n_rows"] == 2 * SAMPLES
    assert sorted((r["prompt_id"], r["sample"]) for r in report["rows"]) == sorted(
        (i, k) for i in ids for k in range(SAMPLES))
    teacher_info = json.loads((out / "teacher" / "run.json").read_text())
    assert teacher_info["teacher"].startswith("reference")
    assert report["teacher_eval"]["teacher"] == teacher_info["teacher"]
    # the teacher through the same codec: sample 0 has the prompt's own seed, so the reference
    # teacher repeats its corpus row exactly; its scores come from this eval's filter run
    corpus = _tokens(filtered_run)
    voiced = _tokens(out / "teacher")
    for i in ids:
        assert np.array_equal(voiced[i], corpus[i])
        assert not np.array_equal(voiced[f"{i}-1"], corpus[i])  # another seed, another rendering
    assert all(r["teacher_eval"] and r["teacher_eval"]["wer"] is not None for r in report["rows"])
    assert "teacher*" in stdout and "ratio" in stdout


def test_means_have_intervals_that_bracket_them(sampled):
    _, report, *_ = sampled
    stats = report["stats"]
    assert stats["teacher_side"] == "teacher_eval" and stats["samples"] == SAMPLES and stats["level"] == 0.95
    for metric in ("wer", "ss", "accepted"):
        block = stats[metric]
        assert block["n"] == 2
        for side in ("student", "teacher"):
            lo, hi = block[side]["ci"]
            assert lo <= block[side]["mean"] <= hi, (metric, side)
        per_prompt = {}
        for r in report["rows"]:
            value = r["student"][metric]
            per_prompt.setdefault(r["prompt_id"], []).append(float(value))
        assert block["student"]["mean"] == pytest.approx(np.mean([np.mean(v) for v in per_prompt.values()]), abs=1e-4)
        ratio = block["ratio"]
        if ratio["value"] is not None and ratio["ci"] is not None:
            assert ratio["ci"][0] <= ratio["value"] <= ratio["ci"][1]
    agg = report["aggregate"]["all"]
    assert agg["teacher_eval"]["n"] == 2 * SAMPLES
    assert agg["student"]["mean_wer"] == pytest.approx(stats["wer"]["student"]["mean"], abs=1e-3)


def test_samples_are_seeded(sampled, tmp_path):
    out, _, prompts, student, ids, _ = sampled
    again = tmp_path / "again"
    stepforge("eval", student, "--prompts", prompts, "--out", again, "--max-seconds", MAX_SECONDS,
              "--samples", SAMPLES, "--limit", 1, "--no-progress", check=True)
    first, second = _tokens(out), _tokens(again)
    assert set(second) == {ids[0], f"{ids[0]}-1"}
    for key in second:
        assert np.array_equal(first[key], second[key]), key  # the same seed repeats
    assert not np.array_equal(first[ids[0]], first[f"{ids[0]}-1"])  # another seed, another sample
    # the same out with another sample count is refused in one line, nothing generated
    proc = stepforge("eval", student, "--prompts", prompts, "--out", again, "--max-seconds", MAX_SECONDS,
                     "--samples", 3, "--no-progress")
    assert proc.returncode == 2 and "sample(s) per prompt" in proc.stderr
