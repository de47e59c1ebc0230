"""Continuous batching (engine.lm.stream): requests that join and leave a running batch get the
ids TorchEngine.generate gives them alone, stream in order, share prefix KV, and can leave."""
import random
import threading

import pytest
import torch

from engine.lm import AudioConstraint, SamplingParams, TorchEngine
from engine.lm.stream import FINISH_CANCELLED, ContinuousBatcher
from engine.models import build_student
from engine.prompts import ByteTokenizer

LAYOUT = ByteTokenizer().layout()
pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


class Collector:
    """Gathers one request's streamed ids; ``after(n, fn)`` runs fn once n ids have arrived."""

    def __init__(self):
        self.ids, self.done, self.error = [], None, None
        self.finished = threading.Event()
        self.triggers = []

    def __call__(self, ids, done, error):
        self.ids += ids
        for n, fn in list(self.triggers):
            if len(self.ids) >= n:
                self.triggers.remove((n, fn))
                fn()
        if done is not None or error is not None:
            self.done, self.error = done, error
            self.finished.set()


def prompts_with_prefix(n, prefix_len=40, seed=0):
    rng = random.Random(seed)
    prefix = [1] + [rng.randrange(8, 264) for _ in range(prefix_len - 1)]
    return prefix, [prefix + [rng.randrange(8, 264) for _ in range(rng.randrange(3, 30))] for _ in range(n)]


@pytest.fixture(scope="module", params=["step1", "llama"])
def engine(request):
    return TorchEngine(build_student(request.param, "tiny", seed=0, num_hidden_layers=2))


def _params(i):
    if i % 3 == 0:  # plain sampling with stop ids that end rows at different steps
        return SamplingParams(seed=i, temperature=1.0, max_tokens=40, stop_token_ids=tuple(range(8, 40)))
    return SamplingParams(seed=i, temperature=0.0 if i % 3 == 1 else 0.8, top_k=50 if i % 2 else 0,
                          audio_constraint=AudioConstraint(LAYOUT, max_seconds=1.0 + 0.12 * i))


def test_requests_joining_a_running_batch_get_what_they_get_alone(engine):
    prefix, prompts = prompts_with_prefix(7)
    params = [_params(i) for i in range(len(prompts))]
    alone = [engine.generate([p], [q])[0] for p, q in zip(prompts, params)]
    batcher = ContinuousBatcher(engine, max_batch=3)
    got = [Collector() for _ in prompts]
    try:
        def submit(i):
            batcher.submit(prompts[i], params[i], got[i], prefix=len(prefix) if i % 2 else 0)
            if i + 1 < len(prompts):  # the next joins once this one has a few ids: mid-run
                got[i].triggers.append((3, lambda: submit(i + 1)))
        submit(0)
        for c in got:
            assert c.finished.wait(120) and c.error is None
    finally:
        batcher.close()
    reasons = set()
    for c, ref in zip(got, alone):
        assert c.done.token_ids == ref.token_ids and c.done.finish_reason == ref.finish_reason
        assert c.ids == ref.token_ids  # streamed in order, nothing lost or repeated
        reasons.add(ref.finish_reason)
    assert reasons == {"stop", "length"}  # rows left the batch for both reasons
    assert batcher.prefix_hits == 2  # requests 3 and 5 reused request 1's prefix KV


def test_a_cancelled_request_leaves_at_the_next_step_and_the_others_go_on(engine):
    _, prompts = prompts_with_prefix(2, seed=1)
    long = SamplingParams(seed=1, audio_constraint=AudioConstraint(LAYOUT, max_seconds=20))
    batcher = ContinuousBatcher(engine, max_batch=4)
    try:
        stay, leave = Collector(), Collector()
        batcher.submit(prompts[0], long, stay)
        handle = batcher.submit(prompts[1], long, leave)
        seen = []
        leave.triggers.append((5, lambda: (seen.append(len(leave.ids)), handle.cancel())))
        assert leave.finished.wait(120) and stay.finished.wait(120)
        assert leave.done.finish_reason == FINISH_CANCELLED and len(leave.ids) <= seen[0] + 1
        assert stay.done.token_ids == engine.generate([prompts[0]], long)[0].token_ids
        assert batcher.running == 0 and batcher.waiting == 0
    finally:
        batcher.close()


def test_bad_requests_fail_alone(engine):
    batcher = ContinuousBatcher(engine, max_batch=2)
    try:
        with pytest.raises(ValueError, match="empty"):
            batcher.submit([], SamplingParams(), Collector())
        with pytest.raises(ValueError, match="logprobs"):
            batcher.submit([1, 2], SamplingParams(logprobs=2), Collector())
        with pytest.raises(ValueError, match="prefix"):
            batcher.submit([1, 2], SamplingParams(), Collector(), prefix=2)
        too_long, fine = Collector(), Collector()
        context = engine.model.config.max_positions
        batcher.submit([1] * context, SamplingParams(max_tokens=10), too_long)  # no room to generate
        batcher.submit([1, 9, 10], SamplingParams(seed=0, max_tokens=10, stop_token_ids=()), fine)
        assert too_long.finished.wait(60) and fine.finished.wait(60)
        assert isinstance(too_long.error, ValueError) and "no room" in str(too_long.error)
        assert fine.error is None and len(fine.done.token_ids) == 10
    finally:
        batcher.close()
    late = Collector()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit([1, 2], SamplingParams(), late)
