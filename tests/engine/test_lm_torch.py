"""The LM engine: audio-constraint rules (pure function and logits processor agree), sampling,
and TorchEngine generation checked against teacher-forced forwards of the same model."""
import copy
import random

import numpy as np
import pytest
import torch

from engine.models import build_student, export
from engine.instructions import Instruction
from engine.lm import (AudioConstraint, AudioLogitsProcessor, SamplingParams, TorchEngine,
                       allowed_ids, repetition_ban, sample)
from engine.prompts import EOT, ByteTokenizer, build_tts_prompt
from engine.tokens import GROUP, STEP_AUDIO, deinterleave

LAYOUT = ByteTokenizer().layout()
VQ02 = (LAYOUT.vq02_offset, LAYOUT.vq06_offset)
VQ06 = (LAYOUT.vq06_offset, LAYOUT.audio_end)


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def step1():
    return build_student("step1", "tiny", seed=0, num_hidden_layers=2)


@pytest.fixture(scope="module")
def llama():
    return build_student("llama", "tiny", seed=0, num_hidden_layers=2)


def random_prompts(n, seed=0, lo=5, hi=40):
    rng = random.Random(seed)
    return [[1] + [rng.randrange(8, 264) for _ in range(rng.randrange(lo, hi))] for _ in range(n)]


def audio_ids(rng, n):
    return [rng.randrange(*(VQ02 if i % GROUP < 2 else VQ06)) for i in range(n)]


def test_allowed_ids_follow_the_2_3_pattern():
    assert allowed_ids([], STEP_AUDIO, EOT) == [(65536, 66560)]
    assert allowed_ids([65540], STEP_AUDIO, EOT) == [(65536, 66560)]
    assert allowed_ids([65540, 65541], STEP_AUDIO, EOT) == [(66560, 70656)]
    group = [65540, 65541, 66600, 66601, 66602]
    assert allowed_ids(group, STEP_AUDIO, EOT) == [(EOT, EOT + 1), (65536, 66560)]
    assert allowed_ids(group, STEP_AUDIO, EOT, min_groups=2) == [(65536, 66560)]
    assert allowed_ids(group + [65545], STEP_AUDIO, EOT) == [(65536, 66560)]


def test_repetition_guard():
    assert repetition_ban([5, 6, 5]) == 5
    assert repetition_ban([5, 6, 7]) is None
    assert repetition_ban([5] + [1, 2, 3, 4, 6, 7, 8, 9, 10] + [5]) is None  # first 5 left the window
    assert repetition_ban([5] + [1, 2, 3, 4, 6, 7, 8, 9] + [5]) == 5
    assert repetition_ban([], 10, 2) is None
    ranges = allowed_ids([65540, 65540], STEP_AUDIO, EOT)
    assert ranges == [(66560, 70656)]  # the ban falls outside the vq06 range
    ranges = allowed_ids([65540, 65600, 66600, 66601, 66602, 65700, 65700], STEP_AUDIO, EOT)
    assert ranges == [(66560, 70656)]
    ranges = allowed_ids([65540, 65600, 66600, 66601, 66600], STEP_AUDIO, EOT)
    assert ranges == [(EOT, EOT + 1), (65536, 66560)]
    ranges = allowed_ids([65540, 65600, 66600, 66600], STEP_AUDIO, EOT)
    assert ranges == [(66560, 66600), (66601, 70656)]


def test_processor_agrees_with_allowed_ids():
    rng = random.Random(0)
    c = AudioConstraint(LAYOUT, min_groups=1)
    proc = AudioLogitsProcessor(c, LAYOUT.vocab_size + 16)  # wider logits, like a padded vocab
    # Few distinct ids per codebook, so repeats inside the guard's window are common.
    few02, few06 = [VQ02[0] + i for i in range(3)], [VQ06[0] + i for i in range(3)]
    histories = [[rng.choice(few02 if i % GROUP < 2 else few06) for i in range(rng.randrange(0, 23))]
                 for _ in range(200)]
    logits = proc(torch.zeros(len(histories), LAYOUT.vocab_size + 16), histories)
    banned = 0
    for row, h in zip(logits, histories):
        expected = torch.zeros(LAYOUT.vocab_size + 16, dtype=torch.bool)
        for lo, hi in c.allowed(h):
            expected[lo:hi] = True
        assert torch.equal(torch.isfinite(row), expected)
        banned += repetition_ban(h) is not None
    assert banned > 20  # the histories exercise the guard


def test_max_seconds_sets_whole_groups():
    c = AudioConstraint(LAYOUT, max_seconds=1.0)
    assert c.max_new_tokens(8192) == 8 * GROUP  # 8 groups of 0.12 s
    assert c.max_new_tokens(23) == 4 * GROUP
    assert SamplingParams(audio_constraint=c).token_budget() == 40
    with pytest.raises(ValueError):
        AudioConstraint(LAYOUT, max_seconds=0.1).max_new_tokens(100)


def test_sample_draws_from_the_distribution():
    probs = torch.tensor([0.1, 0.2, 0.0, 0.7])
    n = 4000
    logits = probs.log().expand(n, 4).clone()
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    ids = sample(logits, torch.ones(n), gens)
    freq = torch.bincount(ids, minlength=4).float() / n
    assert freq[2] == 0 and (freq - probs).abs().max() < 0.03
    assert torch.equal(sample(logits[:3], torch.zeros(3), gens[:3]), torch.full((3,), 3))
    top1 = sample(logits[:50], torch.ones(50), gens[:50], top_k=torch.ones(50, dtype=torch.long))
    assert (top1 == 3).all()
    nucleus = sample(logits[:500], torch.ones(500), gens[:500], top_p=torch.full((500,), 0.75))
    assert set(nucleus.tolist()) == {1, 3}


