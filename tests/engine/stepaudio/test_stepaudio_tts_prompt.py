"""engine.stepaudio.tts_prompt against upstream's tts.py on the tiny tokenizer (goldens/tts_prompt).

The goldens come from goldens/make_tts_prompt.py (upstream code, transformers 4.48.3); every id
must match exactly.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine.errors import MissingModel
from engine.stepaudio import tts_prompt as tp
from manifests.errors import UserError
from tests.engine.stepaudio.tiny_tts3b import write_tiny_tts3b

GOLDEN = json.loads((Path(__file__).parent / "goldens/tts_prompt/cases.json").read_text(encoding="utf-8"))
CONFIGS = sorted(GOLDEN["configs"])


@pytest.fixture(scope="module")
def tts_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tts3b")
    return {name: write_tiny_tts3b(root / name, seed=0, weights=False, **GOLDEN["configs"][name]["overrides"])
            for name in CONFIGS}


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speakers")
    (folder / "speakers_info.json").write_text(json.dumps(GOLDEN["speakers"], ensure_ascii=False), encoding="utf-8")
    for key in GOLDEN["speakers"]:
        (folder / f"{key}_prompt.wav").write_bytes(b"RIFF")  # only the path is used here
    return tp.BuiltinSpeakers.from_dir(folder)


def test_tiny_tokenizer_is_the_goldens_one(tts_dirs):
    for path in tts_dirs.values():
        digest = hashlib.sha256((path / "tokenizer.model").read_bytes()).hexdigest()
        assert digest == GOLDEN["tokenizer_model_sha256"], (
            "the tiny tokenizer.model differs from the one the goldens were made with: "
            "rerun goldens/make_tts_prompt.py")


def test_special_pieces(tts_dirs):
    tok = tp.StepTextTokenizer.from_dir(tts_dirs["default"])
    assert [tok.sp.id_to_piece(i) for i in range(5)] == ["<unk>", "<s>", "</s>", "<|EOT|>", "<|BOT|>"]
    assert (tok.bos, tok.eos) == (1, 2)


def test_system_prompts_are_upstreams():
    up = GOLDEN["system_prompts"]
    assert tp.RAP_PROMPT == up["sys_prompt_for_rap"]
    assert tp.HUMMING_PROMPT == up["sys_prompt_for_vocal"]
    assert tp.actor_prompt() == up["sys_prompt_wo_spk"]
    assert tp.actor_prompt("Tingting") == up["sys_prompt_with_spk"].format("Tingting")


@pytest.mark.parametrize("config", CONFIGS)
def test_encode_parity(tts_dirs, config):
    tok = tp.StepTextTokenizer.from_dir(tts_dirs[config])
    for text, ids in GOLDEN["configs"][config]["encode"].items():
        assert tok.encode(text) == ids, text


def _cases(config):
    return [pytest.param(config, i, id=f"{config}-{i}") for i in range(len(GOLDEN["configs"][config]["cases"]))]


@pytest.mark.parametrize("config, index", [p for c in CONFIGS for p in _cases(c)])
def test_prompt_parity(tts_dirs, speakers, config, index):
    case = GOLDEN["configs"][config]["cases"][index]
    text, speaker = case["text"], case["speaker"]
    assert tp.instruction_name(text) == case["instruction_name"]
    if "error" in case:  # upstream fails with a KeyError: a built-in speaker without the variant
        with pytest.raises(UserError, match="no RAP variant"):
            speakers.prompt(speaker, text)
        return
    if speaker is None:  # a clone prompt: no speaker entry, no name in the system prompt
        prompt_text, name = case["clone_text"], ""
    else:
        voice = speakers.prompt(speaker, text)
        assert voice.key == case["speaker_key"]
        assert voice.wav.name == f"{voice.key}_prompt.wav"
        prompt_text, name = voice.text, speaker
    prompter = tp.TTSPrompter.from_dir(tts_dirs[config])
    assert prompter.build(text, prompt_text, case["prompt_code"], speaker=name) == case["ids"]
    decoder = "CosyVoice-300M-25Hz-Music" if tp.is_music(text) else "CosyVoice-300M-25Hz"
    assert decoder == case["decoder"]
    assert tp.decoder_tokens(case["generated"]) == case["tokens"]
    gen = case["generate"]
    assert (gen["max_length"], gen["temperature"], gen["do_sample"]) == (tp.MAX_LENGTH, tp.TEMPERATURE, True)
    assert gen["logits_processor"] == ["RepetitionAwareLogitsProcessor"]


def test_repetition_guard_parity():
    for row in GOLDEN["repetition"]:
        expected = row["banned"][0] if row["banned"] else None
        assert tp.repetition_ban(row["ids"]) == expected, row["ids"]
    assert any(r["banned"] for r in GOLDEN["repetition"]) and any(not r["banned"] for r in GOLDEN["repetition"])


def test_generation_budget():
    assert tp.max_new_tokens(8000) == 192 and tp.max_new_tokens(9000) == 0
    assert tp.TOP_K == 50


def test_music_tags():
    assert tp.is_music("（RAP）x") and tp.is_music("(哼唱)x") and tp.is_music("(RAP）x")
    assert not tp.is_music("(中文)(RAP)x") and not tp.is_music("RAP") and not tp.is_music("x(RAP)")
    assert tp.system_prompt("（RAP）我会哼唱") == tp.HUMMING_PROMPT
    assert tp.system_prompt("(高兴1)好", "Tingting") == tp.actor_prompt("Tingting")


def test_tagged_text_puts_the_style_first():
    from engine.instructions import Instruction

    rap = tp.tagged_text("我们走", Instruction(style="rap", speed="fast1"))
    assert rap == "(RAP)(中文)(快速1)我们走" and tp.is_music(rap)
    hum = tp.tagged_text("la", Instruction(style="humming", dialect="cantonese"))
    assert tp.instruction_name(hum) == "哼唱" and tp.system_prompt(hum) == tp.HUMMING_PROMPT
    happy = tp.tagged_text("好", Instruction(emotion="happy", intensity=2, dialect="cantonese"))
    assert happy == "(高兴2)(粤语)好" and not tp.is_music(happy)


def test_speaker_names(speakers):
    assert speakers.names == ["Tingting", "Alice {A}"]
    with pytest.raises(UserError, match="no speaker 'Bob'") as err:
        speakers.prompt("Bob", "hi")
    assert "Tingting" in str(err.value)


def test_bad_inputs(tts_dirs, tmp_path):
    prompter = tp.TTSPrompter.from_dir(tts_dirs["default"])
    with pytest.raises(UserError, match="outside 65536..70655"):
        prompter.build("hi", "hello", [65536, 70656])
    with pytest.raises(UserError, match="empty text"):
        prompter.build("", "hello", [65536])
    with pytest.raises(MissingModel, match="tokenizer.model: missing"):
        tp.TTSPrompter.from_dir(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="not a SentencePiece model"):
        tp.TTSPrompter.from_dir(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes((tts_dirs["default"] / "tokenizer.model").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text("{nope")
    with pytest.raises(UserError, match="tokenizer_config.json: not valid JSON"):
        tp.TTSPrompter.from_dir(tmp_path)


def test_bad_speaker_folders(tmp_path):
    with pytest.raises(MissingModel, match="speakers_info.json: missing"):
        tp.BuiltinSpeakers.from_dir(tmp_path)
    (tmp_path / "speakers_info.json").write_text(json.dumps({"Tingting": "你好"}))
    with pytest.raises(MissingModel, match="Tingting_prompt.wav: missing"):
        tp.BuiltinSpeakers.from_dir(tmp_path)
    (tmp_path / "speakers_info.json").write_text(json.dumps(["Tingting"]))
    with pytest.raises(UserError, match="expected an object"):
        tp.BuiltinSpeakers.from_dir(tmp_path)


def test_tiny_lm_loads_and_reads_the_prompt(tmp_path):
    import torch

    from engine.lm.text_tokenizer import load_tokenizer
    from engine.models.export import load_student
    from engine.tokens import STEP_AUDIO

    tts_dir = write_tiny_tts3b(tmp_path / "Step-Audio-TTS-3B", seed=0)
    assert json.loads((tts_dir / "model.safetensors.index.json").read_text())["weight_map"]
    model = load_student(tts_dir)
    assert type(model).__name__ == "Step1ForCausalLM" and model.config.vocab_size == 74752
    ids = tp.TTSPrompter.from_dir(tts_dir).build("(高兴1)你好", "hello", [65536 + 7, 66560 + 9])
    with torch.no_grad():
        logits = model(torch.tensor([ids]))
    logits = logits[0] if isinstance(logits, tuple) else getattr(logits, "logits", logits)
    assert logits.shape == (1, len(ids), 74752) and torch.isfinite(logits).all()
    assert load_tokenizer(tts_dir, json.loads((tts_dir / "config.json").read_text()))[1] == STEP_AUDIO
