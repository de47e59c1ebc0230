"""`stepforge serve` fuzzed from its own OpenAPI schema with schemathesis: whatever a client sends
(valid or not, per the schema), the server answers below 500 and keeps serving, and once every
request has ended no slot is held (the running and queued gauges are back at 0). The student is
a tiny random Step1 capped at 0.48 s, as in test_serve.py.

More examples than ``make test`` runs (the bound keeps it to seconds):

    STEPFORGE_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest -q tests/pipelines/test_serve_fuzz.py
"""
from __future__ import annotations

import os
import time

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.pipelines.uvicorn_thread import ServerThread  # noqa: E402

MAX_SECONDS = 0.48
EXAMPLES = int(os.environ.get("STEPFORGE_FUZZ_EXAMPLES", "10"))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from engine.models import build_student, export
    from pipelines.serve.app import create_app
    from pipelines.serve.service import SpeechService

    student = export(build_student("step1", "tiny", seed=0, num_hidden_layers=2),
                     tmp_path_factory.mktemp("serve-fuzz") / "student")
    service = SpeechService(student, engine="torch", max_seconds=MAX_SECONDS, max_batch=8)
    server = ServerThread(create_app(service))
    yield server.url
    server.stop()
    service.close()


@pytest.fixture(scope="module")
def operations(served):
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def gauge(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in "{ ")


def describe(case) -> str:
    return (f"{case.method} {case.formatted_path} query={case.query!r} headers={case.headers!r} "
            f"body={case.body!r}"[:600])


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_request_gets_a_5xx(operations, served, mode):
    """Every operation of the schema, with data that fits it (positive) and data that does not
    (negative); each failing request is listed, not just the first."""
    failures = []
    for op in operations:
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  derandomize="STEPFORGE_FUZZ_SEED" not in os.environ)
        @given(case=op.as_strategy(generation_mode=GenerationMode(mode)))
        def call(case):
            response = case.call(base_url=served, timeout=120)
            assert response.status_code < 500, f"{response.status_code} for {describe(case)}: {response.text[:300]}"

        try:
            call()
        except AssertionError as exc:
            failures.append(f"{op.label}: {str(exc).splitlines()[0]}")
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
            assert mode == "negative", op.label
    assert not failures, "\n".join(failures)


def test_no_slot_is_held_after_the_fuzzing(served):
    deadline = time.monotonic() + 30
    while (gauge(served, "stepforge_requests_running") or gauge(served, "stepforge_requests_queued")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gauge(served, "stepforge_requests_running") == 0 and gauge(served, "stepforge_requests_queued") == 0
    assert httpx.get(f"{served}/health").status_code == 200
