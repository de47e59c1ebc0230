"""Kernel tests run the Triton kernels on CPU tensors through Triton's interpreter, in a child
pytest process.

Triton decides interpretation when ``triton`` is imported (its standard library, e.g. ``tl.zeros``
and ``tl.max``, is ``@triton.jit`` code) and when each kernel is decorated. Setting
``TRITON_INTERPRET=1`` inside this session would come too late once any test module (or
transformers, DeepSpeed, vLLM) has imported triton, and setting it early would hand vLLM and the
GPU tests interpreted kernels. So every CPU test that uses the ``triton_backend`` fixture (or the
``interpreted`` fixture, or the ``interpret`` mark) runs once in a child ``pytest`` with
``TRITON_INTERPRET=1``; here each such test reports the child's outcome for its own node id.
Run ``TRITON_INTERPRET=1 pytest tests/kernels`` to run them in-process instead (for debugging).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REPORT_ENV = "STEPFORGE_INTERPRET_REPORT"  # set in the child: where it writes outcomes
INTERPRETED_FIXTURES = {"triton_backend", "interpreted"}

_wanted: list[str] = []  # node ids the child runs
_results: dict | None = None


def in_child() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def needs_interpreter(item) -> bool:
    if item.get_closest_marker("gpu") is not None or HERE not in Path(str(item.fspath)).parents:
        return False
    uses = INTERPRETED_FIXTURES & set(getattr(item, "fixturenames", ()))
    return bool(uses) or item.get_closest_marker("interpret") is not None


def pytest_configure(config):
    config.addinivalue_line("markers", "interpret: runs Triton kernels under TRITON_INTERPRET=1 "
                                       "(in a child pytest)")


def pytest_collection_modifyitems(config, items):
    if not in_child():
        _wanted.extend(item.nodeid for item in items if needs_interpreter(item))


def run_child() -> dict:
    """Run every wanted test once in a child pytest; ``{nodeid: {"outcome", "text"}}``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "outcomes.jsonl"
        env = dict(os.environ, TRITON_INTERPRET="1", **{REPORT_ENV: str(report)})
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *_wanted], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900)
        results = {}
        if report.exists():
            for line in report.read_text().splitlines():
                row = json.loads(line)
                results[row.pop("nodeid")] = row
    results["_output"] = proc.stdout[-4000:] + proc.stderr[-2000:]
    return results


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    global _results
    if in_child() or not needs_interpreter(pyfuncitem):
        return None
    if _results is None:
        _results = run_child()
    result = _results.get(pyfuncitem.nodeid)
    if result is None:
        pytest.fail(f"no outcome from the interpreted child run:\n{_results['_output']}",
                    pytrace=False)
    if result["outcome"] == "skipped":
        pytest.skip(result["text"])
    if result["outcome"] == "failed":
        pytest.fail(f"(interpreted, in a child pytest)\n{result['text']}", pytrace=False)
    return True


def pytest_runtest_logreport(report):
    """In the child: record each test's outcome (a failed or skipped setup counts)."""
    path = os.environ.get(REPORT_ENV)
    if not path or not (report.when == "call" or report.outcome != "passed"):
        return
    text = report.longreprtext
    if report.skipped and isinstance(report.longrepr, tuple):
        text = report.longrepr[2].removeprefix("Skipped: ")
    with open(path, "a") as f:
        f.write(json.dumps({"nodeid": report.nodeid, "outcome": report.outcome,
                            "text": text}) + "\n")


@pytest.fixture
def triton_backend():
    """Force the Triton side of every kernel (interpreted on CPU) for the test."""
    pytest.importorskip("triton", reason="triton is not installed")
    from kernels import use_backend

    with use_backend("triton"):
        yield
