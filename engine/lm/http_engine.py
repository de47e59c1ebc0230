"""``HTTPEngine``: any OpenAI-compatible completions server behind the :class:`LMEngine` interface.

    engine = HTTPEngine("http://gpu-node:8000", concurrency=16, timeout_s=120)
    gens = engine.generate(prompts, SamplingParams(seed=1, logprobs=5,
                           audio_constraint=AudioConstraint(layout)))

Each prompt is one ``POST {url}/v1/completions`` with ``prompt`` as a list of ids. Besides the
OpenAI fields (``max_tokens``, ``temperature``, ``top_p``, ``logprobs``, ``seed``) it sends vLLM's
extensions: ``top_k``, ``stop_token_ids``, ``ignore_eos``, ``return_token_ids`` and
``return_tokens_as_token_ids`` (ids come back as ids, no tokenizer needed), and for the audio
constraint both ``allowed_token_ids`` (audio ids + EOT, honoured by any vLLM server) and
``vllm_xargs`` (the exact per-position 2:3 rule, honoured by a server started with
``--logits-processors engine.lm.vllm_processor:AudioConstraintLogitsProcessor``).
Every returned sequence is checked against the constraint and cut back to its last whole group
where the server broke it (``info["repaired"]``, and one warning), so what comes back always
deinterleaves. A server without the processor only restricts sampling to audio ids + EOT: a model
that has not learnt the pattern then loses most of each sequence (a random-weight tiny student:
64 of 64 sequences cut at their first ids), so serve with the processor:

    PYTHONPATH=/path/to/stepforge python -m vllm.entrypoints.openai.api_server --model DIR \
        --skip-tokenizer-init --logits-processors engine.lm.vllm_processor:AudioConstraintLogitsProcessor

Up to ``concurrency`` requests are in flight; each has a connect timeout and a read timeout;
connection errors, timeouts, truncated bodies, non-JSON bodies, 429 and 5xx are retried with
jittered exponential backoff (``backoff_s`` doubling up to ``backoff_max_s``, each sleep shortened
by a random fraction up to ``jitter``); other 4xx are not. Failed requests raise
:class:`RequestError` (one line and one error kind per request: ``http 500``, ``timeout``,
``truncated stream``, ``malformed response``, ``connection error``, ``unreachable``, ...) after all
others finished; once the server is unreachable the requests not yet sent fail at once instead of
each waiting.
"""
from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence
from urllib.parse import urlsplit

from engine.lm.base import (FINISH_LENGTH, FINISH_STOP, Generation, LMEngine, SamplingParams,
                            check_prompts, per_request)
from engine.lm.constraint_args import XARG, allowed_token_list, constraint_args
from engine.lm.errors import RequestError
from engine.lm.vllm_engine import enforce_constraint, topk_arrays
from engine.tokens import GROUP
from manifests.errors import UserError

CONNECT_TIMEOUT_S = 5.0
SERVER_FLAG = "--logits-processors engine.lm.vllm_processor:AudioConstraintLogitsProcessor"
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class _Error(Exception):
    """A failed attempt; ``kind`` names the failure for per-kind counts (``http 500``, ``timeout``)."""

    def __init__(self, message: str, kind: str = "request failed"):
        super().__init__(message)
        self.kind = kind


class _Unreachable(_Error):
    """The server could not be reached (connection refused, DNS, connect timeout)."""

    def __init__(self, message: str, kind: str = "unreachable"):
        super().__init__(message, kind)


class _Failed(_Error):
    """A request failed for good (a 4xx, a malformed response, retries exhausted)."""


