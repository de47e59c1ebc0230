"""The http teacher against a server that fails on purpose (tests/engine/openai_server.py):
500s, requests never answered, bodies that are not JSON, bodies cut halfway, answers without
choices, slow answers. Each failing request is tried ``retries + 1`` times with backoff, then its
row (only its row) comes back with an error whose kind can be counted; transient faults heal."""
from collections import Counter

import pytest

from engine.lm import HTTPEngine, TorchEngine, make_engine
from engine.task import Task
from engine.teachers import error_kind, make_teacher
from tests.engine.openai_server import CompletionServer

FAST = "retries=2&backoff=0.001&backoff_max=0.002&jitter=0.5&max_seconds=1"


@pytest.fixture(scope="module")
def server(tiny_rope_dir):
    with CompletionServer(TorchEngine(tiny_rope_dir, num_threads=1), max_model_len=4096) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_faults(server):
    yield
    server.faults.clear()
    server.sticky.clear()


def tasks(n):
    return [Task(id=f"t{i}", text=f"Sentence number {i}.", lang="en", dialect="english", seed=i)
            for i in range(n)]


def by_seed(server, since: int) -> Counter:
    return Counter(body["seed"] for body in server.requests[since:] if "seed" in body)


def test_each_fault_costs_its_row_only_after_all_tries(server):
    server.sticky.update({1: "500", 2: "hang", 3: "malformed", 4: "truncate", 5: "nochoices",
                          6: "sleep:0.2"})
    teacher = make_teacher(f"http:{server.url}?{FAST}&timeout=1.5&concurrency=8")
    before = len(server.requests)
    outs = teacher.synthesize(tasks(7))
    kinds = [error_kind(o.error) for o in outs]
    assert kinds == ["", "http 500", "timeout", "malformed response", "truncated stream",
                     "malformed response", ""], [o.error for o in outs]
    assert all(o.tokens is None for o in outs[1:6]) and outs[0].tokens.size and outs[6].tokens.size
    assert "failed after 3 attempts" in outs[1].error and "injected server error" in outs[1].error
    assert "no response within 1.5 s" in outs[2].error and "non-JSON" in outs[3].error
    assert "the response ended after" in outs[4].error
    tries = by_seed(server, before)
    # retryable faults: 1 + retries attempts; an answer without choices is not retried
    assert [tries[s] for s in range(7)] == [1, 3, 3, 3, 3, 1, 1]


def test_transient_faults_heal_on_retry(server):
    server.faults.extend(["malformed", "truncate", "500"])
    teacher = make_teacher(f"http:{server.url}?retries=3&backoff=0.001&jitter=0&max_seconds=1")
    before = len(server.requests)
    [out] = teacher.synthesize(tasks(1))
    assert not out.error and out.tokens.size and not server.faults
    assert by_seed(server, before)[0] == 4


def test_retries_zero_fails_at_the_first_fault(server):
    server.sticky[0] = "500"
    teacher = make_teacher(f"http:{server.url}?retries=0&max_seconds=1")
    before = len(server.requests)
    [out] = teacher.synthesize(tasks(1))
    assert error_kind(out.error) == "http 500" and by_seed(server, before)[0] == 1


def test_backoff_doubles_up_to_its_cap_with_jitter_below_it():
    engine = HTTPEngine("http://127.0.0.1:1", backoff_s=0.1, backoff_max_s=0.35, jitter=0.5)
    for attempt, full in enumerate([0.1, 0.2, 0.35, 0.35]):
        sleeps = [engine.backoff(attempt) for _ in range(50)]
        assert all(full * 0.5 <= s <= full for s in sleeps)
        assert len(set(sleeps)) > 1  # jittered
    plain = HTTPEngine("http://127.0.0.1:1", backoff_s=0.1, jitter=0)
    assert [plain.backoff(a) for a in range(3)] == [0.1, 0.2, 0.4]


def test_backoff_options_are_checked():
    e = make_engine("http://127.0.0.1:1?backoff=0.01&backoff_max=0.1&jitter=0.25")
    assert (e.backoff_s, e.backoff_max_s, e.jitter) == (0.01, 0.1, 0.25)
    with pytest.raises(ValueError, match="jitter in"):
        make_engine("http://127.0.0.1:1?jitter=2")
    with pytest.raises(ValueError, match="not a valid float"):
        make_engine("http://127.0.0.1:1?backoff=soon")


def test_error_kind():
    assert error_kind("http 503: POST x failed after 3 attempts: HTTP 503: busy") == "http 503"
    assert error_kind("the model ended its turn without audio") == "the model ended its turn without audio"
    assert error_kind("") == ""
