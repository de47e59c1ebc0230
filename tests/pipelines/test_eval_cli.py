"""End to end: `stepforge eval` on a tiny random Step1 student (torch engine) over three prompts
whose teacher scores come from a real tiny reference-teacher run (synthesize + filter)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipelines.eval_prompts import prompt_record, read_prompts
from manifests import RunDir
from tests.conftest import stepforge

pytestmark = pytest.mark.slow
MAX_SECONDS = 1.5  # a random student babbles until the cap


def _student(path, seed: int):
    from engine.models import build_student, export

    return export(build_student("step1", "tiny", seed=seed), path)


@pytest.fixture(scope="module")
def evaluated(filtered_run, tmp_path_factory):
    """(the first eval's process, EVAL dir, prompts path, student dir, teacher run dir)."""
    root = tmp_path_factory.mktemp("eval")
    teacher = filtered_run
    prompts = root / "prompts.jsonl"
    rows = sorted(RunDir(teacher).read_manifest().to_pylist(), key=lambda r: r["id"])[:3]
    prompts.write_text("".join(json.dumps(prompt_record(r, teacher), ensure_ascii=False) + "\n"
                               for r in rows), encoding="utf-8")
    student = _student(root / "student", seed=0)
    out = root / "eval"
    proc = stepforge("eval", student, "--prompts", prompts, "--out", out, "--max-seconds", MAX_SECONDS,
                     "--no-progress", check=True)
    return proc, out, prompts, student, teacher


def test_eval_json_matches_the_manifest_and_the_prompts(evaluated):
    proc, out, prompts, student, teacher = evaluated
    report = json.loads((out / "eval.json").read_text())
    manifest = {r["id"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    given = {p.task.id: p.teacher for p in read_prompts(prompts)[0]}
    assert report["n_prompts"] == len(report["rows"]) == len(manifest) == 3
    assert report["engine"] == "torch" and report["student_type"] == "step1"
    assert report["student"] == str(student.resolve()) and report["max_seconds"] == MAX_SECONDS
    assert report["sampling"] == {"temperature": 0.7, "top_k": 0, "top_p": 1.0}  # upstream's decoding
    assert report["filter"]["max_cer"] == 0.35 and report["filter"]["from"] == str(teacher.resolve())
    # every row read twice (packed and alone), the better read scoring it
    assert report["filter"]["asr"]["en"]["pack"] and report["filter"]["asr"]["en"]["recheck"] == "all"
    assert report["generation"]["tasks"] == 3 and report["generation"]["audio_s_per_wall_s"] > 0
    for row in report["rows"]:
        m, s = manifest[row["id"]], row["student"]
        assert m["status"] == "ok" and m["teacher_id"] == report["generator"]
        for key in ("cer", "wer", "ss", "duration_s"):
            assert s[key] == (None if m[key] is None else pytest.approx(m[key], abs=1e-4)), key
        assert (s["accepted"], s["reject_reason"], s["n_tokens"]) == (m["accepted"], m["reject_reason"], m["n_tokens"])
        assert 0 < s["duration_s"] <= MAX_SECONDS + 0.12
        # every row is scored against the teacher's rendering, also when the CER rejected it
        assert s["ss"] is not None and s["ss_ref"] == "source"
        for key, value in given[row["id"]].items():
            assert row["teacher"][key] == (value if not isinstance(value, float) else pytest.approx(value, abs=1e-4))
    agg = report["aggregate"]
    assert agg["all"]["n"] == 3 and sum(b["n"] for b in agg["lang"].values()) == 3
    accepted = [r["student"]["accepted"] for r in report["rows"]]
    assert agg["all"]["student"]["accept_rate"] == pytest.approx(sum(accepted) / 3, abs=1e-4)
    # The teacher run scores SS only on rows its CER filter kept (score_rejected is off there).
    teacher = [r["teacher"] for r in report["rows"]]
    assert all(t["ss"] is not None or not t["accepted"] for t in teacher)
    teacher_ss = [t["ss"] for t in teacher if t["ss"] is not None]
    assert teacher_ss and agg["all"]["teacher"]["mean_ss"] == pytest.approx(sum(teacher_ss) / len(teacher_ss), abs=1e-3)
    en = [r for r in report["rows"] if r["lang"] == "en"]
    assert agg["lang"]["en"]["student"]["mean_wer"] == pytest.approx(en[0]["student"]["wer"], abs=1e-4)
    info = json.loads((out / "run.json").read_text())
    assert info["kind"] == "eval" and info["student_fingerprint"] == report["student_fingerprint"]
    assert "student" in proc.stdout and "teacher" in proc.stdout and "eval.json" in proc.stdout


def test_rerun_generates_nothing(evaluated):
    _, out, prompts, student, _ = evaluated
    before = sorted(p.name for p in (out / "shards").iterdir())
    journal = sorted(p.name for p in (out / "manifest.d").iterdir())
    proc = stepforge("eval", student, "--prompts", prompts, "--out", out, "--max-seconds", MAX_SECONDS,
                     "--no-progress", check=True)
    assert "nothing to generate" in proc.stdout and "filter: scored" not in proc.stdout
    assert sorted(p.name for p in (out / "shards").iterdir()) == before
    assert sorted(p.name for p in (out / "manifest.d").iterdir()) == journal
    assert json.loads((out / "eval.json").read_text())["generated_now"] == 0


def _fails(*args) -> str:
    proc = stepforge("eval", *args, "--no-progress")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepforge eval: error: "), proc.stderr
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(evaluated, tmp_path):
    _, out, prompts, student, teacher = evaluated
    bad = tmp_path / "bad.jsonl"
    first = prompts.read_text().splitlines()[0]
    bad.write_text(first + "\n" + first.replace('"lang": "zh"', '"lang": 7') + "\n")
    assert f"{bad}:2: field 'lang'" in _fails(student, "--prompts", bad, "--out", tmp_path / "e")
    assert "not a student checkpoint" in _fails(teacher, "--prompts", prompts, "--out", tmp_path / "e")
    other = _student(tmp_path / "other", seed=1)
    assert "evaluates another student" in _fails(other, "--prompts", prompts, "--out", out)
    assert "sampling" in _fails(student, "--prompts", prompts, "--out", out, "--max-seconds", MAX_SECONDS,
                                "--temperature", "0.3")
    # A student distilled from another codec's tokens (distill records it in train.json).
    import shutil

    shutil.copytree(student, tmp_path / "old")
    (tmp_path / "old" / "train.json").write_text(json.dumps({"codec": "melvq-1+00000000"}))
    line = _fails(tmp_path / "old", "--prompts", prompts, "--out", tmp_path / "e")
    assert "melvq-1+00000000" in line and "--codec" in line
    # One trained before train.json named the codec: the corpus runs it lists say which it was.
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "run.json").write_text(json.dumps({"codec": "melvq-1+11111111"}))
    (tmp_path / "old" / "train.json").write_text(json.dumps({"runs": [str(tmp_path / "corpus")]}))
    assert "melvq-1+11111111" in _fails(tmp_path / "old", "--prompts", prompts, "--out", tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_read_prompts_checks_each_line(tmp_path):
    path = tmp_path / "p.jsonl"
    task = {"id": "a", "text": "Hello there.", "lang": "en", "dialect": "english"}
    path.write_text(json.dumps(task) + "\n\n" + json.dumps({**task, "seed": 5}) + "\n")
    prompts, skipped = read_prompts(path)
    assert [p.task.id for p in prompts] == ["a"] and skipped == 1 and prompts[0].teacher == {}
    path.write_text(json.dumps({**task, "teacher": {"cer": "low"}}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: teacher.cer"):
        read_prompts(path)
    path.write_text(json.dumps(task) + "\n" + json.dumps({**task, "text": "Other."}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: id 'a' was used at line 1"):
        read_prompts(path)
    path.write_text(json.dumps({**task, "lang": "zh"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: dialect english reads en text"):
        read_prompts(path)
