"""Student models: sqrt-ALiBi parity with a literal reference, GQA mapping, the KV cache, loading a
checkpoint in the Step-Audio-TTS-3B layout, clear loading errors, export round trips, and the RoPE
student against transformers' LlamaForCausalLM."""
import json
import math

import pytest
import torch

from engine.models import (LlamaStudent, LlamaStudentConfig, Step1Config, Step1ForCausalLM,
                            alibi_slopes, alibi_sqrt_attention, build_student, export, load_student)
from engine.models.export import save_weights, token_layout
from engine.prompts import ByteTokenizer

VOCAB = 300


def small_step1(seed=0, **kw) -> Step1ForCausalLM:
    """6 heads (not a power of two) over 3 KV groups, 2 layers."""
    cfg = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
               num_attention_groups=3, vocab_size=VOCAB, max_seq_len=256)
    return Step1ForCausalLM(Step1Config(**{**cfg, **kw})).init_weights(seed, std=0.2)


def small_llama(seed=0) -> LlamaStudent:
    cfg = LlamaStudentConfig(hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                             num_attention_heads=6, num_key_value_heads=3, vocab_size=VOCAB)
    return LlamaStudent(cfg).init_weights(seed, std=0.2)


def literal_slopes(n):
    """ALiBi paper: 2^(-8/n) powers; otherwise the closest power of two's plus every other of 2x."""
    p = 2 ** math.floor(math.log2(n))
    base = [2 ** (-8 / p * (i + 1)) for i in range(p)]
    extra = [2 ** (-8 / (2 * p) * (i + 1)) for i in range(2 * p)][0::2][: n - p]
    return base + extra


def literal_forward(model, ids):
    """Step1 logits for one sequence ``ids [seq]``, every operation written out."""
    cfg, sd = model.config, {k: v.double() for k, v in model.state_dict().items()}
    n_h, n_g, d = cfg.num_attention_heads, cfg.num_attention_groups, cfg.head_dim
    slopes = literal_slopes(n_h)

    def rms(x, w):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps) * w

    x = sd["model.embed_tokens.weight"][ids]
    s = len(ids)
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        h = rms(x, sd[p + "input_layernorm.weight"])
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(s, n_h, d)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).view(s, n_g, d)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).view(s, n_g, d)
        out = torch.zeros(s, n_h, d, dtype=torch.float64)
        for head in range(n_h):
            g = head // (n_h // n_g)
            for i in range(s):
                scores = torch.full((s,), float("-inf"), dtype=torch.float64)
                for j in range(i + 1):
                    scores[j] = q[i, head] @ k[j, g] / math.sqrt(d) - math.sqrt(i - j) * slopes[head]
                out[i, head] = torch.softmax(scores, 0) @ v[:, g]
        x = x + out.reshape(s, n_h * d) @ sd[p + "self_attn.o_proj.weight"].T
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        gate = h @ sd[p + "mlp.gate_proj.weight"].T
        up = h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    return rms(x, sd["model.norm.weight"]) @ sd["lm_head.weight"].T


def test_residual_dropout_acts_only_in_training():
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(5))
    plain, dropped = small_step1(), small_step1()
    dropped.model.set_dropout(0.5)
    dropped.eval()
    torch.testing.assert_close(dropped(ids).logits, plain.eval()(ids).logits, rtol=0, atol=0)
    dropped.train()
    torch.manual_seed(0)
    first = dropped(ids).logits
    torch.manual_seed(1)
    assert not torch.allclose(first, dropped(ids).logits)  # a new mask per call
    assert not torch.allclose(first, plain(ids).logits)


@pytest.mark.parametrize("n", [1, 4, 6, 8, 12, 48])
def test_alibi_slopes_follow_the_alibi_paper(n):
    assert torch.allclose(alibi_slopes(n), torch.tensor(literal_slopes(n)), rtol=1e-6)


def test_alibi_slopes_for_tts_3b_heads():
    s = alibi_slopes(48)
    assert s[0] == pytest.approx(2 ** -0.25) and s[31] == pytest.approx(2 ** -8)
    assert s[32] == pytest.approx(2 ** -0.125) and s[33] == pytest.approx(2 ** -0.375)


def test_forward_matches_literal_sqrt_alibi_reference():
    model = small_step1()
    ids = torch.randint(0, VOCAB, (12,), generator=torch.Generator().manual_seed(1))
    got = model(ids[None]).logits[0].double()
    ref = literal_forward(model, ids)
    err = (got - ref).abs().max().item()
    print(f"Step1 forward vs literal sqrt-ALiBi reference, fp32: max abs error {err:.2e}")
    assert err < 1e-4
    assert (ref.abs().max() > 1).item()  # the comparison is not between near-zero tensors


