"""`stepforge serve` with clients that leave at random: 64 threads each send a few speech requests
and disconnect before the reply, right after the headers, midway through the audio, or not at
all. Counts the statuses, then waits for the running and queued gauges to return to 0 (a leaked
slot would hold them up) and checks the server still answers.

    python -m bench.serve_disconnect [--clients 64] [--rounds 3] [--max-seconds 0.48]

The student is a tiny random Step1 (the tests' size), served in-process by uvicorn on 127.0.0.1.
Ends with ``serve_disconnect: <leaked slots> leaked slots, <n> 5xx of <m> answered``; 503 is the
engine queue's overload answer (``--max-queue``) and is listed apart.
"""
from __future__ import annotations

import argparse
import random
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

TEXTS = ["Hello there.", "今天天气很好。", "A longer sentence here, with a few more words in it."]


def serve(max_seconds: float):
    """(url, stop) of a tiny random student served by uvicorn in a thread."""
    import uvicorn

    from engine.models import build_student, export
    from pipelines.serve.app import create_app
    from pipelines.serve.service import SpeechService

    student = export(build_student("step1", "tiny", seed=0, num_hidden_layers=2), Path(tempfile.mkdtemp()) / "student")
    service = SpeechService(student, engine="torch", max_seconds=max_seconds, max_batch=8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(timeout=30)
        service.close()
    return f"http://127.0.0.1:{port}", stop


def gauge(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in "{ ")


def client(url: str, seed: int, rounds: int, statuses: Counter, errors: list, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    for _ in range(rounds):
        body = {"model": "student", "input": rng.choice(TEXTS), "voice": rng.choice(["default", "amy", "lin"]),
                "response_format": rng.choice(["wav", "pcm", "flac"]), "seed": rng.randrange(100)}
        if rng.random() < 0.5:
            body["stream_format"] = rng.choice(["audio", "sse"])
        leave = rng.choice(["before the reply", "after the headers", "midway", "never"])
        try:
            with httpx.Client(timeout=120) as c:
                if leave == "before the reply":
                    try:
                        c.post(f"{url}/v1/audio/speech", json=body, timeout=0.01)
                    except httpx.TimeoutException:
                        pass
                    continue
                with c.stream("POST", f"{url}/v1/audio/speech", json=body) as resp:
                    with lock:
                        statuses[resp.status_code] += 1
                    if leave == "after the headers":
                        continue
                    read, cut = 0, rng.randrange(1, 20000)
                    for chunk in resp.iter_bytes():
                        read += len(chunk)
                        if leave == "midway" and read > cut:
                            break
        except httpx.HTTPError as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=0.48)
    args = ap.parse_args()
    url, stop = serve(args.max_seconds)
    statuses: Counter = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(url, i, args.rounds, statuses, errors, lock))
               for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    deadline = time.monotonic() + 60
    while (gauge(url, "stepforge_requests_running") or gauge(url, "stepforge_requests_queued")) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    leaked = gauge(url, "stepforge_requests_running") + gauge(url, "stepforge_requests_queued")
    after = httpx.post(f"{url}/v1/audio/speech", json={"model": "student", "input": "Hello.", "response_format": "wav"},
                       timeout=120).status_code
    wall = time.perf_counter() - start
    stop()
    answered = sum(statuses.values())
    print("| clients x rounds | answered | by status | client errors | leaked slots | a request after | wall s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.clients} x {args.rounds} | {answered} | {dict(sorted(statuses.items()))} | {len(errors)} "
          f"| {leaked:g} | {after} | {wall:.1f} |")
    for e in errors[:5]:
        print("client error:", e)
    server_errors = sum(n for s, n in statuses.items() if s >= 500 and s != 503)
    print(f"serve_disconnect: {leaked:g} leaked slots, {server_errors} 5xx of {answered} answered "
          f"({statuses.get(503, 0)} x 503 queue full)")


if __name__ == "__main__":
    main()
