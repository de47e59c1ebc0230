"""Shared test helpers: run the real CLI in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "pipelines" / "configs"


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
