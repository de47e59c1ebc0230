"""``stepforge serve STUDENT``: a distilled student behind OpenAI's speech API.

    stepforge serve runs/student --port 8000 [--engine auto|torch|vllm] [--codec melvq|WEIGHTS.npz|stepaudio:DIR]
                    [--max-batch 8] [--max-seconds 30] [--max-pending 64] [--max-queue N] [--decode-threads N] [--voices DIR]
                    [--api-key-env VAR]
    curl -s localhost:8000/v1/audio/speech -H 'Content-Type: application/json' \\
         -d '{"model": "student", "input": "Hello.", "voice": "amy", "response_format": "wav"}' -o hello.wav

Binds 127.0.0.1 unless ``--host`` says otherwise; ``--api-key-env VAR`` makes every route but
/health want ``Authorization: Bearer $VAR``. Routes and fields: :mod:`pipelines.serve.app`.
"""
from __future__ import annotations

import ipaddress
import os
import socket
import sys

from manifests.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a student with an OpenAI-compatible speech API",
                       description=__doc__.split("\n")[0])
    p.add_argument("student", help="student checkpoint dir (written by distill export)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "vllm"),
                   help="LM engine (auto: vllm on CUDA or for a RoPE student when installed, else torch)")
    p.add_argument("--codec", default="melvq",
                   help="codec that decodes the student's ids: melvq (shipped), stepaudio:MODEL_PATH, or the weights file its corpus "
                        "was tokenized with (checked against STUDENT/train.json)")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoding together (torch: at every step, continuous batching)")
    p.add_argument("--max-seconds", type=float, default=30.0, help="audio length cap per request (default 30)")
    p.add_argument("--max-pending", type=int, default=64,
                   help="speech requests admitted at once; more get 429 with Retry-After (default 64)")
    p.add_argument("--max-queue", type=int, default=None,
                   help="requests waiting for the engine beyond which new ones get 503 with Retry-After "
                        "(default: --max-pending, so only 429s; 503 while shutting down)")
    p.add_argument("--decode-threads", type=int, default=None, metavar="N",
                   help="threads decoding and encoding audio, one core each (default: --max-batch plus the cores: "
                        "a streaming request's decode waits there for the shared vocoder)")
    p.add_argument("--voices", default=None, metavar="DIR",
                   help="folder of voices registered through POST /v1/audio/voices (default STUDENT/voices)")
    p.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="environment variable holding the bearer token clients must send")
    p.set_defaults(func=main)


def main(args) -> int:
    import uvicorn

    from pipelines.serve.app import create_app
    from pipelines.serve.service import SpeechService

    key = api_key(args.api_key_env)
    if args.max_pending < 1:
        raise UserError(f"--max-pending must be >= 1, got {args.max_pending}")
    if args.max_queue is not None and args.max_queue < 1:
        raise UserError(f"--max-queue must be >= 1, got {args.max_queue}")
    check_port(args.host, args.port)
    if key is None and not _loopback(args.host):
        print(f"stepforge serve: warning: {args.host} is reachable from other machines and no "
              "--api-key-env is set", file=sys.stderr)
    one_blas_thread()
    service = SpeechService(args.student, engine=args.engine, codec=args.codec, max_batch=args.max_batch,
                            max_seconds=args.max_seconds, voices=args.voices, decode_threads=args.decode_threads)
    try:
        app = create_app(service, api_key=key, max_pending=args.max_pending, max_queue=args.max_queue)
        print(f"stepforge serve: {service.model_id} ({service.kind} engine, codec {service.codec.version}) "
              f"on http://{args.host}:{args.port}/v1/audio/speech", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        service.close()
    return 0


def one_blas_thread() -> None:
    """numpy's BLAS on one thread in this process. The server's parallelism is its concurrent
    requests (the decode threads, the engine's thread); a BLAS pool per call on top of those
    makes several threads per core wait on each other: the codec's mel-to-magnitude product took
    27 ms a call that way under load, 0.25 ms on one thread."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def api_key(var: str | None) -> str | None:
    """The token in environment variable ``var`` (None without ``var``); UserError when unset."""
    if var is None:
        return None
    key = os.environ.get(var, "").strip()
    if not key:
        raise UserError(f"--api-key-env {var}: the environment variable is unset or empty")
    return key


def check_port(host: str, port: int) -> None:
    """UserError when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    if not 0 < port < 65536:
        raise UserError(f"--port must be 1-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(infos[0][4])
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