def test_attention_bias_is_minus_sqrt_distance_times_slope():
    # Zero queries and keys leave only the bias: the weights must be softmax(-sqrt(i-j)*slope).
    b, h, g, s, d = 1, 4, 2, 5, 8
    q, k = torch.zeros(b, h, s, d), torch.zeros(b, g, s, d)
    v = torch.eye(s)[None, None].expand(b, g, s, s).contiguous()  # output = attention weights
    weights = alibi_sqrt_attention(q, k, v, alibi_slopes(h), )[0]
    for head, slope in enumerate(literal_slopes(h)):
        for i in range(s):
            logits = torch.tensor([-math.sqrt(i - j) * slope for j in range(i + 1)])
            expected = torch.zeros(s)
            expected[: i + 1] = torch.softmax(logits, 0)
            assert torch.allclose(weights[head, i], expected, atol=1e-6)


def test_gqa_heads_read_their_group():
    b, h, g, s, d = 2, 6, 3, 7, 4
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, n, s, d, generator=gen) for n in (h, g, g))
    base = alibi_sqrt_attention(q, k, v, alibi_slopes(h))
    for group in range(g):
        v2 = v.clone()
        v2[:, group] += 1.0
        changed = (alibi_sqrt_attention(q, k, v2, alibi_slopes(h)) - base).abs().amax((0, 2, 3)) > 1e-4
        assert changed.tolist() == [head // (h // g) == group for head in range(h)]


@pytest.mark.parametrize("make", [small_step1, small_llama])
def test_kv_cache_and_left_padding_match_full_forward(make):
    model = make()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, VOCAB, (3, 16), generator=gen)
    full = model(ids).logits
    out = model(ids[:, :9], use_cache=True)
    steps = [out.logits]
    for t in range(9, 16):
        out = model(ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits)
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-4

    lens = [16, 11, 4]  # left-padded batch, then two cached steps
    padded, mask = torch.zeros(3, 16, dtype=torch.long), torch.zeros(3, 16, dtype=torch.long)
    for i, n in enumerate(lens):
        padded[i, 16 - n:], mask[i, 16 - n:] = ids[i, :n], 1
    out = model(padded, attention_mask=mask, use_cache=True)
    nxt = torch.randint(0, VOCAB, (3, 2), generator=gen)
    a = model(nxt[:, :1], past_key_values=out.past_key_values, use_cache=True)
    b = model(nxt[:, 1:], past_key_values=a.past_key_values, use_cache=True)
    for i, n in enumerate(lens):
        ref = model(torch.cat([ids[i, :n], nxt[i]])[None]).logits[0]
        assert (out.logits[i, 16 - n:] - ref[:n]).abs().max() < 1e-4
        assert (a.logits[i, 0] - ref[n]).abs().max() < 1e-4
        assert (b.logits[i, 0] - ref[n + 1]).abs().max() < 1e-4


def test_right_padding_uses_positions_not_slots():
    model = small_step1()
    ids = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 6:] = 0
    out = model(ids, attention_mask=mask).logits
    assert (out[1, :6] - model(ids[1:, :6]).logits[0]).abs().max() < 1e-4


