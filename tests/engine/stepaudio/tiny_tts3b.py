"""A tiny Step-Audio-TTS-3B dir in the released layout, from a seed.

    write_tiny_tts3b(tmp / "Step-Audio-TTS-3B", seed=0)

Writes ``tokenizer.model`` (a SentencePiece BPE model trained here on a few hundred generated
Chinese/English lines, with the Step tokenizer's fixed ids: <unk> 0, <s> 1, </s> 2, <|EOT|> 3,
<|BOT|> 4, byte fallback, the trainer's default nmt_nfkc normalizer), ``tokenizer_config.json``
(LlamaTokenizer, as released), and a tiny Step1ForCausalLM: ``config.json`` and
``model-00001.safetensors`` + ``model.safetensors.index.json`` with the full 74752-id vocabulary.
The decoder dirs (CosyVoice-300M-25Hz*) are written by the decoder tests' own writers.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

EN_WORDS = ("the", "voice", "sound", "train", "morning", "river", "music", "happy", "slowly", "quick",
            "brown", "fox", "city", "night", "light", "we", "will", "go", "to", "park", "read", "book",
            "hello", "world", "speech", "model", "token", "audio", "sing", "rap", "song", "rain", "warm",
            "cold", "wind", "friend", "mother", "gift", "ocean", "day", "time", "say", "it", "again")
ZH_PHRASES = ("你好", "我们", "今天", "天气", "很好", "公园", "海洋馆", "妈妈", "礼物", "好不好呀", "声音",
              "情感", "文本", "朗读", "音乐", "哼唱", "说唱", "自由", "梦想", "方向", "每一步", "力量",
              "高兴", "悲伤", "生气", "撒娇", "中文", "英文", "粤语", "四川话", "慢速", "快速", "标签",
              "作为", "一名", "演员", "任务", "根据", "对话", "历史", "音色", "方式", "内容", "唱出来")
PUNCT = ("，", "。", "？", "！", ",", ".", "?", "!", "、")
TAGS = ("(高兴1)", "（RAP）", "(哼唱)", "(粤语)", "(快速1)", "(英文)")
SPECIAL = {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}
USER_PIECES = ["<|EOT|>", "<|BOT|>"]  # ids 3 and 4, as in the Step tokenizer
TOKENIZER_CONFIG = {
    "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
    "unk_token": "<unk>", "clean_up_tokenization_spaces": False, "model_max_length": 1 << 20,
    "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
}


def corpus(seed: int = 0, lines: int = 400) -> list[str]:
    """Mixed Chinese/English lines with tags, punctuation, digits and newlines in role pieces."""
    rng = random.Random(seed)
    out = ["system", "human", "assistant"] * 5
    for i in range(lines):
        kind = i % 3
        if kind == 0:
            words = [rng.choice(EN_WORDS) for _ in range(rng.randint(3, 10))]
            line = " ".join(words).capitalize() + rng.choice(".?!")
        elif kind == 1:
            line = "".join(rng.choice(ZH_PHRASES) + (rng.choice(PUNCT) if rng.random() < 0.3 else "")
                           for _ in range(rng.randint(3, 8)))
        else:
            line = (rng.choice(TAGS) + rng.choice(ZH_PHRASES) + " " + rng.choice(EN_WORDS)
                    + rng.choice(PUNCT) + str(rng.randint(0, 99)))
        out.append(line)
    return out


def train_tokenizer(out: Path, seed: int = 0, vocab_size: int = 700) -> Path:
    """Train the tiny SentencePiece model into ``out`` (deterministic for a seed)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(seed)), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=0.9995,
        byte_fallback=True, user_defined_symbols=USER_PIECES, num_threads=1, minloglevel=2,
        **SPECIAL)
    out.write_bytes(model.getvalue())
    return out


def write_tiny_lm(tts_dir: Path, seed: int = 0) -> None:
    """config.json and the released weight file names for a tiny Step1ForCausalLM."""
    import torch
    from safetensors.torch import save_file

    from engine.models.config import Step1Config
    from engine.models.step1 import Step1ForCausalLM

    config = Step1Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_attention_groups=2, vocab_size=74752, max_seq_len=8192, eos_token_id=3)
    model = Step1ForCausalLM(config).init_weights(seed)
    state = {k: v.detach().to(torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tts_dir / "model-00001.safetensors"), metadata={"format": "pt"})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict.fromkeys(state, "model-00001.safetensors")}
    (tts_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (tts_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))


def write_tiny_tts3b(tts_dir, seed: int = 0, weights: bool = True, **tokenizer_config) -> Path:
    """Write the tiny TTS-3B dir; ``tokenizer_config`` overrides tokenizer_config.json keys
    (e.g. ``add_bos_token=False``). ``weights=False`` skips the LM (prompt tests)."""
    tts_dir = Path(tts_dir)
    tts_dir.mkdir(parents=True, exist_ok=True)
    train_tokenizer(tts_dir / "tokenizer.model", seed)
    cfg = {**TOKENIZER_CONFIG, **tokenizer_config}
    (tts_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    if weights:
        write_tiny_lm(tts_dir, seed)
    return tts_dir