def check_constrained(gens, budget):
    for g in gens:
        assert 0 < len(g.token_ids) <= budget
        audio = g.content_ids()
        assert EOT not in audio
        deinterleave(audio, LAYOUT)  # whole 2:3 groups of in-range ids, or it raises
        if g.finish_reason == "stop":
            assert g.token_ids[-1] == EOT
        else:
            assert g.finish_reason == "length" and len(g.token_ids) == budget
        for t in range(len(g.token_ids)):
            assert repetition_ban(g.token_ids[:t]) != g.token_ids[t]


def test_constrained_decoding_over_many_seeds(step1):
    engine = TorchEngine(step1)
    c = AudioConstraint(engine.layout, max_seconds=1.2)
    prompts = random_prompts(50, seed=1)
    params = [SamplingParams(seed=s, temperature=1.5, audio_constraint=c,
                             top_k=[0, 50][s % 2], top_p=[1.0, 0.9][s % 3 == 0]) for s in range(50)]
    gens = engine.generate(prompts, params)
    check_constrained(gens, c.max_new_tokens(8192))


def test_constrained_greedy_decoding_needs_the_guard(llama):
    # A random model decoded greedily repeats itself; the guard must break every repeat.
    engine = TorchEngine(llama)
    prompts = random_prompts(8, seed=2)
    guarded = AudioConstraint(engine.layout, max_seconds=1.2)
    gens = engine.generate(prompts, SamplingParams(temperature=0, audio_constraint=guarded))
    check_constrained(gens, guarded.max_new_tokens(8192))
    loose = AudioConstraint(engine.layout, max_seconds=1.2, repeats=0)
    free = engine.generate(prompts, SamplingParams(temperature=0, audio_constraint=loose))
    violations = sum(repetition_ban(g.token_ids[:t]) == g.token_ids[t]
                     for g in free for t in range(len(g.token_ids)))
    assert violations > 0


def teacher_forced_logprobs(model, prompt, generated):
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1]
    return logits.log_softmax(-1)


@pytest.mark.parametrize("kind", ["step1", "llama"])
def test_engine_matches_teacher_forced_forward(kind, step1, llama):
    model = {"step1": step1, "llama": llama}[kind]
    engine = TorchEngine(model, max_batch=4, prefill_elements=20_000)  # several prefill pieces
    prompts = random_prompts(6, seed=3)
    params = [SamplingParams(seed=s, max_tokens=[7, 30, 12, 25, 3, 18][s], logprobs=3,
                             stop_token_ids=()) for s in range(6)]
    gens = engine.generate(prompts, params)
    for p, prm, g in zip(prompts, params, gens):
        assert len(g.token_ids) == prm.max_tokens and g.finish_reason == "length"
        assert g.topk_ids.shape == (prm.max_tokens, 3) and g.topk_logprobs.dtype == np.float32
        ref = teacher_forced_logprobs(model, p, g.token_ids)
        vals, ids = ref.topk(3, dim=-1)
        assert np.abs(g.topk_logprobs - vals.numpy()).max() < 1e-4
        assert (g.topk_ids == ids.numpy()).mean() > 0.99  # ties aside


def test_seeded_requests_do_not_depend_on_the_batch(step1):
    engine = TorchEngine(step1)
    prompts = random_prompts(5, seed=4)
    c = AudioConstraint(engine.layout, max_seconds=0.6)
    batch = engine.generate(prompts, [SamplingParams(seed=10 + i, audio_constraint=c)
                                      for i in range(5)])
    alone = engine.generate([prompts[2]], SamplingParams(seed=12, audio_constraint=c))[0]
    assert alone.token_ids == batch[2].token_ids
    other = engine.generate([prompts[2]], SamplingParams(seed=13, audio_constraint=c))[0]
    assert other.token_ids != alone.token_ids


def test_engine_loads_a_dir_and_serves_a_tts_prompt(tmp_path, step1):
    d = export(step1, tmp_path / "student")
    engine = TorchEngine(d)
    prompt = build_tts_prompt("Hello.", Instruction(dialect="english"), ByteTokenizer())
    c = AudioConstraint(engine.layout, max_seconds=0.5)
    [g] = engine.generate([prompt], SamplingParams(seed=0, audio_constraint=c, logprobs=2,
                                                   logprobs_mode="processed"))
    check_constrained([g], c.max_new_tokens(8192))
    # processed logprobs put their mass only on ids the constraint allows
    for t, (ids, lps) in enumerate(zip(g.topk_ids, g.topk_logprobs)):
        ranges = c.allowed(g.token_ids[:t])
        assert all(any(lo <= i < hi for lo, hi in ranges) for i in ids[np.isfinite(lps)])
        assert np.isfinite(lps[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_engine_on_gpu_matches_cpu(step1):
    prompts = random_prompts(4, seed=5)
    params = SamplingParams(temperature=0, max_tokens=20, stop_token_ids=(), logprobs=2)
    cpu = TorchEngine(step1).generate(prompts, params)
    gpu_model = copy.deepcopy(step1)
    gpu = TorchEngine(gpu_model, device="cuda", dtype=torch.float32).generate(prompts, params)
    for a, b in zip(cpu, gpu):
        assert np.abs(a.topk_logprobs[:5] - b.topk_logprobs[:5]).max() < 1e-3
        assert a.token_ids[:5] == b.token_ids[:5]


def test_bad_prompts_are_refused(step1):
    engine = TorchEngine(step1)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([[1, 2], []], SamplingParams())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate([[1, 99999]], SamplingParams())
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        engine.generate([[1, 2]], [SamplingParams(), SamplingParams()])
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="cannot hold the audio ids"):
        AudioLogitsProcessor(AudioConstraint(STEP_AUDIO), LAYOUT.vocab_size)
