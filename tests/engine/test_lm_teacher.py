"""LM teachers (torch:, vllm:, http:): prompts, Step-Audio-layout outputs that deinterleave,
top-k arrays, per-row errors, teacher ids and resources, and the SentencePiece tokenizer."""
import json
import shutil

import numpy as np
import pytest

from engine.models import build_student, export
from engine.lm import TorchEngine
from engine.lm.text_tokenizer import SentencePieceTokenizer, load_tokenizer
from engine.prompts import ByteTokenizer, build_tts_prompt
from engine.task import Task
from engine.teachers import LMTeacher, make_teacher
from engine.teachers.lm import convert_layout
from engine.tokens import STEP_AUDIO, deinterleave
from engine.instructions import Instruction
from tests.engine.openai_server import CompletionServer

COMPACT = ByteTokenizer().layout()


def tasks(n, **kw):
    texts = ["Hello there.", "The weather is lovely.", "今天天气很好。", "Read this slowly."]
    langs = ["en", "en", "zh", "en"]
    dialects = ["english", "english", "mandarin", "english"]
    return [Task(id=f"t{i}", text=texts[i % 4], lang=langs[i % 4], dialect=dialects[i % 4],
                 emotion="happy" if i % 2 else "neutral", intensity=2 if i % 2 else 0, seed=i, **kw)
            for i in range(n)]


def check_outputs(outs, n, k):
    assert len(outs) == n
    for out in outs:
        assert not out.error, out.error
        assert out.tokens.dtype == np.int32 and out.tokens.size % 5 == 0
        vq02, vq06 = deinterleave(out.tokens)  # the Step-Audio layout the synthesize job expects
        assert len(vq02) and max(vq02) < 1024 and max(vq06) < 4096
        assert out.info["finish_reason"] in ("stop", "length")
        if k:
            ids, lp = out.topk["ids"], out.topk["logprobs"]
            assert ids.shape == lp.shape == (out.tokens.size, k)
            assert ids.dtype == np.int32 and lp.dtype == np.float16
            assert np.all(lp <= 0) and np.all(np.diff(lp.astype(np.float32), axis=1) <= 0)
        else:
            assert out.topk is None


def test_torch_teacher(tiny_rope_dir):
    teacher = make_teacher(f"torch:{tiny_rope_dir}?topk=3&max_seconds=1.2&threads=1")
    assert teacher.id.startswith("torch:tiny-rope@") and teacher.resources == {"num_cpus": 1, "num_gpus": 0}
    outs = teacher.synthesize(tasks(4))
    check_outputs(outs, 4, 3)
    assert all(o.tokens.size <= 50 for o in outs)  # 1.2 s = 10 groups
    again = make_teacher(f"torch:{tiny_rope_dir}?topk=3&max_seconds=1.2&threads=1").synthesize(tasks(4))
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(outs, again))  # task seeds


def test_vllm_teacher_with_the_shared_engine(vllm_engine, tiny_rope_dir):
    teacher = LMTeacher(f"vllm:{tiny_rope_dir}?topk=4&max_seconds=3", engine=vllm_engine)
    outs = teacher.synthesize(tasks(8))
    check_outputs(outs, 8, 4)
    # the upstream decoding defaults reach the engine
    p = teacher.sampling_params(tasks(1)[0])
    assert p.temperature == 0.7 and p.audio_constraint.repeats == 2 and p.audio_constraint.window == 10


def test_vllm_teacher_resources_and_id(tiny_rope_dir, tmp_path):
    import os

    teacher = make_teacher(f"vllm:{tiny_rope_dir}")
    assert teacher.resources == {"num_cpus": os.cpu_count(), "num_gpus": 0}
    assert teacher.id.startswith("vllm:tiny-rope@")
    assert make_teacher(f"vllm:{tiny_rope_dir}?topk=2").id != teacher.id  # options enter the id
    other = shutil.copytree(tiny_rope_dir, tmp_path / "tiny-rope")
    assert make_teacher(f"vllm:{other}").id == teacher.id  # content, not path
    export(build_student("llama", "tiny", seed=1, num_hidden_layers=2), other)
    assert make_teacher(f"vllm:{other}").id != teacher.id  # new weights, new id


