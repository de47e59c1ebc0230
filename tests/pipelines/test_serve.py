"""`stepforge serve`: the instruction mapper, and the HTTP API driven with the official `openai` SDK
and httpx against a tiny random Step1 student served by uvicorn on 127.0.0.1 (in a thread here; the
real CLI in a subprocess once). The student babbles until the 0.48 s cap (20 ids), which keeps
every request short."""
from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from engine.instructions import Instruction, InstructionError
from pipelines.cli import main
from pipelines.serve.instructions import free_text, speed_name, understand
from tests.conftest import REPO, cli_env
from tests.pipelines.uvicorn_thread import ServerThread, free_port

MAX_SECONDS = 0.48
KEY = "test-key-123"


# -- the instruction mapper ------------------------------------------------------------------------

@pytest.mark.parametrize("text, fields", [
    ("sad, intensity 4, Cantonese, a bit fast", dict(emotion="sad", intensity=4, dialect="cantonese", speed="fast1")),
    ("very happy", dict(emotion="happy", intensity=4)),
    ("speak angrily", dict(emotion="angry", intensity=3)),
    ("slightly surprised and extremely slow", dict(emotion="surprised", intensity=2, speed="slow2")),
    ("calm 2", dict(emotion="calm", intensity=2)),
    ("English with a British accent, slowly", dict(dialect="english-gb", speed="slow1")),
    ("有点生气，粤语，快一点", dict(emotion="angry", intensity=2, dialect="cantonese", speed="fast1")),
    ("快乐，强度5", dict(emotion="happy", intensity=5)),  # 快乐 is happy, not 快 (fast)
    ("悲伤3，四川话", dict(emotion="sad", intensity=3, dialect="sichuanese")),
    ("rap", dict(style="rap")),
    ("humming", dict(style="humming")),
])
def test_free_text_maps_onto_the_instruction_vocabulary(text, fields):
    assert free_text(text) == fields


@pytest.mark.parametrize("text, message", [
    ("like a pirate", "cannot understand 'like a pirate'"),
    ("sad, whisper it", "cannot understand 'whisper it'"),
    ("sad and happy", "two emotions (sad and happy)"),
    ("sad, intensity 7", "intensity 7 is outside 1-5"),
])
def test_free_text_it_does_not_understand_is_refused_with_the_vocabulary(text, message):
    with pytest.raises(InstructionError) as err:
        free_text(text)
    assert message in str(err.value)
    if "cannot understand" in message:
        assert "cantonese" in str(err.value) and "(高兴1)(粤语)" in str(err.value)


@pytest.mark.parametrize("speed, name", [(0.25, "slow2"), (0.7, "slow1"), (1.0, "normal"), (1.3, "fast1"),
                                         (2.0, "fast2"), (4.0, "fast2")])
def test_openai_speed_maps_to_the_speed_tags(speed, name):
    assert speed_name(speed) == name


def test_understand_combines_tags_free_text_speed_and_the_text_language():
    assert understand("(高兴1)(粤语)", text="今天天气好") == Instruction("happy", 1, "cantonese")
    assert understand("(悲伤3) very fast", text="Hello.") == Instruction("sad", 3, "english", speed="fast2")
    assert understand(None, speed=1.5, text="Hello.") == Instruction(dialect="english", speed="fast1")
    assert understand("", text="こんにちは").dialect == "japanese"
    assert understand("fast", speed=1.0, text="Hi.").speed == "fast1"  # the default speed defers
    for instructions, speed, text, message in [
            ("slow", 2.0, "Hi.", "contradicts"), ("Cantonese", None, "Hello.", "reads zh text"),
            (None, 9.0, "Hi.", "between 0.25 and 4.0"), ("(开心9)", None, "Hi.", "unknown tag"),
            ("(高兴1) sad", None, "Hi.", "two emotions"), (None, None, "123 !", "no letters")]:
        with pytest.raises(InstructionError, match=message):
            understand(instructions, speed, text)


# -- the server ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student(tmp_path_factory):
    from engine.models import build_student, export

    return export(build_student("step1", "tiny", seed=0, num_hidden_layers=2),
                  tmp_path_factory.mktemp("serve") / "student")


