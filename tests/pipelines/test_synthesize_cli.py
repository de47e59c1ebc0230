"""End to end: `stepforge synthesize` on tiny specs with the reference teacher."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from engine.audio import from_flac
from engine.tokens import deinterleave
from manifests import RunDir
from tests.conftest import CONFIGS, REPO, TINY_CODEC, cli_env, stepforge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(synthesized_run):
    return synthesized_run  # these tests only read it, or rerun what must change nothing


def test_outputs_load_with_webdataset_and_datasets(tiny_run):
    out, proc = tiny_run
    assert "tasks/s" in proc.stdout and "audio s per wall s" in proc.stdout
    manifest = datasets.load_dataset("parquet", data_files=str(out / "manifest.parquet"), split="train")
    tasks = pq.read_table(out / "tasks.parquet")
    assert sorted(manifest["id"]) == sorted(tasks.column("id").to_pylist())
    assert len(set(manifest["id"])) == tasks.num_rows == 12
    ok = [r for r in manifest if r["status"] == "ok"]
    assert len(ok) == 12, [r["error"] for r in manifest if r["status"] != "ok"]
    shards = sorted(str(p) for p in (out / "shards").glob("shard-*.tar"))
    assert len(shards) == 3  # 12 tasks, 5 per shard
    seen = {}
    for sample in wds.WebDataset(shards, shardshuffle=False):
        meta = json.loads(sample["json"])
        ids = np.load(__import__("io").BytesIO(sample["tokens.npy"]))
        vq02, vq06 = deinterleave(ids)
        assert len(vq06) * 2 == len(vq02) * 3 and len(vq02) > 0
        wav, sr = from_flac(sample["flac"])
        assert sr == 16000 and abs(len(wav) / sr - len(ids) / 5 * 0.12) < 0.25
        assert "src.flac" in sample
        seen[sample["__key__"]] = (meta, len(ids))
    for row in ok:
        meta, n = seen[row["id"]]
        assert meta["text"] == row["text"] and n == row["n_tokens"]
        assert row["teacher_id"].startswith("reference@") and row["codec_version"] and row["spec_hash"]


def test_rerun_after_completion_does_nothing(tiny_run):
    out, _ = tiny_run
    before = (out / "manifest.parquet").read_bytes()
    proc = stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--no-progress", check=True)
    assert "nothing to do" in proc.stdout
    assert pq.read_table(out / "manifest.parquet").equals(pq.read_table(__import__("io").BytesIO(before)))
    info = json.loads((out / "run.json").read_text())
    assert info["stages"]["synthesize"]["status"] == "done"


def test_other_spec_into_same_run_is_refused_untouched(tiny_run, tmp_path):
    out, _ = tiny_run
    other = tmp_path / "other.yaml"
    other.write_text((CONFIGS / "tiny.yaml").read_text().replace("seed: 1", "seed: 2"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    proc = stepforge("synthesize", other, "--out", out)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "different spec" in lines[0]
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_limit_then_resume_fills_the_rest(tmp_path):
    out = tmp_path / "run"
    stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--limit", "4", "--no-progress", check=True)
    assert RunDir(out).read_manifest().num_rows == 4
    stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--no-progress", check=True)
    ids = RunDir(out).read_manifest().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 12


def wait_for_commit(proc: subprocess.Popen, journal, deadline_s: float = 300) -> None:
    """Poll until ``journal`` (RUN/manifest.d) holds a committed shard's part while ``proc`` still
    runs: the kill then lands on a live run with work committed, however fast the machine."""
    deadline = time.monotonic() + deadline_s
    while not list(journal.glob("*.parquet")):
        if proc.poll() is not None:
            pytest.fail(f"synthesize exited ({proc.returncode}) before committing a shard")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no shard committed within {deadline_s} s")
        time.sleep(0.05)


def test_kill_9_midway_then_rerun_gives_each_task_once(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text((CONFIGS / "tiny.yaml").read_text().replace("count: 12", "count: 30"))
    out = tmp_path / "run"
    args = [sys.executable, "-m", "pipelines.cli", "synthesize", str(spec), "--out", str(out),
            "--no-progress", "--shard-size", "3", "--batch-size", "1"]
    proc = subprocess.Popen(args, cwd=REPO, env=cli_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_commit(proc, out / "manifest.d")
    assert proc.poll() is None, "synthesize finished before the kill"  # it had 9 shards to go
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list((out / "manifest.d").glob("*.parquet"))) >= 1
    rerun = stepforge("synthesize", spec, "--out", out, "--no-progress", "--shard-size", "3", check=True)
    ids = RunDir(out).read_manifest().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 30
    assert sorted(ids) == sorted(pq.read_table(out / "tasks.parquet").column("id").to_pylist())
    tars = {p.stem for p in (out / "shards").glob("*.tar")}
    assert tars == {p.stem for p in (out / "manifest.d").glob("*.parquet")}
    assert "30/30" in rerun.stdout


def test_a_codec_file_both_tokenises_and_decodes(tmp_path):
    """``--codec W.npz``: the teacher's tokens come from W's codebooks (here 8 / 16 codes, so any id
    from the shipped 1024 / 4096-code books would show), the audio is W's decoding of them, and a
    resume with another codec is refused."""
    from engine.codec import load_codec
    from engine.codec.train import TrainConfig, train

    weights = tmp_path / "tiny_codec.npz"
    train(TrainConfig(**TINY_CODEC), weights)
    codec = load_codec(str(weights))
    out = tmp_path / "run"
    stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--limit", "3", "--codec", weights,
              "--no-progress", check=True)
    rows = [r for r in RunDir(out).read_manifest().to_pylist() if r["status"] == "ok"]
    assert len(rows) == 3 and {r["codec_version"] for r in rows} == {codec.version}
    for sample in wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")), shardshuffle=False):
        ids = np.load(__import__("io").BytesIO(sample["tokens.npy"]))
        vq02, vq06 = deinterleave(ids)
        assert max(vq02) < 8 and max(vq06) < 16
        wav, _ = from_flac(sample["flac"])
        mine = codec.detokenize(ids)
        assert len(wav) == len(mine) and np.corrcoef(wav, mine)[0, 1] > 0.999
    proc = stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--no-progress")
    assert proc.returncode == 2 and "codec" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content,needle", [
    ("name: x\ncount: [1\n", "tiny_bad.yaml"),
    ("name: x\ncount: 3\ntexts:\n  - file: missing.txt\n", "missing.txt"),
    ("name: x\ncount: 3\ntexts:\n  - builtin: [en]\ncategories:\n  emotion: {joyful: 1}\n", "joyful"),
])
def test_bad_spec_gives_one_line_and_writes_nothing(tmp_path, content, needle):
    spec = tmp_path / "tiny_bad.yaml"
    spec.write_text(content)
    out = tmp_path / "run"
    proc = stepforge("synthesize", spec, "--out", out)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (out / "run.json").exists()
