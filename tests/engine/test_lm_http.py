"""HTTPEngine against a local OpenAI-compatible server wrapping a TorchEngine: same outputs as
the engine itself, every sequence deinterleaves, retries after 500s, timeouts, an unreachable
URL, repair of a server that breaks the pattern, and the request/response mapping."""
import socket

import numpy as np
import pytest

from engine.instructions import Instruction
from engine.lm import (AudioConstraint, HTTPEngine, RequestError, SamplingParams, TorchEngine,
                       audio_prefix, constraint_args, constraint_from_args, make_engine, parse_spec)
from engine.lm.http_engine import parse_choice
from engine.prompts import EOT, ByteTokenizer, build_tts_prompt
from engine.tokens import GROUP, deinterleave
from tests.engine.openai_server import CompletionServer

LAYOUT = ByteTokenizer().layout()
C = AudioConstraint(LAYOUT)


@pytest.fixture(scope="module")
def torch_engine(tiny_rope_dir):
    return TorchEngine(tiny_rope_dir, num_threads=1)


@pytest.fixture(scope="module")
def server(torch_engine):
    with CompletionServer(torch_engine, max_model_len=2048) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_faults(request):
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").faults.clear()


def prompts(n):
    tok = ByteTokenizer()
    return [build_tts_prompt(f"Sentence number {i}.", Instruction(), tok) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_same_output_as_the_engine_behind_it(server, torch_engine):
    ps = prompts(6)
    params = [SamplingParams(seed=i, max_tokens=60, logprobs=3, audio_constraint=C) for i in range(6)]
    direct = torch_engine.generate(ps, params)
    remote = HTTPEngine(server.url, concurrency=3).generate(ps, params)
    for d, r in zip(direct, remote):
        assert r.token_ids == d.token_ids and r.finish_reason == d.finish_reason
        np.testing.assert_array_equal(r.topk_ids, d.topk_ids)
        np.testing.assert_allclose(r.topk_logprobs, d.topk_logprobs, rtol=0, atol=1e-6)
    body = server.requests[-1]
    assert body["return_token_ids"] and body["return_tokens_as_token_ids"] and body["ignore_eos"]
    assert body["stop_token_ids"] == [EOT] and constraint_from_args(body["vllm_xargs"]["stepforge_audio"]) == C
    assert len(body["allowed_token_ids"]) == 1 + LAYOUT.vq02_size + LAYOUT.vq06_size


def test_every_sequence_deinterleaves_over_many_seeds(server):
    params = [SamplingParams(seed=s, max_tokens=100, temperature=1.0, audio_constraint=C)
              for s in range(40)]
    gens = HTTPEngine(server.url, concurrency=8).generate(prompts(40), params)
    for g in gens:
        assert "repaired" not in g.info
        assert audio_prefix(g.token_ids, C) == (len(g.token_ids), "")
        deinterleave(g.content_ids(), LAYOUT)
        assert g.finish_reason == ("stop" if g.token_ids[-1] == EOT else "length")


def test_retries_after_500_then_succeeds(server):
    server.faults.extend(["500", "500"])
    before = len(server.requests)
    [g] = HTTPEngine(server.url, retries=3, backoff_s=0.05).generate(
        prompts(1), SamplingParams(seed=1, max_tokens=10, audio_constraint=C))
    assert len(server.requests) - before == 3 and len(g.token_ids) == 10


def test_persistent_500_fails_that_request_only(server):
    server.faults.extend(["500"] * 3)
    engine = HTTPEngine(server.url, retries=2, backoff_s=0.05, concurrency=1)
    with pytest.raises(RequestError) as err:
        engine.generate(prompts(3), SamplingParams(seed=1, max_tokens=10, audio_constraint=C))
    assert list(err.value.errors) == [0] and "HTTP 500" in err.value.errors[0]
    assert "injected server error" in err.value.errors[0] and "3 attempts" in err.value.errors[0]
    assert [g is None for g in err.value.generations] == [True, False, False]  # no row lost


def test_timeout_is_retried_then_reported(server):
    """A request the server never answers costs one attempt of ``timeout_s``, then it is retried;
    the error names the configured timeout."""
    server.faults.append("hang")
    before = len(server.requests)
    # 3 s: the retry's answer must come within it, also on a loaded machine
    [g] = HTTPEngine(server.url, timeout_s=3, retries=1, backoff_s=0.05).generate(
        prompts(1), SamplingParams(seed=1, max_tokens=5, stop_token_ids=()))
    assert len(g.token_ids) == 5 and len(server.requests) - before == 2  # the hung one, the retry
    server.faults.extend(["hang", "hang"])
    before = len(server.requests)
    with pytest.raises(RequestError) as err:
        HTTPEngine(server.url, timeout_s=0.5, retries=1, backoff_s=0.05).generate(
            prompts(1), SamplingParams(seed=1, max_tokens=5))
    [message] = err.value.errors.values()
    assert "failed after 2 attempts: no response within 0.5 s" in message
    assert len(server.requests) - before == 2 and not server.faults  # both hung, no third try


def test_unreachable_url_fails_fast_with_a_clear_error():
    """Once one request has used up its retries on a refused connection, the others give up
    without connecting: only the first ``concurrency`` prompts ever try."""
    url = f"http://127.0.0.1:{free_port()}"
    engine = HTTPEngine(url, retries=2, backoff_s=0.1, concurrency=8)
    attempts = []
    request = engine._request

    def counted(*args):
        attempts.append(args)
        return request(*args)

    engine._request = counted
    with pytest.raises(RequestError) as err:
        engine.generate(prompts(20), SamplingParams(max_tokens=5))
    assert set(err.value.errors) == set(range(20))
    assert all("unreachable" in e and url in e for e in err.value.errors.values())
    posts = [a for a in attempts if a[0] == "POST"]  # not the GET /v1/models that asks the context
    assert 3 <= len(posts) <= 8 * 3  # at most concurrency x (retries + 1), not 20 x 3
    gave_up = [e for e in err.value.errors.values() if "an earlier request failed to connect" in e]
    assert len(gave_up) >= 20 - 8


def test_a_server_that_breaks_the_pattern_is_repaired(server):
    server.faults.append("corrupt")  # id 70 (a text id) at position 7
    with pytest.warns(UserWarning, match="--logits-processors"):
        [g] = HTTPEngine(server.url).generate(prompts(1), SamplingParams(seed=3, max_tokens=40,
                                                                         audio_constraint=C))
    assert len(g.token_ids) == GROUP and "position 7" in g.info["repaired"]
    assert g.finish_reason == "length"
    deinterleave(g.token_ids, LAYOUT)


def test_bad_request_is_not_retried(server):
    before = len(server.requests)
    with pytest.raises(RequestError, match="HTTP 400"):
        HTTPEngine(server.url, retries=3).generate([[1, 10**6]], SamplingParams(max_tokens=5))
    assert len(server.requests) - before == 1


def test_context_from_v1_models_budgets_max_tokens(server):
    engine = HTTPEngine(server.url)
    assert engine.max_model_len == 2048 and engine.model == "test-model"
    long = [1] + [40] * 2040
    [g] = engine.generate([long], SamplingParams(seed=0, max_tokens=100, audio_constraint=C))
    assert len(g.token_ids) <= 5 and server.requests[-1]["max_tokens"] == 5
    with pytest.raises(RequestError, match="no room"):
        engine.generate([[1] + [40] * 2047], SamplingParams(max_tokens=10))


def test_parse_choice_without_token_ids_and_with_a_bare_stop_reason():
    p = SamplingParams(logprobs=2, stop_token_ids=(EOT,))
    choice = {"finish_reason": "stop", "stop_reason": EOT, "logprobs": {
        "tokens": ["token_id:300", "token_id:301"],
        "top_logprobs": [{"token_id:300": -0.1, "token_id:9": -2.5, "token_id:7": -3.0},
                         {"token_id:12": -0.5, "token_id:301": -1.0}]}}
    g = parse_choice(choice, p)
    assert g.token_ids == [300, 301, EOT] and g.finish_reason == "stop"
    assert g.topk_ids.tolist() == [[300, 9], [12, 301], [-1, -1]]
    assert g.topk_logprobs[0].tolist() == pytest.approx([-0.1, -2.5])
    assert np.isneginf(g.topk_logprobs[2]).all()


def test_constraint_args_roundtrip_and_audio_prefix():
    c = AudioConstraint(LAYOUT, eot=3, min_groups=2, window=8, repeats=3, max_seconds=4)
    back = constraint_from_args(constraint_args(c))
    assert back.layout == LAYOUT and (back.eot, back.min_groups, back.window, back.repeats) == (3, 2, 8, 3)
    with pytest.raises(ValueError):
        constraint_from_args([1, 2, 3])
    a, b = LAYOUT.vq02_offset, LAYOUT.vq06_offset
    group = [a + 1, a + 2, b + 1, b + 2, b + 3]
    assert audio_prefix(group + [EOT], C) == (6, "")
    assert audio_prefix(group + [a + 5, EOT], C)[0] == 5  # EOT inside a group
    assert audio_prefix([EOT], C)[0] == 0  # EOT before min_groups
    assert audio_prefix(group + [a + 5, a + 5], C)[0] == 5  # the repetition guard
    assert audio_prefix(group + group[:3], C) == (5, "8 ids end inside a 5-id group")
    assert audio_prefix(group + [EOT] + group, C) == (6, "5 ids follow EOT at position 5")


def test_engine_specs():
    assert parse_spec("http://h:1/x?timeout=3") == ("http", "http://h:1/x", {"timeout": "3"})
    assert parse_spec("vllm:/m?tp=2&kv_cache_gib=0.5") == ("vllm", "/m", {"tp": "2", "kv_cache_gib": "0.5"})
    with pytest.raises(ValueError, match="unknown LM engine"):
        parse_spec("onnx:/m")
    with pytest.raises(ValueError, match="unknown http option 'tp'"):
        make_engine("http://127.0.0.1:1?tp=2")
    with pytest.raises(ValueError, match="not a valid int"):
        make_engine("http://127.0.0.1:1?retries=many")
    e = make_engine("http:127.0.0.1:9/v1/?concurrency=2&timeout=1.5")
    assert (e.url, e.concurrency, e.timeout_s) == ("http://127.0.0.1:9", 2, 1.5)
