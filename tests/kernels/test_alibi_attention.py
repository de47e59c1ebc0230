"""kernels.alibi_attention: the Triton kernels (interpreted on CPU) against an fp64 SDPA
reference, forward and gradients, at odd lengths, GQA, packed sequences and strided inputs; the
reference's packing against sequences run alone; GPU parity at the Step-Audio-TTS-3B shape."""
from __future__ import annotations

import pytest
import torch

from engine.models import alibi_slopes
from kernels import alibi_attention, alibi_attention_reference, use_backend

# Max |error| / max(1, max |reference|) of output and gradients against fp64. Measured with the
# interpreter: fp32 <= 3e-7, fp16 <= 4e-4, bf16 <= 7e-3 (SDPA in bf16 itself: 4e-3).
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def make_inputs(b, h, g, s, d, dtype=torch.float32, seed=0, device="cpu"):
    """q ``[b, h, s, d]``, k, v ``[b, g, s, d]``, the output gradient, slopes ``[h]``."""
    gen = torch.Generator().manual_seed(seed)
    q, do = (torch.randn(b, h, s, d, generator=gen) for _ in range(2))
    k, v = (torch.randn(b, g, s, d, generator=gen) for _ in range(2))
    return [t.to(device, dtype) for t in (q, k, v, do)] + [alibi_slopes(h).to(device)]


def run(fn, q, k, v, do, slopes, **kw):
    """Output and ``(dq, dk, dv)`` of ``fn`` at leaf copies of q, k, v."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, slopes, **kw)
    out.backward(do)
    return out.detach(), (q.grad, k.grad, v.grad)


def fp64_reference(q, k, v, do, slopes, **kw):
    return run(alibi_attention_reference, *(t.double() for t in (q, k, v, do)), slopes, **kw)


def rel_errors(got, want) -> list[float]:
    """Max abs error over max(1, max abs value) for the output and each gradient (absolute where
    a gradient is near zero, e.g. dq of a query that sees one key)."""
    pairs = [(got[0], want[0])] + list(zip(got[1], want[1]))
    return [float((a.double() - b).abs().max() / b.abs().max().clamp(min=1)) for a, b in pairs]


# (batch, heads, groups, seq, head_dim): seq never a multiple of the CPU tiles (16/32).
CASES = {"mha-batch-2": (2, 2, 2, 50, 16), "gqa-3-heads-per-group": (1, 6, 2, 45, 32),
         "gqa-head-dim-24": (1, 4, 2, 41, 24), "one-token": (1, 2, 1, 1, 16)}


@pytest.mark.parametrize("case", CASES)
def test_triton_fp32_matches_reference(triton_backend, case):
    q, k, v, do, slopes = make_inputs(*CASES[case])
    got = run(alibi_attention, q, k, v, do, slopes)
    assert max(rel_errors(got, fp64_reference(q, k, v, do, slopes))) < TOL[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_triton_low_precision_matches_fp64(triton_backend, dtype):
    # bf16 under the interpreter widens tl.dot operands (its dot cannot multiply bf16); the
    # loads, casts of p and dS to bf16 and the stores are the kernel's own.
    q, k, v, do, slopes = make_inputs(1, 4, 2, 45, 16, dtype)
    got = run(alibi_attention, q, k, v, do, slopes)
    assert all(t.dtype == dtype for t in (got[0], *got[1]))
    assert max(rel_errors(got, fp64_reference(q, k, v, do, slopes))) < TOL[dtype]


def test_custom_softmax_scale(triton_backend):
    q, k, v, do, slopes = make_inputs(1, 2, 1, 37, 16)
    got = run(alibi_attention, q, k, v, do, slopes, softmax_scale=0.3)
    want = fp64_reference(q, k, v, do, slopes, softmax_scale=0.3)
    assert max(rel_errors(got, want)) < 1e-4


LENS = [13, 0, 32, 1, 37]  # an empty sequence, one token, one exactly a CPU tile, odd ones


def packed(lens, device="cpu"):
    return torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32,
                        device=device)


def separately(q, k, v, do, slopes, lens, fn=fp64_reference):
    """Each packed sequence run alone; outputs and gradients re-packed along the sequence axis."""
    outs, grads, start = [], [], 0
    for n in lens:
        if n:
            part = (t[:, :, start:start + n] for t in (q, k, v, do))
            out, g = fn(*part, slopes)
            outs.append(out)
            grads.append(g)
        start += n
    return torch.cat(outs, 2), tuple(torch.cat(gs, 2) for gs in zip(*grads))


def test_triton_packed_sequences_match_each_sequence_alone(triton_backend):
    q, k, v, do, slopes = make_inputs(1, 4, 2, sum(LENS), 16)
    got = run(alibi_attention, q, k, v, do, slopes, cu_seqlens=packed(LENS))
    want = separately(q, k, v, do, slopes, LENS)
    assert max(rel_errors(got, want)) < TOL[torch.float32]


def test_reference_packed_matches_each_sequence_alone():
    q, k, v, do, slopes = make_inputs(1, 4, 2, sum(LENS), 8)
    got = run(alibi_attention_reference, q, k, v, do, slopes, cu_seqlens=packed(LENS))
    want = separately(q, k, v, do, slopes, LENS)
    assert max(rel_errors(got, want)) < 1e-5


def test_strided_projection_views_need_no_copies(triton_backend):
    """The model's q/k/v are ``[b, s, heads, d]`` projections transposed; the output keeps q's
    strides, so transposing back is free."""
    b, h, g, s, d = 2, 2, 1, 35, 16
    q, k, v, do, slopes = make_inputs(b, h, g, s, d)
    qt, kt, vt = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    got = run(alibi_attention, qt, kt, vt, do, slopes)
    out = alibi_attention(qt, kt, vt, slopes)
    assert out.stride() == qt.stride()
    assert max(rel_errors(got, fp64_reference(q, k, v, do, slopes))) < 1e-4


def test_cpu_tensors_default_to_the_reference():
    q, k, v, _, slopes = make_inputs(1, 4, 2, 20, 8)
    with use_backend("auto"):
        assert torch.equal(alibi_attention(q, k, v, slopes),
                           alibi_attention_reference(q, k, v, slopes))


def test_bad_inputs_raise_clearly():
    q, k, v, _, slopes = make_inputs(2, 4, 2, 10, 8)
    with pytest.raises(ValueError, match="heads % groups"):
        alibi_attention(q, k[:, :, :5], v, slopes)
    with pytest.raises(ValueError, match="slopes"):
        alibi_attention(q, k, v, slopes[:3])
    with pytest.raises(ValueError, match="batch 1"):
        alibi_attention(q, k, v, slopes, cu_seqlens=packed([4, 6]))
    with pytest.raises(ValueError, match="dtypes"):
        alibi_attention(q, k.double(), v, slopes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("lens", [[2048], [1000], [700, 1, 1500, 333]], ids=["2k", "1000", "packed"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_gpu_tts3b_shape_matches_reference(lens, dtype):
    """48 heads over 4 KV groups, head_dim 64: compiled kernels at their GPU tile sizes."""
    q, k, v, do, slopes = make_inputs(1, 48, 4, sum(lens), 64, dtype, device="cuda")
    cu = packed(lens, "cuda") if len(lens) > 1 else None
    with use_backend("triton"):
        got = run(alibi_attention, q, k, v, do, slopes, cu_seqlens=cu)
    assert max(rel_errors(got, fp64_reference(q, k, v, do, slopes, cu_seqlens=cu))) < TOL[dtype]