def write_step_audio_dir(path, model, dtype=torch.bfloat16, shards=3):
    """A checkpoint the way Step-Audio-TTS-3B ships: config.json with model_type step1 and
    num_attention_groups, sharded safetensors with an index, custom code named in auto_map."""
    from safetensors.torch import save_file

    c = model.config
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({
        "architectures": ["Step1ForCausalLM"], "model_type": "step1",
        "auto_map": {"AutoConfig": "configuration_step1.Step1Config",
                     "AutoModelForCausalLM": "modeling_step1.Step1ForCausalLM"},
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_attention_groups": c.num_attention_groups, "vocab_size": c.vocab_size,
        "max_seq_len": c.max_seq_len, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16",
        "transformers_version": "4.48.3"}))
    names = list(model.state_dict())
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: model.state_dict()[n].to(dtype).contiguous() for n in names[i::shards]}
        save_file(part, str(path / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": 0}, "weight_map": weight_map}))
    (path / "tokenizer.model").write_bytes(b"not a real sentencepiece model")
    return path


def test_from_pretrained_loads_the_step_audio_layout(tmp_path):
    model = small_step1()
    d = write_step_audio_dir(tmp_path / "Step-Audio-TTS-3B", model)
    loaded = Step1ForCausalLM.from_pretrained(d)
    assert next(loaded.parameters()).dtype == torch.bfloat16  # the config's torch_dtype
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(4))
    expected = model.to(torch.bfloat16)(ids).logits
    assert torch.equal(loaded(ids).logits, expected)
    as_fp32 = Step1ForCausalLM.from_pretrained(d, dtype=torch.float32)
    assert (as_fp32(ids).logits - expected.float()).abs().max() < 0.1
    assert type(load_student(d)) is Step1ForCausalLM


def test_loading_errors_are_clear(tmp_path):
    model = small_step1()
    with pytest.raises(ValueError, match="no config.json"):
        Step1ForCausalLM.from_pretrained(tmp_path)
    d = write_step_audio_dir(tmp_path / "ok", model)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(ValueError, match="no weights"):
        Step1ForCausalLM.from_pretrained(no_weights)

    (d / "model-00002-of-00003.safetensors").rename(tmp_path / "moved.safetensors")
    with pytest.raises(ValueError, match="model-00002-of-00003.safetensors"):
        Step1ForCausalLM.from_pretrained(d)

    wrong = write_step_audio_dir(tmp_path / "wrong", small_step1(intermediate_size=96))
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["intermediate_size"] = 80
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"mlp.gate_proj.weight has shape \(96, 48\).*\(80, 48\)"):
        Step1ForCausalLM.from_pretrained(wrong)

    del cfg["num_attention_groups"]
    (wrong / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_attention_groups"):
        Step1ForCausalLM.from_pretrained(wrong)

    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((d / "config.json").read_text())
    state = {k: v for k, v in model.state_dict().items() if k != "model.norm.weight"}
    save_weights(state, partial)
    with pytest.raises(ValueError, match="lacks tensors model.norm.weight"):
        Step1ForCausalLM.from_pretrained(partial)

    llama_dir = export(small_llama(), tmp_path / "llama")
    with pytest.raises(ValueError, match="model_type 'llama'"):
        Step1ForCausalLM.from_pretrained(llama_dir)


def test_step1_export_round_trip_and_remote_code(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    model = small_step1()
    d = export(model, tmp_path / "student", max_shard_bytes=40_000)  # forces shards + index
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "step1" and cfg["architectures"] == ["Step1ForCausalLM"]
    assert cfg["num_attention_groups"] == 3 and cfg["auto_map"]["AutoModelForCausalLM"]
    assert (d / "model.safetensors.index.json").is_file()
    assert json.loads((d / "generation_config.json").read_text())["temperature"] == 0.7
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(5))
    expected = model(ids).logits
    loaded = load_student(d)
    assert type(loaded) is Step1ForCausalLM and torch.equal(loaded(ids).logits, expected)

    assert AutoConfig.from_pretrained(d, trust_remote_code=True).num_attention_groups == 3
    hf = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True).eval()
    assert (hf(ids).logits - expected).abs().max() < 1e-5


def test_rope_student_matches_transformers_llama(tmp_path):
    from transformers import LlamaForCausalLM

    model = small_llama()
    d = export(model, tmp_path / "rope")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert cfg["num_key_value_heads"] == 3 and "auto_map" not in cfg
    hf = LlamaForCausalLM.from_pretrained(d).eval()
    gen = torch.Generator().manual_seed(6)
    ids = torch.randint(0, VOCAB, (2, 13), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    err = (hf(ids).logits - model(ids).logits).abs().max()
    assert err < 1e-5
    err_pad = (hf(ids, attention_mask=mask).logits - model(ids, attention_mask=mask).logits)[:, 5:]
    assert err_pad.abs().max() < 1e-5
    loaded = load_student(d)
    assert type(loaded) is LlamaStudent and torch.equal(loaded(ids).logits, model(ids).logits)


def test_presets():
    tiny = build_student("step1", "tiny")
    n = sum(p.numel() for p in tiny.parameters())
    assert 1e6 <= n <= 3e6 and token_layout(tiny.config) == ByteTokenizer().layout()
    assert 20e6 <= Step1Config.preset("small").num_parameters() <= 40e6
    big = Step1Config.preset("tts-3b")
    assert (big.hidden_size, big.intermediate_size, big.num_hidden_layers) == (3072, 8192, 32)
    assert (big.num_attention_heads, big.num_attention_groups, big.head_dim) == (48, 4, 64)
    assert (big.vocab_size, big.max_seq_len, big.torch_dtype) == (74752, 32768, "bfloat16")
    assert 3.0e9 <= big.num_parameters() <= 4.5e9
    rope = LlamaStudentConfig.preset("tts-3b")
    assert rope.num_key_value_heads == 4 and rope.max_position_embeddings == 32768
