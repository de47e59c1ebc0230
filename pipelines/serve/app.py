"""OpenAI's speech API over a :class:`~pipelines.serve.service.SpeechService` (FastAPI).

    app = create_app(SpeechService("student/"), api_key=None, max_pending=64)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes: ``POST /v1/audio/speech``, ``GET /v1/audio/voices``, ``POST /v1/audio/voices`` (multipart:
``audio`` or ``audio_sample`` file, ``name``, ``transcript``; registers a clone prompt, see
:mod:`pipelines.serve.voices`), ``DELETE /v1/audio/voices/NAME``, ``GET /v1/models``, ``GET /health``,
``GET /metrics``. Every error is a 4xx (5xx: a bug or a failed generation) with OpenAI's body
``{"error": {"message", "type", "param", "code"}}``; the server keeps serving. With ``api_key``
every route but /health wants ``Authorization: Bearer KEY``. At most ``max_pending`` speech
requests are admitted (waiting, generating or streaming); the next gets 429 and Retry-After.

An input longer than the audio cap allows is split at sentence ends and its pieces generated with
the same voice prompt (:mod:`pipelines.serve.reply` says how they stream). ``stream_format=audio``
sends chunked bytes, ``sse`` sends ``speech.audio.delta`` events, then ``speech.audio.done`` with
the usage (and, beyond OpenAI's fields, the instruction as understood, the voice and the pieces).
"""
from __future__ import annotations

import dataclasses
import hmac
import time
from typing import Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from engine.instructions import InstructionError
from manifests.errors import UserError
from pipelines.serve.audio import FORMATS, media_type, supported_formats
from pipelines.serve.instructions import understand
from pipelines.serve.metrics import Metrics
from pipelines.serve.reply import SpeechReply
from pipelines.serve.service import DEFAULT_VOICE, SpeechService, VoiceNotFound
from pipelines.serve.text import piece_chars, pieces
from pipelines.serve.voices import VoiceError

MAX_INPUT = 4096
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # OpenAI's names: clients ported as they are
SPEECH = "/v1/audio/speech"
VOICES = "/v1/audio/voices"
OPEN = ("/health",)
RETRY_AFTER = 1  # seconds a 429 or 503 asks the client to wait