def test_per_row_errors_never_fail_the_batch(vllm_engine, tiny_rope_dir):
    teacher = LMTeacher(f"vllm:{tiny_rope_dir}?max_seconds=1", engine=vllm_engine)
    batch = tasks(4)
    batch[1] = Task(id="long", text="word " * 600, lang="en", dialect="english")  # > 2048 ids
    batch[2] = Task(id="mismatch", text="Hello.", lang="en", dialect="cantonese")
    batch[3] = Task(id="nobody", text="Hello.", lang="en", dialect="english", speaker="nobody")
    outs = teacher.synthesize(batch)
    assert not outs[0].error and outs[0].tokens.size
    assert "context" in outs[1].error and outs[1].tokens is None
    assert outs[2].error.startswith("prompt failed") and outs[3].error.startswith("prompt failed")
    assert "not built in" in outs[3].error


def test_http_teacher_matches_torch_teacher(tiny_rope_dir):
    engine = TorchEngine(tiny_rope_dir, num_threads=1)
    with CompletionServer(engine, max_model_len=4096) as srv:
        teacher = make_teacher(f"http:{srv.url}?topk=2&max_seconds=1")
        assert teacher.id.startswith("http:127.0.0.1:") and teacher.resources["num_cpus"] == 1
        outs = teacher.synthesize(tasks(3))
    check_outputs(outs, 3, 2)
    local = LMTeacher(f"torch:{tiny_rope_dir}?topk=2&max_seconds=1", engine=engine).synthesize(tasks(3))
    for a, b in zip(outs, local):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.topk["ids"], b.topk["ids"])


def test_http_teacher_server_down_gives_row_errors():
    teacher = make_teacher("http://127.0.0.1:1?retries=1&timeout=2")
    outs = teacher.synthesize(tasks(3))
    assert all("unreachable" in o.error and o.tokens is None for o in outs)


def test_clone_prompt_from_a_builtin_speaker(tiny_rope_dir):
    from engine.codec import load_codec

    codec = load_codec("melvq")
    teacher = LMTeacher(f"torch:{tiny_rope_dir}?max_seconds=1&threads=1", codec=codec)
    task = Task(id="c", text="Hello there.", lang="en", dialect="english", speaker="amy")
    clone = teacher.clone_prompt(task)
    assert clone.text and len(clone.audio_ids) % 5 == 0
    deinterleave(clone.audio_ids, COMPACT)  # codec ids moved into the student's layout
    prompt = teacher.prompt(task)
    assert len(prompt) > len(teacher.prompt(Task(id="p", text="Hello there.", lang="en",
                                                 dialect="english")))
    check_outputs(teacher.synthesize([task]), 1, 0)


def test_bad_specs_fail_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="unknown torch option 'tp'"):
        make_teacher(f"torch:{tmp_path}?tp=2")
    with pytest.raises(ValueError, match="no config.json"):
        make_teacher(f"vllm:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="not an http"):
        make_teacher("http:ftp://host/x")
    with pytest.raises(ValueError, match="bad port"):
        make_teacher("http://127.0.0.1:99999999")
    with pytest.raises(ValueError, match="unknown teacher"):
        make_teacher("espeak")


def test_convert_layout_moves_audio_ids_only():
    ids = np.array([[3, COMPACT.vq02_offset, COMPACT.vq06_offset + 5, -1]])
    out = convert_layout(ids, COMPACT, STEP_AUDIO)
    assert out.tolist() == [[3, STEP_AUDIO.vq02_offset, STEP_AUDIO.vq06_offset + 5, -1]]
    assert convert_layout(out, STEP_AUDIO, COMPACT).tolist() == ids.tolist()


def test_sentencepiece_tokenizer_for_a_step_audio_dir(tmp_path):
    spm = pytest.importorskip("sentencepiece")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["hello there how are you", "the weather is lovely today",
                                 "please read this sentence slowly", "system human assistant"] * 20))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=40, hard_vocab_limit=False,
        user_defined_symbols=["<|EOT|>", "<|BOT|>"], bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        minloglevel=2)
    d = tmp_path / "step-audio"
    d.mkdir()
    shutil.move(tmp_path / "tokenizer.model", d / "tokenizer.model")
    (d / "config.json").write_text(json.dumps({"model_type": "step1", "vocab_size": 74752}))
    tok, layout = load_tokenizer(d, json.loads((d / "config.json").read_text()))
    assert isinstance(tok, SentencePieceTokenizer) and layout == STEP_AUDIO
    assert (tok.bos, tok.eot, tok.bot) == (1, 3, 4)
    assert tok.decode(tok.encode("hello there")) == "hello there"
    ids = build_tts_prompt("hello there", Instruction(dialect="english"), tok)
    assert ids[:2] == [1, 4] and ids[-1] != tok.eot and max(ids) < tok.text_size
