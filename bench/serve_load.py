"""`stepforge serve` under load: 1, 8 and 32 concurrent streaming clients against one served
student, the 1-client level being the same requests served one at a time (the baseline).

    python -m bench.serve_load [--student DIR] [--requests 32] [--levels 1,8,32] [--max-seconds 3]
                               [--max-batch 32] [--format pcm] [--skip-decode]

Without --student a tiny Step1 (random weights, the tests' size) is exported first; random weights
speak until the length cap, so every request makes ``--max-seconds`` of audio. The server runs as
a real `stepforge serve` subprocess; this process is the clients (httpx, streaming). Per level:
throughput (audio seconds per wall second), p50/p99 latency and time to first audio, and the
real-time factor (request wall / its audio seconds). Then, unless --skip-decode, the incremental
decode against the whole-utterance decode on real speech ids (eSpeak sentences through the codec):
the log-mel difference, each waveform's spectral convergence to the decoded magnitudes, and the
log-spectral distance between the two waveforms. Ends with one summary line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TEXTS = ["The quick brown fox jumps over the lazy dog.", "She sells sea shells by the sea shore.",
         "A journey of a thousand miles begins with a single step.", "Please call Stella and ask her to bring these things.",
         "The early bird catches the worm, they say.", "How much wood would a woodchuck chuck?",
         "It was the best of times, it was the worst of times.", "Seven bright kites drifted over the quiet harbour."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_student(root: Path) -> Path:
    from engine.models import build_student, export

    return export(build_student("step1", "tiny", seed=0, num_hidden_layers=2), root / "student")


def preset_student(root: Path, preset: str, overrides: list[str]) -> Path:
    """A random Step1 of ``preset`` (``tts-3b``: the released TTS-3B's shape, 74752-id vocabulary)
    in bf16, with the tests' tiny SentencePiece tokenizer in the Step tokenizer's id layout."""
    import torch

    from engine.models import build_student, export
    from tests.engine.stepaudio.tiny_tts3b import TOKENIZER_CONFIG, train_tokenizer

    dims = {k: int(v) for k, v in (o.split("=", 1) for o in overrides)}
    start = time.perf_counter()
    model = build_student("step1", preset, seed=0, **dims).to(torch.bfloat16)
    out = export(model, root / "student")
    train_tokenizer(out / "tokenizer.model")
    (out / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG))
    print(f"student: random {preset} Step1, {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters, "
          f"bf16, written in {time.perf_counter() - start:.0f} s")
    return out


def start_server(student: Path, port: int, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", str(student), "--port", str(port), "--engine", "torch",
           "--max-batch", str(args.max_batch), "--max-seconds", str(args.max_seconds), "--max-pending", "256",
           "--max-queue", "256"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("the server did not answer /health in 300 s")


async def one_request(client, url: str, body: dict, rate: int) -> dict:
    start = time.perf_counter()
    first = None
    size = 0
    async with client.stream("POST", url, json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{resp.status_code}: {(await resp.aread())[:200]!r}")
        async for chunk in resp.aiter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - start
            size += len(chunk)
    wall = time.perf_counter() - start
    header = 44 if body["response_format"] == "wav" else 0
    audio = (size - header) / 2 / rate
    return {"wall": wall, "first": first if first is not None else wall, "audio": audio}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def level(url: str, clients: int, requests: int, fmt: str, server_pid: int) -> dict:
    import httpx

    rate = 24000 if fmt == "pcm" else 16000
    bodies = [{"model": "student", "input": TEXTS[i % len(TEXTS)], "voice": "default", "response_format": fmt,
               "seed": i} for i in range(requests)]
    queue: asyncio.Queue = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    results: list = []

    async def worker(client):
        while not queue.empty():
            results.append(await one_request(client, url, queue.get_nowait(), rate))

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        start, server_cpu, client_cpu = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - start
        server_cpu, client_cpu = cpu_seconds(server_pid) - server_cpu, time.process_time() - client_cpu
    walls = np.array([r["wall"] for r in results])
    firsts = np.array([r["first"] for r in results])
    audio = np.array([r["audio"] for r in results])
    return {"clients": clients, "requests": len(results), "wall": wall, "audio": float(audio.sum()),
            "throughput": float(audio.sum() / wall), "p50": float(np.percentile(walls, 50)),
            "p99": float(np.percentile(walls, 99)), "ttfa50": float(np.percentile(firsts, 50)),
            "ttfa99": float(np.percentile(firsts, 99)), "rtf": float(np.median(walls / np.maximum(audio, 1e-9))),
            "server_cpu": server_cpu / max(float(audio.sum()), 1e-9), "client_cpu": client_cpu / max(wall, 1e-9)}


def decode_difference() -> dict:
    """Incremental vs whole decode of real speech ids (the shipped codec)."""
    from engine import tokens
    from engine.audio import preprocess
    from engine.codec import load_codec, mel
    from engine.espeak import render

    codec = load_codec()
    rows = []
    stream_s = whole_s = 0.0
    for text in TEXTS:
        wav, sr = render(text, voice="en-us")
        ids = codec.tokenize(preprocess(wav, sr))
        t = time.perf_counter()
        whole = codec.detokenize(ids)
        whole_s += time.perf_counter() - t
        t = time.perf_counter()
        decoder = codec.stream_decoder()
        pieces = [decoder.push(ids[i:i + 10]) for i in range(0, len(ids), 10)] + [decoder.finish()]
        stream_s += time.perf_counter() - t
        streamed = np.concatenate(pieces)
        whole_mel = codec.decode_mel(*tokens.deinterleave(ids))
        target = mel.mel_to_magnitude(whole_mel)

        def convergence(w):
            got = np.abs(mel.stft(w))[:len(target)]
            return float(np.linalg.norm(got - target) / np.linalg.norm(target))

        a, b = np.log(np.abs(mel.stft(streamed)) + 1e-5), np.log(np.abs(mel.stft(whole)) + 1e-5)
        rows.append({"seconds": len(whole) / codec.sample_rate, "mel_max_abs": float(np.abs(decoder.mel - whole_mel).max()),
                     "sc_whole": convergence(whole), "sc_stream": convergence(streamed),
                     "lsd": float(np.sqrt(((a - b) ** 2).mean(1)).mean()), "same_length": len(streamed) == len(whole)})
    return {"rows": rows, "stream_over_whole_cpu": stream_s / whole_s}


def write_json(args, results: list[dict]) -> None:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    Path(args.json).write_text(json.dumps({"args": vars(args), "device": device, "levels": results}, indent=1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--student", default=None)
    p.add_argument("--preset", default=None, help="serve a random Step1 of this preset (e.g. tts-3b, on a GPU)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=INT",
                   help="change a dimension of --preset (a smaller model to try the bench)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--levels", default="1,8,32")
    p.add_argument("--max-seconds", type=float, default=3.0)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--format", default="pcm", choices=("pcm", "wav"))
    p.add_argument("--skip-decode", action="store_true")
    args = p.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    print(f"load: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        if args.student:
            student = Path(args.student)
        elif args.preset:
            student = preset_student(Path(tmp), args.preset, args.override)
        else:
            student = tiny_student(Path(tmp))
        port = free_port()
        server = start_server(student, port, args)
        url = f"http://127.0.0.1:{port}/v1/audio/speech"
        try:
            asyncio.run(level(url, 2, 2, args.format, server.pid))  # warm-up: first-use costs out of the way
            results = []
            for c in levels:
                results.append(asyncio.run(level(url, c, args.requests, args.format, server.pid)))
                if args.json:  # what is measured so far, should a later level overrun a time limit
                    write_json(args, results)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    base = results[0]
    print(f"\n{args.requests} requests of {args.max_seconds:g} s audio cap, {args.format}, streamed; baseline = "
          f"{base['clients']} client (one at a time)")
    print("| clients | wall s | audio s | audio s / wall s | x baseline | p50 latency s | p99 latency s | "
          "p50 TTFA ms | p99 TTFA ms | median RTF | server CPU s / audio s | client cores |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['clients']} | {r['wall']:.1f} | {r['audio']:.1f} | {r['throughput']:.2f} | "
              f"{r['throughput'] / base['throughput']:.2f} | {r['p50']:.2f} | {r['p99']:.2f} | "
              f"{1000 * r['ttfa50']:.0f} | {1000 * r['ttfa99']:.0f} | {r['rtf']:.3f} | {r['server_cpu']:.3f} | "
              f"{r['client_cpu']:.2f} |")
    if not args.skip_decode:
        diff = decode_difference()
        rows = diff["rows"]
        print("\nincremental vs whole decode (melvq, real speech ids of the 8 sentences):")
        print(f"- log-mel max abs difference: {max(r['mel_max_abs'] for r in rows):.2e}; same length: "
              f"{all(r['same_length'] for r in rows)}")
        print(f"- spectral convergence to the decoded magnitudes: whole {np.mean([r['sc_whole'] for r in rows]):.4f}, "
              f"streamed {np.mean([r['sc_stream'] for r in rows]):.4f} (lower is closer)")
        print(f"- log-spectral distance streamed vs whole: {np.mean([r['lsd'] for r in rows]):.3f} nepers; "
              f"decode CPU streamed / whole: {diff['stream_over_whole_cpu']:.2f}x")
    top = results[-1]
    print(f"\nserve_load: {top['clients']} clients {top['throughput'] / base['throughput']:.2f}x the throughput of one at a "
          f"time ({top['throughput']:.2f} vs {base['throughput']:.2f} audio s/s); p50 time to first audio at "
          f"{base['clients']} client {1000 * base['ttfa50']:.0f} ms, at {top['clients']} {1000 * top['ttfa50']:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
