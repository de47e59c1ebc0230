"""Make goldens/tts_prompt/cases.json: upstream Step-Audio's TTS prompt ids on the tiny TTS-3B tokenizer.

Runs upstream's own ``tts.py`` (github:stepfun-ai/Step-Audio at
a52b94d85d418cd5bc736d696d310c990befbc79, Apache-2.0; never copied into this repository) with
transformers 4.48.3 (upstream's pin) loading the tiny ``tokenizer.model`` that
``tests/engine/stepaudio/tiny_tts3b.py`` writes. Setup, outside the repository:

    git clone https://github.com/stepfun-ai/Step-Audio /root/upstream_e/Step-Audio   # at a52b94d
    .venv/bin/pip install --target /root/upstream_e/site --no-deps \\
        transformers==4.48.3 tokenizers==0.21.0 huggingface-hub==0.27.1
    PYTHONPATH=/root/upstream_e/site:. .venv/bin/python \\
        tests/engine/stepaudio/goldens/make_tts_prompt.py /root/upstream_e/Step-Audio

AutoTokenizer gives LlamaTokenizerFast converted from the SentencePiece model (what upstream
gets too: the released dir has no tokenizer.json). Three tokenizer configs are recorded: the
default (add_bos_token true, legacy unset = true), add_bos_token false, and legacy false.

Upstream's ``StepAudioTTS.__init__`` runs for real with ``AutoTokenizer.from_pretrained(dir,
trust_remote_code=True)``; only what needs the 3B weights or audio is replaced: the LM's
``generate`` returns the prompt plus fixed ids, the two CosyVoice decoders record what they are
given, tensors stay on the CPU, and the speakers' prompt features are placeholders
(``torchaudio``, ``cosyvoice`` and upstream's ``utils`` are stub modules; none of their code
runs here). The rest (sentencepiece, protobuf, torch, numpy) comes from the project's venv. Then ``__call__`` runs for
each case, recording the prompt ids, the decoder it picked, the speaker entry, the ids it decodes
and the generate arguments; and upstream's ``RepetitionAwareLogitsProcessor`` runs on id rows.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[4]
OUT = Path(__file__).resolve().parent / "tts_prompt" / "cases.json"

SPEAKERS = {
    "Tingting": "那等我们到海洋馆之后，给妈妈买个礼物，好不好呀？",
    "TingtingRAP": "（RAP）远远甩开的笑他是陆行龟 他曾跌倒也曾吃过灰 他说他明白How to play",
    "Tingting哼唱": "（哼唱）你从一座叫 我 的小镇经过 刚好屋顶的雪化成雨飘落",
    "Alice {A}": "Hello there, my name is Alice.",
}
# (text, built-in speaker or None for a clone, clone prompt text)
CASES = [
    ("那等我们到海洋馆之后，给妈妈买个礼物，好不好呀？", "Tingting", None),
    ("（RAP）我踏上自由的征途，追逐那遥远的梦想，挣脱束缚的枷锁!", "Tingting", None),
    ("(RAP)我 踏上自由的征途 How to play", "Tingting", None),
    ("(哼唱)你从一座叫 我 的小镇经过", "Tingting", None),
    ("（哼唱）刚好屋顶的雪化成雨飘落", "Tingting", None),
    ("（RAP）我会哼唱也会说唱", "Tingting", None),
    ("(中文)(RAP)我们唱出来", "Tingting", None),
    ("（RAP）（高兴1）我们唱出来", "Tingting", None),
    ("(RAP 没有闭合的括号", "Tingting", None),
    ("(高兴1)(粤语)今天天气很好！We will go to the park.", "Alice {A}", None),
    ("（RAP）Alice has no rap prompt", "Alice {A}", None),
    ("Hello  world,  double  spaces   and a tab\there.", "Alice {A}", None),
    ("第一行\n第二行 line two\n", "Tingting", None),
    ("🎵 音乐 ü é ß ＡＢＣ１２３ （全角）", "Tingting", None),
    ("(快速1)人活一辈子，生老病死，总得是有高峰，有低谷。", None, "叫做秋风起蟹脚痒，啊，什么意思呢？"),
    ("（哼唱）你从一座叫 我 的小镇经过", None, "Hello there, my name is Alice."),
    ("(英文)The quick brown fox says hello again.", None, " leading space and trailing "),
]
ENCODE_STRINGS = ["\n", "human\n", "assistant\n", "system\nhello", "\n你好", " a  b ", "（RAP）", "<|BOT|>",
                  "a<|BOT|>b c<|EOT|>", "x <|EOT|> y", "<s>hi</s>", "ab<|BOT|><|EOT|>",
                  "<|BOT|>human\n", "  two", "\n\n", "a\n b"]


def stub_modules() -> None:
    """torchaudio, cosyvoice and upstream's utils are not needed for prompts: empty stand-ins."""
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    for name in ("cosyvoice", "cosyvoice.cli", "cosyvoice.cli.cosyvoice"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["cosyvoice.cli.cosyvoice"].CosyVoice = lambda path: Decoder(Path(path).name)
    utils = types.ModuleType("utils")
    utils.load_optimus_ths_lib = lambda path: None
    sys.modules["utils"] = utils


def cpu_only() -> None:
    """Upstream moves the prompt to "cuda"; here it stays on the CPU."""
    import torch

    to = torch.Tensor.to
    if getattr(to, "cpu_only", False):
        return

    def stay(self, *args, **kwargs):
        return self if args and args[0] == "cuda" else to(self, *args, **kwargs)

    stay.cpu_only = True
    torch.Tensor.to = stay


class Decoder:
    """Stands in for CosyVoice: records the tokens and which speaker's prompt it was given."""

    calls: list = []

    def __init__(self, name):
        self.name = name

    def token_to_wav_offline(self, tokens, feat, feat_len, prompt_token, prompt_token_len, emb):
        Decoder.calls.append({"decoder": self.name, "tokens": tokens.reshape(-1).tolist(),
                              "prompt_key": int(prompt_token.reshape(-1)[0])})
        return tokens


class LM:
    """Stands in for the 3B model: records generate's arguments, returns prompt + fixed ids."""

    def __init__(self, generated):
        self.generated, self.kwargs, self.prompt = generated, None, None

    def generate(self, input_ids, **kwargs):
        import torch

        self.prompt = input_ids.reshape(-1).tolist()
        self.kwargs = {k: v for k, v in kwargs.items() if k != "logits_processor"}
        self.kwargs["logits_processor"] = [type(p).__name__ for p in kwargs["logits_processor"]]
        return torch.cat([input_ids, torch.tensor([self.generated])], dim=1)


def speaker_info(key_index: int, text: str, code: list[int]) -> dict:
    import torch

    return {"prompt_text": text, "prompt_code": code, "cosy_speech_feat": torch.zeros(1, 4, 80),
            "cosy_speech_feat_len": torch.tensor([4]), "cosy_speech_embedding": torch.zeros(1, 192),
            "cosy_prompt_token": torch.tensor([[key_index]]), "cosy_prompt_token_len": torch.tensor([1])}


def load_upstream(upstream: Path, tts_dir: Path):
    import transformers  # before the stubs: it probes for torchaudio

    stub_modules()
    cpu_only()
    sys.path.insert(0, str(upstream))

    import tts as upstream_tts

    upstream_tts.AutoModelForCausalLM.from_pretrained = staticmethod(lambda *a, **k: None)
    upstream_tts.StepAudioTTS.register_speakers = lambda self: None
    model = upstream_tts.StepAudioTTS(str(tts_dir), encoder=None)
    return upstream_tts, model, transformers.__version__, type(model.tokenizer).__name__


def run_cases(upstream_tts, model, rng) -> list[dict]:
    keys = list(SPEAKERS)
    codes = {k: (65536 + rng.integers(0, 5120, size=10)).tolist() for k in keys}
    model.speakers_info = {k: speaker_info(i, SPEAKERS[k], codes[k]) for i, k in enumerate(keys)}
    clone_code = (65536 + rng.integers(0, 5120, size=15)).tolist()
    generated = (65536 + rng.integers(0, 5120, size=10)).tolist() + [3]
    out = []
    for text, speaker, clone_text in CASES:
        record = {"text": text, "speaker": speaker, "clone_text": clone_text,
                  "instruction_name": model.detect_instruction_name(text)}
        clone = None
        if clone_text is not None:
            clone = {"speaker": "clone", "prompt_text": clone_text, "wav_path": "unused.wav"}
            info = speaker_info(len(keys), clone_text, clone_code)
            model.preprocess_prompt_wav = lambda path, info=info: (
                info["prompt_code"], info["cosy_prompt_token"], info["cosy_prompt_token_len"],
                info["cosy_speech_feat"], info["cosy_speech_feat_len"], info["cosy_speech_embedding"])
            record["prompt_code"] = clone_code
        model.llm = LM(generated)
        Decoder.calls.clear()
        try:
            model(text, speaker or "", clone)
        except KeyError as exc:  # upstream has no such speaker variant
            record["error"] = f"KeyError {exc}"
            out.append(record)
            continue
        call = Decoder.calls[0]
        prompt_key = call.pop("prompt_key")
        key = keys[prompt_key] if prompt_key < len(keys) else None
        record.update(call, speaker_key=key, generate=model.llm.kwargs, generated=generated,
                      ids=model.llm.prompt)
        if key is not None:
            record["prompt_code"] = codes[key]
        out.append(record)
    return out


def repetition_rows(upstream_tts, rng) -> list[dict]:
    import torch

    rows = []
    for n in (5, 9, 10, 11, 16, 30):
        for _ in range(4):
            ids = rng.integers(0, 4, size=n).tolist()
            scores = torch.zeros(1, 8)
            scores = upstream_tts.RepetitionAwareLogitsProcessor()(torch.tensor([ids]), scores)
            banned = torch.isinf(scores[0]).nonzero().reshape(-1).tolist()
            rows.append({"ids": ids, "banned": banned})
    return rows


def compact_json(value, indent: str = "") -> str:
    """JSON with one key per line but lists of numbers on one line (small, diffable)."""
    if isinstance(value, dict) and value:
        inner = indent + " "
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {compact_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        inner = indent + " "
        return "[\n" + ",\n".join(inner + compact_json(v, inner) for v in value) + "\n" + indent + "]"
    return json.dumps(value, ensure_ascii=False)


def main(upstream: str) -> None:
    sys.path.insert(0, str(REPO))
    from tests.engine.stepaudio.tiny_tts3b import write_tiny_tts3b

    rng = np.random.default_rng(0)
    result = {"upstream_commit": "a52b94d85d418cd5bc736d696d310c990befbc79", "speakers": SPEAKERS,
              "configs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in (("default", {}), ("no_bos", {"add_bos_token": False}),
                                ("not_legacy", {"legacy": False})):
            tts_dir = write_tiny_tts3b(Path(tmp) / name, seed=0, weights=False, **overrides)
            for mod in ("tts",):
                sys.modules.pop(mod, None)
            upstream_tts, model, version, tok_class = load_upstream(Path(upstream), tts_dir)
            result["transformers"], result["tokenizer_class"] = version, tok_class
            result["tokenizer_model_sha256"] = hashlib.sha256((tts_dir / "tokenizer.model").read_bytes()).hexdigest()
            result["system_prompts"] = dict(model.sys_prompt_dict)
            result["configs"][name] = {
                "overrides": overrides,
                "encode": {s: model.tokenizer.encode(s) for s in ENCODE_STRINGS},
                "cases": run_cases(upstream_tts, model, np.random.default_rng(1)),
            }
        result["repetition"] = repetition_rows(upstream_tts, rng)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(compact_json(result) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) with transformers {result['transformers']}, "
          f"{result['tokenizer_class']}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/root/upstream_e/Step-Audio")