class HTTPEngine(LMEngine):
    """Client of an OpenAI-compatible ``/v1/completions`` server that takes token-id prompts.

    Args:
        url: server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted).
        model: the served model name; None lets the server pick its default.
        concurrency: requests in flight at once.
        timeout_s: read timeout per request attempt (a whole completion must arrive in it).
        retries: further attempts after a retryable failure.
        backoff_s: the sleep before the first retry; it doubles each time, up to backoff_max_s.
        jitter: each sleep is shortened by a random fraction in ``[0, jitter]`` (0: none), so
            the retries of many rows that failed together spread out.
        vocab_size: the model's vocabulary size for checking prompts (default: not checked
            beyond non-negative ids; the server checks).
        max_model_len: the context, for budgeting ``max_tokens`` (default: asked of
            ``GET /v1/models`` on first use, where vLLM reports it).
        api_key: sent as a bearer token.
        allowed_ids: also send ``allowed_token_ids`` for constrained requests.
    """

    name = "http"

    def __init__(self, url: str, model: str | None = None, concurrency: int = 8,
                 timeout_s: float = 60, retries: int = 3, backoff_s: float = 0.5,
                 backoff_max_s: float = 30.0, jitter: float = 0.5, vocab_size: int | None = None, max_model_len: int | None = None,
                 api_key: str | None = None, allowed_ids: bool = True):
        self._parts = parse_url(url)
        parts = self._parts
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/').removesuffix('/v1')}"
        self.model = model
        if concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise UserError(f"concurrency must be >= 1, retries >= 0 and timeout_s > 0, got {concurrency}, "
                            f"{retries} and {timeout_s}")
        self.concurrency, self.timeout_s, self.retries = concurrency, timeout_s, retries
        if backoff_s < 0 or backoff_max_s < 0 or not 0 <= jitter <= 1:
            raise UserError(f"backoff and backoff_max must be >= 0 and jitter in [0, 1], got "
                            f"{backoff_s}, {backoff_max_s} and {jitter}")
        self.backoff_s, self.backoff_max_s, self.jitter = backoff_s, backoff_max_s, jitter
        self._vocab = vocab_size
        self._max_model_len = max_model_len
        self.api_key = api_key
        self.allowed_ids = allowed_ids
        self._down = threading.Event()
        self._warned = False

    @property
    def vocab_size(self) -> int:
        return self._vocab or (1 << 31)

    @property
    def max_model_len(self) -> int | None:
        """The served context length, from ``GET /v1/models`` (None when not reported)."""
        if self._max_model_len is None:
            try:
                models = self._request("GET", "/v1/models", None, self.timeout_s).get("data", [])
            except (_Unreachable, _Failed, _Retry):
                return None
            card = next((m for m in models if m.get("id") == self.model), models[0] if models else {})
            self._max_model_len = card.get("max_model_len") or 0
            self.model = self.model or card.get("id")
        return self._max_model_len or None

    def generate(self, prompts: Sequence[Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams]) -> list[Generation]:
        prompts = check_prompts(prompts, self.vocab_size)
        plist = per_request(params, len(prompts))
        self._down.clear()
        if self._max_model_len is None:
            self.max_model_len  # budgets max_tokens against the served context
        out: list[Generation | None] = [None] * len(prompts)
        errors: dict[int, str] = {}
        kinds: dict[int, str] = {}

        def one(i: int) -> None:
            try:
                out[i] = self._complete(prompts[i], plist[i])
            except (_Unreachable, _Failed) as e:
                errors[i], kinds[i] = str(e), e.kind

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts)) or 1) as pool:
            list(pool.map(one, range(len(prompts))))
        if errors:
            raise RequestError(errors, out, kinds)
        return out

    def body(self, prompt: list[int], p: SamplingParams) -> dict:
        """The JSON body of one completion request."""
        budget = p.token_budget()
        ctx = self._max_model_len
        if ctx:
            budget = min(budget, ctx - len(prompt))
        if p.audio_constraint is not None:
            budget -= budget % GROUP
        if budget < 1:
            raise _Failed(f"a prompt of {len(prompt)} ids leaves no room to generate in the "
                          f"server's {ctx}-position context", "prompt too long")
        body = {"prompt": prompt, "max_tokens": budget, "temperature": p.temperature,
                "top_p": p.top_p, "stop_token_ids": list(p.stop_token_ids), "ignore_eos": True,
                "return_token_ids": True, "return_tokens_as_token_ids": True,
                "skip_special_tokens": False}
        if self.model:
            body["model"] = self.model
        if p.top_k:
            body["top_k"] = p.top_k
        if p.seed is not None:
            body["seed"] = p.seed
        if p.logprobs:
            body["logprobs"] = p.logprobs
        if p.audio_constraint is not None:
            body["vllm_xargs"] = {XARG: constraint_args(p.audio_constraint)}
            if self.allowed_ids:
                body["allowed_token_ids"] = allowed_token_list(p.audio_constraint)
        return body

    def _complete(self, prompt: list[int], p: SamplingParams) -> Generation:
        if p.logprobs and p.logprobs_mode != "raw":
            raise _Failed("HTTPEngine returns the server's logprobs (vLLM: raw by default); "
                          "logprobs_mode 'processed' is not available over HTTP", "bad request")
        body = self.body(prompt, p)
        res = self._with_retries("POST", "/v1/completions", body)
        try:
            gen = enforce_constraint(parse_choice(res["choices"][0], p), p)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise _Failed(f"malformed response from {self.url}: {type(e).__name__}: {e}",
                          "malformed response") from None
        if "repaired" in gen.info and not self._warned:
            self._warned = True
            warnings.warn(f"{self.url} returned ids that break the 2:3 audio pattern "
                          f"({gen.info['repaired']}); they are cut at the break. Start the server "
                          f"with {SERVER_FLAG} so it enforces the pattern itself.", stacklevel=2)
        return gen

    def backoff(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt + 1`` (0-based ``attempt`` just failed)."""
        delay = min(self.backoff_s * 2 ** attempt, self.backoff_max_s)
        return delay * (1 - self.jitter * random.random())

    def _with_retries(self, method: str, path: str, body: dict | None) -> dict:
        last, kind = "", "request failed"
        for attempt in range(self.retries + 1):
            if self._down.is_set():
                raise _Unreachable(f"{self.url} is unreachable ({last or 'an earlier request failed to connect'})")
            try:
                return self._request(method, path, body, self.timeout_s)
            except _Retry as e:
                last, kind = str(e), e.kind
            except _Unreachable as e:
                last = str(e)
                if attempt == self.retries:
                    self._down.set()
                    raise _Unreachable(f"{self.url} is unreachable after {attempt + 1} "
                                       f"attempts: {last}") from None
            if attempt < self.retries:
                time.sleep(self.backoff(attempt))
        raise _Failed(f"{method} {self.url}{path} failed after {self.retries + 1} attempts: {last}", kind)

    def _request(self, method: str, path: str, body: dict | None, timeout: float) -> dict:
        parts = self._parts
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=min(CONNECT_TIMEOUT_S, timeout))
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        base = parts.path.rstrip("/").removesuffix("/v1")
        try:
            try:
                conn.connect()
            except (OSError, socket.timeout) as e:
                raise _Unreachable(_why(e)) from None
            conn.sock.settimeout(timeout)
            try:
                conn.request(method, base + path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except socket.timeout:
                raise _Retry(f"no response within {timeout:g} s", "timeout") from None
            except http.client.IncompleteRead as e:  # the body ended before its Content-Length
                raise _Retry(f"the response ended after {len(e.partial)} bytes ({e.expected} "
                             "more expected)", "truncated stream") from None
            except (OSError, http.client.HTTPException) as e:
                raise _Retry(_why(e), "connection error") from None
        finally:
            conn.close()
        if resp.status in RETRY_STATUS:
            raise _Retry(f"HTTP {resp.status}: {_message(raw)}", f"http {resp.status}")
        if resp.status >= 400:
            raise _Failed(f"HTTP {resp.status} from {self.url}{path}: {_message(raw)}",
                          f"http {resp.status}")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):  # e.g. a proxy's error page
            raise _Retry(f"{self.url}{path} answered with non-JSON: {raw[:80]!r}",
                         "malformed response") from None


def parse_url(url: str):
    """``urlsplit`` of a server URL (``http://`` assumed without a scheme); UserError unless
    it is http(s) with a host and, if given, a valid port."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        parts.port
    except ValueError:
        raise UserError(f"bad port in URL {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"not an http(s) URL: {url!r}")
    return parts


class _Retry(_Error):
    """A failure worth another attempt (timeout, dropped connection, 429, 5xx, a garbled body)."""


def parse_choice(choice: dict, p: SamplingParams) -> Generation:
    """One ``choices[i]`` of a completions response as a :class:`Generation`.

    Ids come from ``token_ids`` (vLLM's ``return_token_ids``) or else from the logprobs tokens
    (``"token_id:N"`` with ``return_tokens_as_token_ids``). A stop id the server reports only
    as ``stop_reason`` is appended, as the interface keeps it.
    """
    lp = choice.get("logprobs") or {}
    ids = choice.get("token_ids")
    if ids is None:
        tokens = lp.get("tokens")
        if tokens is None:
            raise ValueError("the response has neither token_ids nor logprobs tokens; the server "
                             "must support return_token_ids or return_tokens_as_token_ids")
        ids = [_token_id(t) for t in tokens]
    ids = [int(t) for t in ids]
    stop = choice.get("stop_reason")
    finish = choice.get("finish_reason")
    if finish == "stop" and isinstance(stop, int) and stop in p.stop_token_ids and (
            not ids or ids[-1] != stop):
        ids.append(stop)
    reason = FINISH_STOP if ids and ids[-1] in p.stop_token_ids else FINISH_LENGTH
    gen = Generation(ids, reason, info={"server_finish_reason": finish})
    if p.logprobs:
        rows = lp.get("top_logprobs")
        if rows is None:
            raise ValueError("logprobs were asked for but the response has no top_logprobs")
        rows = [sorted(((_token_id(t), float(v)) for t, v in (r or {}).items()),
                       key=lambda kv: -kv[1])[:p.logprobs] for r in rows]
        rows += [[]] * (len(ids) - len(rows))  # e.g. a stop id appended above
        gen.topk_ids, gen.topk_logprobs = topk_arrays([[t for t, _ in r] for r in rows[:len(ids)]],
                                                      [[v for _, v in r] for r in rows[:len(ids)]],
                                                      p.logprobs)
    return gen


def _token_id(token: str) -> int:
    if isinstance(token, int):
        return token
    if not token.startswith("token_id:"):
        raise ValueError(f"token {token[:20]!r} is not 'token_id:N'; ask for "
                         "return_tokens_as_token_ids")
    return int(token[len("token_id:"):])


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        msg = data.get("error", data.get("detail", data)) if isinstance(data, dict) else data
        if isinstance(msg, dict):
            msg = msg.get("message", msg)
        text = str(msg)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = raw[:200].decode("utf-8", errors="replace")
    return " ".join(text.split())[:300]