@pytest.fixture(scope="module")
def service(student):
    from pipelines.serve.service import SpeechService

    svc = SpeechService(student, engine="torch", max_seconds=MAX_SECONDS, max_batch=8)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def server(service):
    """The open server (no key, 64 pending requests)."""
    from pipelines.serve.app import create_app

    srv = ServerThread(create_app(service))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def guarded(service):
    """The same service behind a bearer key and a limit of one pending speech request."""
    from pipelines.serve.app import create_app

    srv = ServerThread(create_app(service, api_key=KEY, max_pending=1, max_body=64 << 10))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _speech(**fields) -> dict:
    return {"model": "student", "input": "Hello there.", "voice": "default", "response_format": "wav", **fields}


def _metric(url: str, name: str, headers=None) -> float:
    """Sum of the samples of metric ``name`` (all labels) in /metrics."""
    text = httpx.get(f"{url}/metrics", headers=headers).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and (line[len(name)] in "{ "))


def _settled(url: str, name: str, headers=None) -> float:
    """A gauge once pending work has drained (a stream frees its slot just after its last byte)."""
    deadline = time.monotonic() + 30
    while (value := _metric(url, name, headers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def test_sdk_speech_is_a_wav_of_the_capped_length_and_a_seed_repeats_it(client):
    first = client.audio.speech.create(model="student", voice="amy", input="Hello there.", response_format="wav",
                                       extra_body={"seed": 3})
    wav, sr = sf.read(io.BytesIO(first.content), dtype="float32")
    assert sr == 16000 and 0 < len(wav) <= MAX_SECONDS * sr and np.abs(wav).max() > 0
    again = client.audio.speech.create(model="student", voice="amy", input="Hello there.", response_format="wav",
                                       extra_body={"seed": 3})
    other = client.audio.speech.create(model="tts-1", voice="amy", input="Hello there.", response_format="wav",
                                       extra_body={"seed": 4})
    assert again.content == first.content and other.content != first.content


def test_sdk_streams_audio_chunks_and_sse_events_of_the_same_audio(client):
    with client.audio.speech.with_streaming_response.create(
            model="student", voice="lin", input="今天天气很好。", response_format="pcm",
            instructions="sad, intensity 4, Cantonese, a bit fast", extra_body={"seed": 5}) as resp:
        assert resp.headers["content-type"] == "audio/pcm" and resp.headers["x-sample-rate"] == "24000"
        assert "x-audio-seconds" not in resp.headers  # streamed: the length is not known when headers go
        chunks = list(resp.iter_bytes())
    pcm = b"".join(chunks)
    with client.audio.speech.with_streaming_response.create(
            model="student", voice="lin", input="今天天气很好。", response_format="pcm", stream_format="sse",
            instructions="sad, intensity 4, Cantonese, a bit fast", extra_body={"seed": 5}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in resp.iter_lines() if line.startswith("data: ")]
    deltas, done = events[:-1], events[-1]
    assert len(deltas) > 1 and all(e["type"] == "speech.audio.delta" for e in deltas)  # pieces as they settle
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == pcm
    assert done["type"] == "speech.audio.done" and done["voice"] == "lin"
    usage = done["usage"]
    seconds = usage["output_tokens"] / 5 * 0.12
    assert 0 < seconds <= MAX_SECONDS and len(pcm) == 2 * round(seconds * 24000)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] and usage["input_tokens"] > 400
    assert done["instruction"]["tags"] == "(悲伤4)(粤语)(快速1)"


def test_every_encodable_format_decodes_and_aac_is_refused(server):
    for fmt in ("flac", "mp3", "opus", "wav"):
        r = httpx.post(f"{server.url}/v1/audio/speech", json=_speech(response_format=fmt, seed=1), timeout=120)
        assert r.status_code == 200, r.text
        wav, sr = sf.read(io.BytesIO(r.content))
        assert sr == 16000 and len(wav) > 0, fmt
    default = {k: v for k, v in _speech(seed=1).items() if k != "response_format"}
    r = httpx.post(f"{server.url}/v1/audio/speech", json=default, timeout=120)
    assert r.headers["content-type"] == "audio/mpeg" and sf.read(io.BytesIO(r.content))[1] == 16000  # OpenAI's default
    r = httpx.post(f"{server.url}/v1/audio/speech", json=_speech(response_format="aac"), timeout=30)
    assert r.status_code == 400 and "wav, flac, pcm" in r.json()["error"]["message"]


def test_instructions_and_speed_reach_the_prompt(service):
    from engine.prompts import ByteTokenizer

    tok = ByteTokenizer()
    prompt = service.prepare("今天天气好", understand("(高兴2) 很慢", text="今天天气好"), voice="mei")
    text = tok.decode(prompt.ids)
    assert "(高兴2)(中文)(慢速2)今天天气好" in text
    assert "[mei]" in text and service.builtin["mei"].text in text  # the clone turn
    prompt = service.prepare("Hi.", understand(None, speed=0.7, text="Hi."), seed=9, sampling={"temperature": 0.2})
    assert "(英文)(慢速1)Hi." in tok.decode(prompt.ids)
    assert prompt.params.seed == 9 and prompt.params.temperature == 0.2 and prompt.params.audio_constraint


BAD = [  # (body, status, param, code); the body is JSON unless it is bytes
    (b"{not json", 400, None, "invalid_json"),
    (b"[1, 2]", 400, None, "invalid_json"),
    ({"model": "student"}, 400, "input", "invalid_value"),
    (_speech(input=""), 400, "input", "empty_input"),
    (_speech(input="  \n "), 400, "input", "empty_input"),
    (_speech(input="a" * 4097), 400, "input", "string_above_max_length"),
    (_speech(voice="alloy"), 400, "voice", "voice_not_found"),
    (_speech(voice={"id": "../../etc/passwd"}), 400, "voice", "voice_not_found"),
    (_speech(response_format="ogg"), 400, "response_format", "unsupported_format"),
    (_speech(stream_format="chunks"), 400, "stream_format", "invalid_value"),
    (_speech(speed=9), 400, "speed", "invalid_value"),
    (_speech(speed="fast"), 400, "speed", "invalid_value"),
    (_speech(temperature=-1), 400, "temperature", "invalid_value"),
    (_speech(top_p=0), 400, "top_p", "invalid_value"),
    (_speech(seed="x"), 400, "seed", "invalid_value"),
    (_speech(instructions="like a pirate"), 400, "instructions", "invalid_instructions"),
    (_speech(instructions="Cantonese"), 400, "instructions", "invalid_instructions"),
    (_speech(model="gpt-5"), 404, "model", "model_not_found"),
]


@pytest.mark.parametrize("body, status, param, code", BAD)
def test_bad_input_gets_a_4xx_in_openai_error_shape(server, body, status, param, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{server.url}/v1/audio/speech", content=content, headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["param"], error["code"]) == (param, code)


def test_unknown_routes_oversize_bodies_and_the_server_keeps_serving(guarded, server):
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{server.url}/v1/nothing").status_code == 404
    assert httpx.get(f"{server.url}/v1/audio/speech").json()["error"]["message"] == "no route GET /v1/audio/speech"
    big = httpx.post(f"{guarded.url}/v1/audio/speech", content=b"x" * (65 << 10), headers=auth)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_routes_list_the_model_the_voices_and_health(server, client):
    assert [m.id for m in client.models.list()] == ["student"]
    voices = httpx.get(f"{server.url}/v1/audio/voices").json()["data"]
    assert voices[0]["id"] == "default" and {"amy", "lin"} <= {v["id"] for v in voices}
    assert all(v["transcript"] for v in voices if v["type"] == "builtin")
    health = httpx.get(f"{server.url}/health").json()
    assert health["engine"] == "torch" and health["max_seconds"] == MAX_SECONDS and health["codec"].startswith("melvq")


def test_bearer_auth_guards_every_route_but_health(guarded):
    from openai import AuthenticationError, OpenAI

    assert httpx.get(f"{guarded.url}/health").status_code == 200
    for path in ("/v1/models", "/v1/audio/voices", "/metrics"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
            r = httpx.get(f"{guarded.url}{path}", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", (path, headers)
        assert httpx.get(f"{guarded.url}{path}", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{guarded.url}/v1", api_key="wrong", max_retries=0).audio.speech.create(
            model="student", voice="default", input="Hi.")
    ok = OpenAI(base_url=f"{guarded.url}/v1", api_key=KEY, max_retries=0, timeout=120).audio.speech.create(
        model="student", voice="default", input="Hi.", response_format="flac")
    assert sf.read(io.BytesIO(ok.content))[1] == 16000


def test_the_concurrency_limit_answers_429_with_retry_after(guarded):
    auth = {"Authorization": f"Bearer {KEY}"}
    results: list = []
    for _attempt in range(3):  # four at once against a limit of one: some must be refused
        barrier = threading.Barrier(4)

        def one(seed):
            barrier.wait()
            results.append(httpx.post(f"{guarded.url}/v1/audio/speech", json=_speech(seed=seed), headers=auth,
                                      timeout=120))

        threads = [threading.Thread(target=one, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(r.status_code == 429 for r in results):
            break
    refused = [r for r in results if r.status_code == 429]
    assert refused and any(r.status_code == 200 for r in results)
    assert {r.status_code for r in results} <= {200, 429}
    assert refused[0].headers["retry-after"] == "1" and refused[0].json()["error"]["type"] == "rate_limit_error"
    assert _metric(guarded.url, "stepforge_rejected_total", auth) >= len(refused)


def test_sixteen_concurrent_streams_complete_and_match_their_one_at_a_time_audio(server, client):
    def one(seed, fmt="pcm"):
        with client.audio.speech.with_streaming_response.create(
                model="student", voice="amy" if seed % 2 else "default", input=f"Sentence number {seed}.",
                response_format=fmt, extra_body={"seed": seed}) as resp:
            return b"".join(resp.iter_bytes())

    steps_before = _metric(server.url, "stepforge_batch_size_count")
    rows_before = _metric(server.url, "stepforge_batch_size_sum")
    out: dict = {}
    threads = [threading.Thread(target=lambda s=s: out.__setitem__(s, one(s))) for s in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(16)) and all(out.values())
    steps = _metric(server.url, "stepforge_batch_size_count") - steps_before
    rows = _metric(server.url, "stepforge_batch_size_sum") - rows_before
    assert rows / steps > 1.5  # the streams shared decoding steps
    for seed in (0, 5):  # a seeded request sounds the same whatever else shared its batch
        assert one(seed) == out[seed]
    assert _settled(server.url, "stepforge_requests_running") == 0


def test_a_full_engine_queue_answers_503_with_retry_after(service):
    from pipelines.serve.app import create_app

    srv = ServerThread(create_app(service, max_queue=0))
    try:
        r = httpx.post(f"{srv.url}/v1/audio/speech", json=_speech(seed=1), timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "engine_overloaded" and r.json()["error"]["type"] == "server_error"
        assert httpx.get(f"{srv.url}/health").status_code == 200
    finally:
        srv.stop()


def test_a_client_that_leaves_mid_stream_frees_its_slot(student):
    from pipelines.serve.app import create_app
    from pipelines.serve.service import SpeechService

    service = SpeechService(student, engine="torch", max_seconds=30, max_batch=4)  # long enough to leave
    server = ServerThread(create_app(service))
    try:
        with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=_speech(response_format="pcm", seed=2),
                          timeout=120) as r:
            assert r.status_code == 200
            next(r.iter_raw(1024))
        assert _settled(server.url, "stepforge_requests_running") == 0
        assert _metric(server.url, "stepforge_cancelled_total") == 1
        deadline = time.monotonic() + 30
        while service.scheduler.running and time.monotonic() < deadline:  # its row left the engine's batch
            time.sleep(0.05)
        assert service.scheduler.running == 0
        assert httpx.post(f"{server.url}/v1/audio/speech", json=_speech(seed=2, input="Hi."),
                          timeout=120).status_code == 200
    finally:
        server.stop()
        service.close()


def test_metrics_count_requests_by_route_and_status(server):
    httpx.post(f"{server.url}/v1/audio/speech", json=_speech(voice="nobody"))
    httpx.post(f"{server.url}/v1/audio/speech", json=_speech(seed=1), timeout=120)
    text = httpx.get(f"{server.url}/metrics").text
    assert 'stepforge_requests_total{route="/v1/audio/speech",status="400"}' in text
    assert 'stepforge_requests_total{route="/v1/audio/speech",status="200"}' in text
    for name in ("stepforge_time_to_first_audio_seconds_count", "stepforge_audio_seconds_total",
                 "stepforge_generated_ids_total", "stepforge_real_time_factor_count"):
        assert _metric(server.url, name) > 0, name
    assert _settled(server.url, "stepforge_requests_running") == 0
    assert _metric(server.url, "stepforge_requests_queued") == 0


# -- the command -----------------------------------------------------------------------------------

def test_serve_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch, student):
    monkeypatch.delenv("SERVE_TEST_KEY", raising=False)
    for argv, message in [(["serve", str(tmp_path / "none")], "no such student directory"),
                          (["serve", str(student), "--api-key-env", "SERVE_TEST_KEY"], "SERVE_TEST_KEY"),
                          (["serve", str(student), "--codec", str(tmp_path / "x.npz")], "no such codec weights")]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("stepforge serve: error:") and message in err and "\n" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", str(student), "--port", str(busy.getsockname()[1])]) == 2
        assert "cannot listen on" in capsys.readouterr().err


def test_the_serve_command_serves_with_a_key(student):
    port = free_port()
    env = {**cli_env(), "SERVE_TEST_KEY": KEY}
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", str(student), "--port", str(port),
                             "--engine", "torch", "--max-seconds", str(MAX_SECONDS), "--api-key-env", "SERVE_TEST_KEY"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "stepforge serve did not start"
                time.sleep(0.5)
        r = httpx.post(f"{url}/v1/audio/speech", json=_speech(), headers={"Authorization": f"Bearer {KEY}"},
                       timeout=120)
        assert r.status_code == 200 and sf.read(io.BytesIO(r.content))[1] == 16000
        assert httpx.post(f"{url}/v1/audio/speech", json=_speech()).status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert f"on http://127.0.0.1:{port}/v1/audio/speech" in out


# -- registered voices ------------------------------------------------------------------------------

def _wav_bytes(wav: np.ndarray, fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, 16000, format=fmt)
    return buf.getvalue()


def test_a_registered_voice_is_tokenized_once_listed_used_and_deleted(server, client, service):
    amy = service.builtin["amy"]
    made = client.audio.voices.create(name="narrator", audio_sample=("amy.wav", open(amy.wav_path, "rb")),
                                      consent="mine", extra_body={"transcript": amy.text})
    assert (made.id, made.type) == ("narrator", "audio_sample")
    stored = sorted(p.name for p in (service.student / "voices").iterdir())
    assert stored == ["narrator.ids.npy", "narrator.json", "narrator.txt", "narrator.wav"]
    listed = {v["id"]: v for v in httpx.get(f"{server.url}/v1/audio/voices").json()["data"]}
    assert listed["narrator"]["type"] == "audio_sample" and listed["narrator"]["transcript"] == amy.text
    # the stored ids are the clone turn: the same audio ids as the built-in prompt of the same wav
    layout = service.teacher.layout
    audio = lambda ids: [i for i in ids if i >= layout.vq02_offset]  # noqa: E731
    mine = service.prepare("Hi.", understand(None, text="Hi."), voice="narrator")
    theirs = service.prepare("Hi.", understand(None, text="Hi."), voice="amy")
    assert audio(mine.ids) == audio(theirs.ids) and len(audio(mine.ids)) == len(np.load(
        service.student / "voices" / "narrator.ids.npy"))
    with client.audio.speech.with_streaming_response.create(model="student", voice="narrator", input="Hi.",
                                                            response_format="wav", stream_format="sse") as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1]["voice"] == "narrator" and len(events) >= 2
    assert client.audio.voices.delete("narrator").deleted
    assert not any((service.student / "voices").iterdir())
    r = httpx.post(f"{server.url}/v1/audio/speech", json=_speech(voice="narrator"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "voice_not_found"


def test_bad_voice_registrations_are_refused_and_nothing_leaves_the_store(server, service, tmp_path):
    amy = open(service.builtin["amy"].wav_path, "rb").read()
    noise = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    cases = [  # (form fields, files, status, param, message)
        ({"name": "../../escape", "transcript": "x"}, {"audio": amy}, 400, "name", "must be 1-64 letters"),
        ({"name": "a/b", "transcript": "x"}, {"audio": amy}, 400, "name", "must be 1-64 letters"),
        ({"name": "amy", "transcript": "x"}, {"audio": amy}, 409, "name", "built in"),
        ({"name": "v1", "transcript": " "}, {"audio": amy}, 400, "transcript", "transcript is empty"),
        ({"name": "v1", "transcript": "x"}, {"audio": b"not audio at all"}, 400, "audio", "cannot read audio"),
        ({"name": "v1", "transcript": "x"}, {"audio": _wav_bytes(np.zeros(16000, np.float32))}, 400, "audio",
         "silent"),
        ({"name": "v1", "transcript": "x"}, {"audio": _wav_bytes(noise[:3000], "FLAC")}, 400, "audio", "0.19 s long"),
        ({"name": "v1", "transcript": "x"}, {}, 400, "audio", "attach the prompt audio"),
    ]
    for data, files, status, param, message in cases:
        r = httpx.post(f"{server.url}/v1/audio/voices", data=data, files=files, timeout=60)
        error = r.json()["error"]
        assert (r.status_code, error["param"]) == (status, param) and message in error["message"], (data, r.text)
    r = httpx.post(f"{server.url}/v1/audio/voices", json={"name": "v1"})
    assert r.status_code == 400 and r.json()["error"]["code"] in ("invalid_form", "missing_audio")
    assert httpx.delete(f"{server.url}/v1/audio/voices/amy").status_code == 400
    assert httpx.delete(f"{server.url}/v1/audio/voices/nobody").status_code == 404
    voices = service.student / "voices"
    assert not voices.exists() or not any(voices.iterdir())
    assert not (service.student.parent / "escape").exists() and not (service.student / "escape.wav").exists()


# -- long input ------------------------------------------------------------------------------------

def test_pieces_split_at_sentence_ends_and_group_up_to_the_length():
    from pipelines.serve.text import piece_chars, pieces, sentences

    assert sentences("It costs 3.5 dollars. Really? Yes!") == ["It costs 3.5 dollars.", "Really?", "Yes!"]
    assert sentences("今天天气很好。我们去公园吧！好") == ["今天天气很好。", "我们去公园吧！", "好"]
    assert pieces("One. Two! Three? 四。五！", max_chars=9) == ["One. Two!", "Three? 四。", "五！"]
    assert pieces("A very long sentence stays whole.", max_chars=5) == ["A very long sentence stays whole."]
    assert piece_chars(30, "en") > piece_chars(30, "zh") >= 1 and piece_chars(0.01, "zh") == 1


LONG = "The first sentence. The second one! And a third?"


def test_long_input_is_generated_in_pieces_with_one_voice_and_streamed_in_order(server, service):
    texts = ["The first sentence.", "The second one!", "And a third?"]
    prompts = [service.prepare(t, understand(None, text=t), voice="amy") for t in texts]
    body = _speech(input=LONG, voice="amy", seed=11, response_format="pcm")
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=120) as r:
        assert r.headers["x-pieces"] == "3" and "x-audio-seconds" not in r.headers
        pcm = b"".join(r.iter_bytes())
    assert len(pcm) > 2 * MAX_SECONDS * 24000  # more audio than one generation may make: several pieces
    events = [json.loads(line[6:]) for line in httpx.post(f"{server.url}/v1/audio/speech", timeout=120, json={
        **body, "stream_format": "sse"}).text.splitlines() if line.startswith("data: ")]
    done = events[-1]
    assert done["pieces"] == texts and b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == pcm
    assert done["usage"]["input_tokens"] == sum(len(p.ids) for p in prompts)  # each piece had the clone turn
    wav_stream = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "response_format": "wav"}, timeout=120)
    assert wav_stream.content[4:8] == b"\xff\xff\xff\xff"  # a header of unknown length, then the pieces
    wav, sr = sf.read(io.BytesIO(wav_stream.content), dtype="int16")
    assert sr == 16000 and len(wav) == round(len(pcm) / 2 * 16000 / 24000)
    flac = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "response_format": "flac"}, timeout=120)
    assert flac.headers["x-pieces"] == "3" and len(sf.read(io.BytesIO(flac.content))[0]) == len(wav)


def test_a_rope_student_streams_through_vllm(vllm_engine, tiny_rope_dir):
    from pipelines.serve.app import create_app
    from pipelines.serve.service import SpeechService

    service = SpeechService(tiny_rope_dir, engine="vllm", max_seconds=MAX_SECONDS, lm=vllm_engine)
    server = ServerThread(create_app(service))
    try:
        assert httpx.get(f"{server.url}/health").json()["engine"] == "vllm"
        body = {**_speech(model=tiny_rope_dir.name, response_format="pcm"), "stream_format": "sse"}
        out: dict = {}

        def one(seed):
            r = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "seed": seed}, timeout=300)
            out[seed] = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]

        threads = [threading.Thread(target=one, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for events in out.values():
            pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
            done = events[-1]
            assert done["type"] == "speech.audio.done" and done["usage"]["output_tokens"] % 5 == 0
            assert len(pcm) == 2 * round(done["usage"]["output_tokens"] / 5 * 0.12 * 24000)
        assert _metric(server.url, "stepforge_batch_size_sum") > _metric(server.url, "stepforge_batch_size_count")
        again = httpx.post(f"{server.url}/v1/audio/speech", json={**body, "seed": 2}, timeout=300).text
        assert [json.loads(line[6:]) for line in again.splitlines() if line.startswith("data: ")] == out[2]
    finally:
        server.stop()
        service.close()
