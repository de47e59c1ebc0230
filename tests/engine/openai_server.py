"""A small OpenAI-compatible completions server over any LMEngine, for tests.

    with CompletionServer(TorchEngine(model)) as server:
        HTTPEngine(server.url).generate(...)
    server.faults.extend(["500", "sleep:3", "hang"])   # the next requests fail / stall / never answer
    server.sticky[7] = "truncate"                      # every request with seed 7 gets its body cut

Faults: ``500``, ``sleep:S`` (answer after S seconds), ``hang`` (never answer), ``corrupt`` (an id
that breaks the audio pattern), ``malformed`` (200 with a body that is not JSON), ``truncate``
(200 whose body stops halfway through its Content-Length), ``nochoices`` (valid JSON without
``choices``). ``faults`` is consumed one per request in arrival order; ``sticky`` (request seed ->
fault) applies to every request with that seed, whatever the concurrency.

It speaks the subset of vLLM's ``/v1/completions`` that HTTPEngine uses (token-id prompts,
``stop_token_ids``, ``logprobs`` as ``token_id:N``, ``return_token_ids``, the audio constraint in
``vllm_xargs``) and batches concurrent requests into one ``engine.generate`` call, as a real
server does. Bound to 127.0.0.1 on a free port; runs in daemon threads.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from engine.lm import AudioConstraint, SamplingParams, constraint_from_args
from engine.lm.constraint_args import XARG


class CompletionServer:
    def __init__(self, engine, model: str = "test-model", max_model_len: int = 4096,
                 batch_wait_s: float = 0.02):
        self.engine, self.model, self.max_model_len = engine, model, max_model_len
        self.batch_wait_s = batch_wait_s
        self.faults: list[str] = []       # consumed one per request: "500", "sleep:S", "hang", ...
        self.sticky: dict[int, str] = {}  # request seed -> the fault every such request gets
        self.requests: list[dict] = []    # bodies received
        self._lock = threading.Lock()
        self._closing = threading.Event()  # a "hang" request is dropped unanswered when set
        self._queue: queue.Queue = queue.Queue()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True),
                         threading.Thread(target=self._batcher, daemon=True)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._queue.put(None)

    def _fault(self, body: dict) -> str:
        with self._lock:
            if body.get("seed") in self.sticky:
                return self.sticky[body["seed"]]
            return self.faults.pop(0) if self.faults else ""

    def _batcher(self) -> None:
        """Collect requests for ``batch_wait_s`` and generate them together."""
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.batch_wait_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    nxt = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    return
                batch.append(nxt)
            try:
                gens = self.engine.generate([b[0] for b in batch], [b[1] for b in batch])
                for (_, _, box), g in zip(batch, gens):
                    box.put(g)
            except Exception as e:  # a bad batch answers each of its requests with the error
                for _, _, box in batch:
                    box.put(e)

    def complete(self, body: dict) -> dict:
        params = sampling_params(body)
        box: queue.Queue = queue.Queue()
        self._queue.put((body["prompt"], params, box))
        gen = box.get()
        if isinstance(gen, Exception):
            raise gen
        return {"id": "cmpl-test", "object": "text_completion", "model": self.model,
                "choices": [choice(gen, params, body)], "usage": {}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, data: dict | bytes, cut: bool = False) -> None:
                raw = data if isinstance(data, bytes) else json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw[: len(raw) // 2] if cut else raw)
                if cut:  # close with the body half sent: the client sees an incomplete read
                    self.close_connection = True

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": server.model, "object": "model", "max_model_len": server.max_model_len}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                fault = server._fault(body)
                if fault == "500":
                    return self._send(500, {"error": {"message": "injected server error"}})
                if fault == "malformed":
                    return self._send(200, b"<html>502 Bad Gateway</html>")
                if fault == "nochoices":
                    return self._send(200, {"id": "cmpl-test", "object": "text_completion"})
                if fault == "hang":  # no answer while the server runs: only the client's timeout ends it
                    server._closing.wait()
                    return None
                if fault.startswith("sleep:"):
                    time.sleep(float(fault[6:]))
                if self.path != "/v1/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    data = server.complete(body)
                except (ValueError, KeyError, TypeError) as e:
                    return self._send(400, {"error": {"message": str(e)}})
                if fault == "corrupt":  # a server that ignores the constraint at one position
                    data["choices"][0]["token_ids"][7] = 70
                try:
                    self._send(200, data, cut=fault == "truncate")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        return Handler


def sampling_params(body: dict) -> SamplingParams:
    c = None
    xargs = body.get("vllm_xargs") or {}
    if XARG in xargs:
        c = constraint_from_args(xargs[XARG])
    return SamplingParams(temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                          top_k=max(body.get("top_k") or 0, 0), max_tokens=body["max_tokens"],
                          seed=body.get("seed"), stop_token_ids=tuple(body.get("stop_token_ids") or ()),
                          logprobs=body.get("logprobs") or 0,
                          audio_constraint=c if isinstance(c, AudioConstraint) else None)


def choice(gen, params: SamplingParams, body: dict) -> dict:
    ids = list(gen.token_ids)
    stopped = gen.finish_reason == "stop"
    out = {"index": 0, "text": "", "finish_reason": gen.finish_reason,
           "stop_reason": ids[-1] if stopped else None, "logprobs": None}
    if body.get("return_token_ids"):
        out["token_ids"] = ids
    if params.logprobs:
        out["logprobs"] = {
            "tokens": [f"token_id:{t}" for t in ids],
            "token_logprobs": [None] * len(ids),
            "top_logprobs": [{f"token_id:{int(t)}": float(v) for t, v in zip(r_ids, r_lp)}
                             for r_ids, r_lp in zip(gen.topk_ids, gen.topk_logprobs)],
            "text_offset": [0] * len(ids)}
    return out