class APIError(Exception):
    """An error response in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``: OpenAI's fields, then stepforge's extras (seed and sampling)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    input: str
    voice: Union[str, dict] = DEFAULT_VOICE
    instructions: str | None = None
    response_format: str | None = None  # OpenAI's default, mp3 (wav where mp3 cannot be written)
    speed: float | None = None
    stream_format: str = "audio"
    seed: int | None = None
    temperature: float | None = Field(None, ge=0, le=5)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)


class _Gate:
    """Counts admitted speech requests against ``limit``; :meth:`enter` gives a release function
    that counts once however often it is called."""

    def __init__(self, limit: int, metrics: Metrics):
        self.limit, self.active, self.metrics = limit, 0, metrics

    def enter(self):
        if self.active >= self.limit:
            self.metrics.rejected.inc()
            raise APIError(429, f"the server is at its limit of {self.limit} concurrent speech requests; "
                           "retry after the Retry-After seconds", code="rate_limit_exceeded",
                           type="rate_limit_error", headers={"Retry-After": str(RETRY_AFTER)})
        self.active += 1
        held = [True]

        def release() -> None:
            if held:
                held.pop()
                self.active -= 1
        return release


class _AudioResponse(StreamingResponse):
    """A stream that frees its request's slot when it ends, however it ends (also when the
    client left before the first byte, where the body generator never starts)."""

    def __init__(self, body, release, **kwargs):
        super().__init__(body, **kwargs)
        self.release = release

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


def create_app(service: SpeechService, api_key: str | None = None, max_pending: int = 64,
               max_body: int = 1 << 20, max_upload: int = 16 << 20, max_queue: int | None = None) -> FastAPI:
    """The FastAPI app serving ``service``.

    Args:
        api_key: the bearer token every route but /health wants (None: no auth).
        max_pending: speech requests admitted at once (waiting, generating or streaming); the
            next gets 429.
        max_queue: requests waiting for the engine beyond which a new one gets 503 (default
            ``max_pending``: only 429s then, and 503 while shutting down); set it lower to shed
            load before the admitted requests queue up behind the engine.
        max_body: largest request body in bytes (413 above it); max_upload: the same for a
            voice registration.
    """
    app = FastAPI(title="stepforge serve", version="1", docs_url=None, redoc_url=None)
    app.state.metrics = metrics = Metrics()
    app.state.gate = gate = _Gate(max_pending, metrics)
    service.batch_listeners.append(metrics.batch_size.observe)
    metrics.queued.set_function(lambda: service.queued)
    metrics.running.set_function(lambda: gate.active - service.queued)
    _install_errors(app)
    _install_middleware(app, metrics, api_key, max_body, max_upload)
    _info_routes(app, service, metrics)
    _voice_routes(app, service)
    _speech_route(app, service, metrics, gate, max_queue if max_queue is not None else max_pending)
    return app


def _info_routes(app: FastAPI, service: SpeechService, metrics: Metrics) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok", **service.info()}

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": service.model_id, "object": "model", "created": 0,
                                            "owned_by": "stepforge"}]}


def _voice_routes(app: FastAPI, service: SpeechService) -> None:
    @app.get("/v1/audio/voices")
    async def voices():
        data = [_voice_object(DEFAULT_VOICE, "default")]
        data += [_voice_object(v.name, "builtin", v.text) for v in sorted(service.builtin.values(), key=lambda v: v.name)]
        data += [_voice_object(n, "audio_sample", service.registered.get(n).text) for n in service.registered.names()]
        return {"object": "list", "data": data}

    @app.post(VOICES, status_code=201)
    async def register(request: Request):
        try:
            form = await request.form()
        except Exception as exc:  # the multipart parser raises several types for a bad body
            raise APIError(400, f"the body must be multipart/form-data with audio, name and transcript ({exc})",
                           code="invalid_form") from None
        upload = form.get("audio") or form.get("audio_sample")
        if not hasattr(upload, "read"):
            raise APIError(400, "attach the prompt audio as a file (field audio or audio_sample)", param="audio",
                           code="missing_audio")
        audio = await upload.read()
        voice = await service.off_loop(service.registered.register, str(form.get("name") or ""), audio,
                                       str(form.get("transcript") or ""))
        return {**_voice_object(voice.name, "audio_sample", voice.text), "seconds": round(voice.seconds, 3),
                "audio_ids": len(voice.ids)}

    @app.delete(VOICES + "/{name}")
    async def delete(name: str):
        if name == DEFAULT_VOICE or name in service.builtin:
            raise APIError(400, f"voice {name!r} is built in; only registered voices can be deleted", param="name",
                           code="builtin_voice")
        service.registered.delete(name)
        return {"id": name, "object": "audio.voice.deleted", "deleted": True}


def _speech_route(app: FastAPI, service: SpeechService, metrics: Metrics, gate: "_Gate", queue_limit: int) -> None:
    formats = supported_formats()

    @app.post(SPEECH)
    async def speech(req: SpeechRequest):
        req.response_format = req.response_format or ("mp3" if "mp3" in formats else "wav")
        _check(req, service, formats)
        voice = _voice_id(req.voice)
        instruction = _instruction(req)
        release = gate.enter()  # 429 first: the admitted requests bound the queue
        reply = None
        try:
            _check_capacity(service, queue_limit)
            texts = pieces(req.input, piece_chars(service.max_seconds, instruction.lang))
            sampling = {"temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p}
            prompts = await service.off_loop(
                lambda: [service.prepare(t, instruction, voice, req.seed, sampling) for t in texts])
            done = {"instruction": {**dataclasses.asdict(instruction), "tags": instruction.tags()}, "voice": voice,
                    "pieces": texts}
            reply = SpeechReply(service, prompts, req.response_format, req.stream_format, metrics, release, done)
            await reply.begin()
        except BaseException:
            if reply is not None:
                reply.cancel()
            release()
            raise
        kind = "text/event-stream" if req.stream_format == "sse" else media_type(req.response_format)
        return _AudioResponse(reply.body(), release, media_type=kind, headers=reply.headers())


def _instruction(req: SpeechRequest):
    """The request's instructions and speed as an Instruction (400 naming the field otherwise)."""
    try:
        return understand(req.instructions, req.speed, req.input)
    except InstructionError as exc:
        speed = str(exc).startswith("speed")
        raise APIError(400, str(exc), param="speed" if speed else "instructions",
                       code="invalid_value" if speed else "invalid_instructions") from None


