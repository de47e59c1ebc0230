"""Packed students and the fused attention inside Step1: ``cu_seqlens`` forwards (and gradients)
equal each sequence run alone, on the reference path and through the Triton kernel (interpreted);
the kernel is chosen only where it applies, and a missing ``kernels`` package falls back."""
from __future__ import annotations

import pytest
import torch

from engine.models import LlamaStudent, LlamaStudentConfig, Step1Config, Step1ForCausalLM
from engine.models import step1 as step1_module
from engine.models.cache import packed_step_inputs, step_inputs
from kernels import use_backend

VOCAB = 300
LENS = [7, 20, 1, 13]


def small(kind: str, layers: int = 2):
    """6 heads over 3 KV groups (Step1) or the RoPE twin."""
    dims = dict(hidden_size=48, intermediate_size=80, num_hidden_layers=layers,
                num_attention_heads=6, vocab_size=VOCAB)
    if kind == "step1":
        model = Step1ForCausalLM(Step1Config(**dims, num_attention_groups=3, max_seq_len=256))
    else:
        model = LlamaStudent(LlamaStudentConfig(**dims, num_key_value_heads=3))
    return model.init_weights(0, std=0.2)


def packed_batch(lens=LENS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, VOCAB, (n,), generator=gen) for n in lens]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    return seqs, torch.cat(seqs)[None], cu


def alone(model, seqs) -> torch.Tensor:
    """Hidden states of each sequence run by itself, concatenated: ``[1, total, hidden]``."""
    return torch.cat([model.model(s[None]) for s in seqs], 1)


@pytest.mark.parametrize("kind", ["step1", "llama"])
def test_packed_forward_and_grads_equal_sequences_alone(kind):
    model = small(kind)
    seqs, ids, cu = packed_batch()
    h = model.model(ids, cu_seqlens=cu)
    assert h.shape == (1, sum(LENS), 48)
    torch.testing.assert_close(h, alone(model, seqs), atol=1e-5, rtol=1e-5)

    h.square().sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.model.named_parameters()}
    model.zero_grad()
    alone(model, seqs).square().sum().backward()
    for name, p in model.model.named_parameters():
        torch.testing.assert_close(packed_grads[name], p.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["step1", "llama"])
def test_a_shared_prefix_equals_a_copy_per_sequence(kind):
    """A system turn placed once per pack: every later segment continues it. Hidden states of the
    prefix and of each continuation, and the gradients, equal the packing with one copy each."""
    model = small(kind)
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, VOCAB, (11,), generator=gen)
    rests = [torch.randint(0, VOCAB, (n,), generator=gen) for n in (6, 1, 17)]
    copies = torch.cat([torch.cat([prefix, r]) for r in rests])[None]
    cu = torch.tensor([0, *torch.tensor([11 + len(r) for r in rests]).cumsum(0).tolist()], dtype=torch.int32)
    shared = torch.cat([prefix, *rests])[None]
    cu_shared = torch.tensor([0, 11, *(11 + torch.tensor([len(r) for r in rests]).cumsum(0)).tolist()],
                             dtype=torch.int32)

    want = model.model(copies, cu_seqlens=cu)
    keep = [0] + [int(cu[i]) + 11 + j for i, r in enumerate(rests) for j in range(len(r))]
    keep = list(range(11)) + keep[1:]  # the first copy's prefix, then every continuation
    got = model.model(shared, cu_seqlens=cu_shared, shared_prefix=11)
    torch.testing.assert_close(got, want[:, keep], atol=1e-5, rtol=1e-5)

    weights = torch.randn(got.shape, generator=gen)
    (got[:, 11:] * weights[:, 11:]).sum().backward()  # the loss never sits on the prefix
    shared_grads = {n: p.grad.clone() for n, p in model.model.named_parameters()}
    model.zero_grad()
    (want[:, keep[11:]] * weights[:, 11:]).sum().backward()
    for name, p in model.model.named_parameters():
        torch.testing.assert_close(shared_grads[name], p.grad, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="first segment"):
        model.model(shared, cu_seqlens=cu_shared, shared_prefix=5)


def test_packed_logits_through_the_lm():
    model = small("step1")
    seqs, ids, cu = packed_batch()
    logits = model(ids, cu_seqlens=cu).logits
    want = torch.cat([model(s[None]).logits for s in seqs], 1)
    torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-5)


def test_step1_triton_path_matches_reference(triton_backend):
    model = small("step1", layers=1)
    seqs, ids, cu = packed_batch([9, 1, 30])
    h = model.model(ids, cu_seqlens=cu)
    h.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.model.named_parameters()}
    model.zero_grad()
    with use_backend("reference"):
        want = model.model(ids, cu_seqlens=cu)
        want.sum().backward()
    torch.testing.assert_close(h, want, atol=1e-5, rtol=1e-5)
    for name, p in model.model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-4, rtol=1e-4)
    dense = model.model(seqs[2][None])  # unpacked batch through the kernel too
    with use_backend("reference"):
        torch.testing.assert_close(dense, model.model(seqs[2][None]), atol=1e-5, rtol=1e-5)


def test_kernel_only_without_cache_history_or_padding(triton_backend):
    model = small("step1").model
    ids = torch.zeros(2, 5, dtype=torch.long)
    assert model.fused_attention(step_inputs(ids, None, None, None)) is not None
    cache = small("step1").new_cache(2, 8)
    assert model.fused_attention(step_inputs(ids, cache, None, None)) is not None  # prefill
    cache.length = 5
    assert model.fused_attention(step_inputs(ids[:, :1], cache, None, None)) is None  # decode
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert model.fused_attention(step_inputs(ids, None, mask, None)) is None  # left padding
    with use_backend("reference"):
        assert model.fused_attention(step_inputs(ids, None, None, None)) is None
    cu = torch.tensor([0, 4, 10], dtype=torch.int32)
    shared = packed_step_inputs(torch.zeros(1, 10, dtype=torch.long), cu, shared_prefix=4)
    assert model.fused_attention(shared) is None  # the kernel has no shared prefix


def test_without_kernels_package_the_model_uses_its_reference(triton_backend, monkeypatch):
    """An exported checkpoint loaded by ``trust_remote_code`` where stepforge is absent."""
    monkeypatch.setattr(step1_module, "_kernels", None)
    model = small("step1")
    seqs, ids, cu = packed_batch()
    torch.testing.assert_close(model.model(ids, cu_seqlens=cu), alone(model, seqs), atol=1e-5,
                               rtol=1e-5)


def test_bad_packing_is_refused():
    model = small("step1")
    _, ids, cu = packed_batch()
    with pytest.raises(ValueError, match="rise from 0"):
        model.model(ids, cu_seqlens=cu[:-1])
    with pytest.raises(ValueError, match=r"\[1, total\]"):
        model.model(ids.expand(2, -1), cu_seqlens=cu)
    with pytest.raises(ValueError, match="no cache"):
        model(ids, cu_seqlens=cu, use_cache=True)
