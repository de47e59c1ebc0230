"""``stepforge run``: one tiny pipeline run shared by the module (a few minutes on 2 cores), then
reruns of it: everything skipped, a changed threshold, a grown text file, a concurrent run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from manifests import RunDir
from manifests.digest import model_dir_fingerprint
from pipelines.cli import main as cli_main
from tests.conftest import CONFIGS, REPO, cli_env, stepforge

LINES = [
    "The morning air felt cool and fresh after the long rain.",
    "Please remember to close the window before you leave the house.",
    "The train was late again, so I walked the rest of the way.",
    "Could you pass me the salt and the pepper, please?",
    "We planted tomatoes along the fence this spring.",
    "The library stays open until nine on weekdays.",
    "Our cat sleeps on the windowsill whenever the sun comes out.",
]
MORE = ["He fixed the broken chair with a little glue.", "The bus stops right in front of the school."]


def write_pipeline(folder: Path, name: str, count: int, max_cer: float) -> Path:
    path = folder / name
    path.write_text(f"""
spec:
  name: grow
  seed: 3
  count: {count}
  texts: [{{file: lines.txt, lang: en}}]
filter: {{max_cer: {max_cer}, min_ss: 0.5}}
distill:
  config: {CONFIGS / 'distill_tiny.yaml'}
  data: {{heldout: 1}}
  train: {{steps: 4, warmup_steps: 1, log_every: 2, eval_every: 2, save_every: 2}}
eval: {{limit: 1, max_seconds: 2}}
""")
    return path


def ledger(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["pipeline"]["stages"]


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    (folder / "lines.txt").write_text("\n".join(LINES) + "\n")
    pipeline = write_pipeline(folder, "pipeline.yaml", count=5, max_cer=0.8)
    run = folder / "run"
    proc = stepforge("run", pipeline, "--out", run, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, pipeline, run, proc


def test_full_run_records_every_stage(piped):
    _, _, run, proc = piped
    stages = ledger(run)
    assert list(stages) == ["synthesize", "filter", "distill", "eval", "report"]
    assert all(s["status"] == "done" and s["did"] == "first run of this stage" for s in stages.values())
    assert stages["synthesize"]["result"]["tasks_total"] == 5
    assert (run / "student" / "config.json").is_file() and (run / "eval" / "eval.json").is_file()
    assert (run / "report.html").stat().st_size > 0
    assert "run: report: done" in proc.stdout


def test_rerun_skips_every_stage(piped):
    _, pipeline, run, _ = piped
    before = ledger(run)
    assert cli_main(["run", str(pipeline), "--out", str(run), "--no-progress"]) == 0
    after = ledger(run)
    for name, entry in after.items():
        assert entry["did"] == "skipped: fingerprint holds", name
        assert entry["fingerprint"] == before[name]["fingerprint"]


def test_concurrent_run_is_refused_with_exit_3(piped):
    _, pipeline, run, _ = piped
    with RunDir(run).lock():
        proc = stepforge("run", pipeline, "--out", run, "--no-progress")
        waiting = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(pipeline), "--out", str(run),
                                    "--no-progress", "--wait"], cwd=REPO, env=cli_env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 3, proc.stderr
    assert "in use by another stepforge process" in proc.stderr and "--wait" in proc.stderr
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err[-2000:]
    assert "run: synthesize: skipped" in out


def test_threshold_change_reruns_filter_and_later_only(piped):
    folder, _, run, _ = piped
    accepted_before = ledger(run)["filter"]["result"]["accepted"]
    pipeline = write_pipeline(folder, "stricter.yaml", count=5, max_cer=0.3)
    proc = stepforge("run", pipeline, "--out", run, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = ledger(run)
    assert stages["synthesize"]["did"] == "skipped: fingerprint holds"
    assert stages["filter"]["did"] == "its config changed"
    assert stages["report"]["did"] == "its input changed"
    accepted = stages["filter"]["result"]["accepted"]
    # distill reruns exactly when the accepted rows changed
    assert (stages["distill"]["did"] == "its input changed") == (accepted != accepted_before)
    assert json.loads((run / "run.json").read_text())["spec"]["filter"]["max_cer"] == 0.3


def test_grown_text_file_adds_only_new_tasks_and_continues_the_student(piped):
    folder, _, run, _ = piped
    old_tasks = pq.read_table(run / "tasks.parquet").to_pylist()
    old_fragments = {p.name: p.read_bytes() for p in (run / "manifest.d").glob("*.parquet")}
    old_step_student = json.loads((run / "student" / "train.json").read_text())
    with open(folder / "lines.txt", "a") as f:
        f.write("\n".join(MORE) + "\n")
    pipeline = write_pipeline(folder, "grown.yaml", count=5 + len(MORE), max_cer=0.3)
    proc = stepforge("run", pipeline, "--out", run, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = ledger(run)
    assert stages["synthesize"]["result"]["new_tasks"] == len(MORE)
    assert stages["synthesize"]["result"]["tasks"] == len(MORE)  # attempts synthesized now
    tasks = pq.read_table(run / "tasks.parquet").to_pylist()
    assert len(tasks) == len(old_tasks) + len(MORE)
    assert all(t in tasks for t in old_tasks)  # old ids, seeds and texts unchanged
    for name, data in old_fragments.items():
        assert (run / "manifest.d" / name).read_bytes() == data
    assert stages["filter"]["result"]["scored"] == len(MORE)
    assert stages["distill"]["status"] == "done" and stages["distill"]["did"] == "its input changed"
    train = json.loads((run / "student" / "train.json").read_text())
    assert train["init"] == str((run / "students" / "000").resolve())
    assert json.loads((run / "students" / "000" / "train.json").read_text()) == old_step_student
    kept_eval = json.loads((run / "students" / "000" / "eval.json").read_text())  # the old student's eval went with it
    assert kept_eval["student_fingerprint"] == model_dir_fingerprint(run / "students" / "000")
    new_eval = json.loads((run / "student" / "eval.json").read_text())
    assert new_eval == json.loads((run / "eval" / "eval.json").read_text())
    assert new_eval["student_fingerprint"] == model_dir_fingerprint(run / "student")
    html = (run / "report.html").read_text()  # both students, each beside its eval, on one curve axis
    assert "Students compared" in html and (run / "report" / "students_heldout.png").is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["growth"][-1]["new_tasks"] == len(MORE) and info["spec_hash"].startswith("grown:")
    assert cli_main(["run", str(pipeline), "--out", str(run), "--no-progress"]) == 0
    assert all(e["did"] == "skipped: fingerprint holds" for e in ledger(run).values())


def test_bad_pipeline_lists_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: nowhere.yaml\nsynthesize: {attempts: 0}\nreport: yes\n")
    proc = stepforge("run", bad, "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert "unknown key 'report'" in proc.stderr and "attempts: must be at least 1" in proc.stderr
    assert "nowhere.yaml" in proc.stderr
    assert not (tmp_path / "run").exists()