def _check_capacity(service: SpeechService, queue_limit: int) -> None:
    """503 with Retry-After while the server shuts down or the engine's queue is full."""
    waiting = service.queued
    if service.closed or waiting >= queue_limit:
        why = "is shutting down" if service.closed else f"has {waiting} requests waiting for the engine"
        raise APIError(503, f"the server {why}; retry after the Retry-After seconds", code="engine_overloaded",
                       type="server_error", headers={"Retry-After": str(RETRY_AFTER)})


def _check(req: SpeechRequest, service: SpeechService, formats: tuple[str, ...]) -> None:
    """400/404 for a request that cannot be served (before it takes a slot)."""
    if req.model not in (service.model_id, *MODEL_ALIASES):
        raise APIError(404, f"model {req.model!r} is not served here; use {service.model_id!r}",
                       param="model", code="model_not_found")
    if not req.input.strip():
        raise APIError(400, "input is empty", param="input", code="empty_input")
    if len(req.input) > MAX_INPUT:
        raise APIError(400, f"input is {len(req.input)} characters; the limit is {MAX_INPUT}",
                       param="input", code="string_above_max_length")
    if req.response_format not in formats:
        known = "" if req.response_format in FORMATS or req.response_format == "aac" else "unknown "
        raise APIError(400, f"{known}response_format {req.response_format!r} is not supported here; "
                       f"use one of {', '.join(formats)}", param="response_format", code="unsupported_format")
    if req.stream_format not in ("audio", "sse"):
        raise APIError(400, f"stream_format must be audio or sse, got {req.stream_format!r}",
                       param="stream_format", code="invalid_value")
    try:
        service.voice(_voice_id(req.voice))
    except VoiceNotFound as exc:
        raise APIError(400, str(exc), param="voice", code="voice_not_found") from None


def _voice_object(name: str, kind: str, transcript: str | None = None) -> dict:
    """A voice as the API lists it (``type``: default, builtin or audio_sample, OpenAI's name for a
    voice registered from a recording)."""
    return {"id": name, "object": "audio.voice", "name": name, "type": kind, "transcript": transcript}


def _voice_id(voice) -> str:
    """OpenAI's ``voice``: a name, or ``{"id": name}``."""
    return voice if isinstance(voice, str) else str(voice.get("id", ""))


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
        if bad_json is not None:
            return APIError(400, f"the body is not valid JSON ({bad_json.get('ctx', {}).get('error', 'parse error')})",
                            code="invalid_json").response()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        if first.get("type") == "model_attributes_type":
            return APIError(400, "the body must be a JSON object", code="invalid_json").response()
        return APIError(400, f"{param or 'body'}: {first.get('msg')}", param=param,
                        code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None).response()

    @app.exception_handler(VoiceError)
    async def voice_error(request: Request, exc: VoiceError):
        code = {409: "voice_exists", 404: "voice_not_found"}.get(exc.status, "invalid_voice")
        return APIError(exc.status, str(exc), param=exc.param, code=code).response()

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return APIError(400, str(exc), code="invalid_request").response()

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        return APIError(500, f"the server failed on this request ({type(exc).__name__}: {exc})",
                        type="server_error", code="internal_error").response()


def _install_middleware(app: FastAPI, metrics: Metrics, api_key: str | None, max_body: int,
                        max_upload: int) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next):
        start = time.perf_counter()
        upload = request.method == "POST" and request.url.path == VOICES
        refused = _refuse(request, api_key, max_upload if upload else max_body)
        response = refused.response() if refused else await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(route=path, status=str(response.status_code)).inc()
        if path != SPEECH or response.status_code != 200:  # a stream observes its own end
            metrics.latency.labels(route=path).observe(time.perf_counter() - start)
        return response


def _refuse(request: Request, api_key: str | None, max_body: int) -> APIError | None:
    if api_key and request.url.path not in OPEN:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            return APIError(401, "missing or wrong API key: send Authorization: Bearer KEY",
                            code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_body):
        return APIError(413, f"the body is larger than the {max_body}-byte limit", code="body_too_large")
    return None
