"""`stepforge distill` end to end: DeepSpeed on CPU, checkpoints, kill -9 and resume, bad input."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, REPO, cli_env, stepforge

# A 2-layer tiny Step1 student; every step logged, a checkpoint every 4 steps.
TRAIN = ["--config", CONFIGS / "distill_tiny.yaml", "--set", "student.overrides={num_hidden_layers: 2}",
         "--set", "data.max_tokens=2048", "--set", "data.heldout=2", "--set", "train.log_every=1",
         "--set", "train.save_every=4", "--set", "train.eval_every=8", "--set", "train.warmup_steps=2"]
TINY = TRAIN + ["--no-eval"]


def metrics(student) -> list[dict]:
    lines = (student / "logs" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def train_curve(student) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(student) if "loss" in m}


@pytest.fixture(scope="module")
def trained(filtered_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("students") / "ref"
    proc = stepforge("distill", filtered_run, "--out", out, "--steps", 16, *TRAIN,
                     "--set", "eval.max_seconds=1.5", check=True)
    return out, proc


def test_distill_trains_exports_and_logs(trained, filtered_run):
    out, proc = trained
    from engine.models import load_student

    model = load_student(out)
    assert model.config.num_hidden_layers == 2 and model.config.model_type == "step1"
    curve = train_curve(out)
    assert sorted(curve) == list(range(1, 17))
    assert curve[16] < curve[1]  # it learns something in 16 steps
    evals = [m for m in metrics(out) if "eval_loss" in m]
    assert [m["step"] for m in evals] == [8, 16]
    info = json.loads((out / "train.json").read_text())
    assert info["status"] == "done" and info["step"] == 16
    # The codec that tokenized the corpus: eval refuses to decode with another one.
    from manifests import RunDir

    assert info["codec"] == RunDir(filtered_run).info()["codec"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-0000016"
    assert len(list((out / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints
    best = min(evals, key=lambda m: m["eval_loss"])  # train.export: best (the default)
    assert info["exported"] == {"step": best["step"], "eval_loss": pytest.approx(best["eval_loss"]),
                                "rule": "lowest held-out loss"}
    kept = [p.name for p in (out / "checkpoints").glob("best-*")]
    assert kept == [f"best-{best['step']:07d}"]
    assert (out / "model.safetensors").read_bytes() == \
        (out / "checkpoints" / kept[0] / "model.safetensors").read_bytes()
    assert list((out / "logs" / "tb").glob("events.*"))
    assert len((out / "heldout.jsonl").read_text().splitlines()) >= 2
    assert f"student: {out}" in proc.stdout


def test_the_student_is_scored_on_the_heldout_prompts(trained):
    out, proc = trained
    report = json.loads((out / "eval.json").read_text())
    held = [json.loads(x)["id"] for x in (out / "heldout.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in report["rows"]) == sorted(held)
    assert report["aggregate"]["all"]["n"] == len(held)
    assert all(r["teacher"] is not None and r["student"]["status"] for r in report["rows"])
    assert f"eval: {out / 'eval.json'}" in proc.stdout


def test_a_finished_student_is_not_retrained(trained, filtered_run):
    out, _ = trained
    before = (out / "model.safetensors").stat().st_mtime_ns
    proc = stepforge("distill", filtered_run, "--out", out, "--steps", 16, *TINY, check=True)
    assert "nothing to train" in proc.stdout
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def wait_for_commit(proc: subprocess.Popen, latest, deadline_s: float = 1800) -> None:
    """Return once ``latest`` names a committed checkpoint: the kill lands on a step that is on
    disk whatever the machine's speed. Fails when the process ends first or the (generous)
    deadline passes."""
    deadline = time.monotonic() + deadline_s
    while not latest.is_file():
        if proc.poll() is not None:
            pytest.fail(f"distill exited ({proc.returncode}) before committing a checkpoint")
        if time.monotonic() > deadline:
            pytest.fail(f"no checkpoint committed within {deadline_s:.0f} s")
        time.sleep(0.02)


def shm_buffers() -> set[str]:
    """DeepSpeed's CPU all-reduce buffers in /dev/shm (one per rank; the recipe removes its name)."""
    return {p.name for p in Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")}


def test_kill_9_mid_training_resumes_the_same_curve(trained, filtered_run, tmp_path):
    ref, _ = trained
    buffers = shm_buffers()
    out = tmp_path / "cut"
    cmd = [sys.executable, "-m", "pipelines.cli", "distill", str(filtered_run), "--out", str(out),
           "--steps", "16", *map(str, TINY)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = out / "checkpoints" / "latest"
    try:
        wait_for_commit(proc, latest)  # the first is step 4 of 16 (train.save_every=4)
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already when it ended first
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "train.json").exists(), "training finished before the kill"
    cut_at = int(latest.read_text().strip().split("-")[1])
    assert cut_at < 16
    again = stepforge("distill", filtered_run, "--out", out, "--steps", 16, *TINY, check=True)
    assert f"resumed from step-{cut_at:07d}" in again.stdout
    steps = [m["step"] for m in metrics(out) if "loss" in m]
    assert steps == list(range(1, 17))  # no step twice, none missing
    resumed, reference = train_curve(out), train_curve(ref)
    for step in range(1, 17):  # same data order, same optimizer state: the same curve
        assert resumed[step] == pytest.approx(reference[step], rel=1e-4, abs=1e-5), step
    exported = [json.loads((d / "train.json").read_text())["exported"]["step"] for d in (out, ref)]
    assert exported[0] == exported[1]
    assert shm_buffers() <= buffers  # neither the killed run nor the rerun left its 69 MB behind


def test_init_starts_from_a_trained_student(trained, filtered_run, tmp_path, capsys):
    ref, _ = trained
    code, err = in_process(capsys, "distill", filtered_run, "--out", tmp_path / "llama", *TINY,
                           "--set", f"student.init={ref}", "--set", "student.arch=llama")
    assert code == 2 and "is a step1 checkpoint but student.arch is llama" in err
    out = tmp_path / "more"
    stepforge("distill", filtered_run, "--out", out, "--steps", 2, *TINY, "--set", f"student.init={ref}",
              "--set", "train.warmup_steps=1", check=True)
    fresh = train_curve(ref)
    assert train_curve(out)[1] < (fresh[1] + fresh[16]) / 2  # it starts where the reference ended
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2


def in_process(capsys, *args) -> tuple[int, str]:
    """``stepforge ARGS`` through the CLI entry in this process (checks that fail before any
    training process starts need no fresh interpreter)."""
    from pipelines.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_a_checkpoint_of_another_architecture_is_refused(trained, filtered_run, capsys):
    out, _ = trained
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    code, err = in_process(capsys, "distill", filtered_run, "--out", out, *TINY,
                           "--set", "student.overrides={num_hidden_layers: 3}")
    assert code == 2
    assert "was trained as student" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("extra, message", [
    (["--set", "train.grad_accum=500"], "fewer than train.grad_accum=500"),
    (["--set", "data.max_tokens=100"], "raise data.max_tokens"),
    (["--set", "train.lrr=1"], "unknown key train.lrr"),
    (["--set", "train.zero_stage=4"], "train.zero_stage must be 0, 1, 2 or 3"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_bad_config_fails_before_training(filtered_run, tmp_path, extra, message, capsys):
    code, err = in_process(capsys, "distill", filtered_run, "--out", tmp_path / "s", *TINY, *extra)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "checkpoints").exists()


def test_the_default_warmup_follows_the_step_count(filtered_run, tmp_path, capsys):
    # No warmup set anywhere: --steps 10 passes the config check (a run this short used to be
    # refused for the default 20 warmup steps) and stops at the data check behind it.
    base = ["distill", filtered_run, "--out", tmp_path / "s", "--steps", 10, "--no-eval",
            "--set", "data.heldout=2", "--set", "train.grad_accum=500"]
    code, err = in_process(capsys, *base)
    assert code == 2 and "fewer than train.grad_accum=500" in err, err
    # A warmup the user sets is taken as set, and refused when the steps cannot hold it.
    code, err = in_process(capsys, *base, "--set", "train.warmup_steps=20")
    assert code == 2 and "train.warmup_steps must be within 0..train.steps-1, got 20" in err, err
    code, err = in_process(capsys, *base, "--config", CONFIGS / "distill_tiny.yaml")
    assert code == 2 and "train.warmup_steps must be within 0..train.steps-1, got 30" in err, err
    assert not (tmp_path / "s" / "checkpoints").exists()


def test_unfiltered_and_missing_runs_fail_in_one_line(tmp_path, capsys):
    raw = tmp_path / "raw"
    stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", raw, "--limit", 2, "--no-progress", check=True)
    proc = stepforge("distill", raw, "--out", tmp_path / "s", *TINY)  # the real exit status, once
    assert proc.returncode == 2 and "has not been filtered yet" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    code, err = in_process(capsys, "distill", tmp_path / "nope", "--out", tmp_path / "s", *TINY)
    assert code == 2 and "not a stepforge run" in err


def test_the_same_recipe_runs_under_ray_train(filtered_run, tmp_path):
    out = tmp_path / "ray"
    proc = stepforge("distill", filtered_run, "--out", out, "--steps", 2, *TINY, "--set", "train.warmup_steps=1",
                     "--set", "train.export=last", "--ray-address", "local",
                     check=True)
    assert [m["step"] for m in metrics(out) if "loss" in m] == [1, 2]
    info = json.loads((out / "train.json").read_text())
    assert info["world"] == 1
    assert info["exported"] == {"step": 2, "eval_loss": None, "rule": "last step"}
    assert not list((out / "checkpoints").glob("best-*"))
    assert f"student: {out}" in proc.stdout


def test_verify_checks_a_student_against_its_corpus(trained, filtered_run, tmp_path, capsys):
    from pipelines.cli import main

    out, _ = trained
    assert main(["verify", str(filtered_run), "--student", str(out), "--no-decode"]) == 0
    assert "1 students" in capsys.readouterr().out
    other = tmp_path / "student"
    shutil.copytree(out, other, ignore=shutil.ignore_patterns("checkpoints"))
    train = json.loads((other / "train.json").read_text())
    (other / "train.json").write_text(json.dumps({**train, "train_rows": train["train_rows"] + 1,
                                                  "codec": "melvq-0+other"}))
    (other / "model.safetensors").unlink()
    assert main(["verify", str(filtered_run), "--student", str(other), "--no-decode"]) == 1
    report = capsys.readouterr().out
    assert "exported weights are not" in report and "trained on codec 'melvq-0+other'" in report
    assert f"train.json counts {train['train_rows'] + train['heldout_rows'] + 1} rows" in report
