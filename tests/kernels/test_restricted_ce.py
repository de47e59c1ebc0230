"""kernels.restricted_ce: the chunked restricted head against a dense masked computation, its
gradients against finite differences, and the Triton kernel (interpreted on CPU, in a subprocess)
against the PyTorch reference."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from kernels import HeadRanges, restricted_linear_ce, use_backend

# text 0..9 (EOT = 3), vq02 10..17, vq06 18..29, two unused ids: a miniature Step-Audio layout
SMALL = HeadRanges(10, 8, 18, 12, eot_id=3)
SMALL_VOCAB = 32


def make_case(r: HeadRanges, vocab: int, n: int = 29, hidden: int = 16, k: int = 4, seed: int = 0,
              dtype=torch.float32):
    """Random rows of every stream (EOT targets at some group starts, ~20% no-loss rows) and a
    teacher top-k with empty slots, EOT, ids outside the allowed set and rows without top-k."""
    g = torch.Generator().manual_seed(seed)
    streams = torch.randint(-1, 3, (n,), generator=g).to(torch.int8)
    vq02 = r.vq02_start + torch.randint(0, r.vq02_size, (n,), generator=g)
    vq06 = r.vq06_start + torch.randint(0, r.vq06_size, (n,), generator=g)
    targets = torch.where(streams == 2, vq06, vq02)
    targets[(streams == 0) & (torch.rand(n, generator=g) < 0.4)] = r.eot_id
    targets[streams < 0] = -100
    ids = torch.stack([_candidates(torch.randperm(vocab, generator=g), int(t), int(s), r, k)
                       for t, s in zip(targets, streams)])
    ids[torch.rand(n, k, generator=g) < 0.2] = -1
    ids[:2] = -1
    logp = torch.log_softmax(torch.randn(n, k + 2, generator=g), -1)[:, :k]
    return dict(hidden=torch.randn(n, hidden, generator=g, dtype=dtype),
                weight=torch.randn(vocab, hidden, generator=g, dtype=dtype),
                targets=targets, streams=streams, topk_ids=ids, topk_logprobs=logp)


def _candidates(perm, target: int, stream: int, r: HeadRanges, k: int) -> torch.Tensor:
    """``k`` distinct ids: the target and (at group starts) EOT first, then random ids."""
    front = ([target] if target >= 0 else []) + ([r.eot_id] if stream == 0 else [])
    front = list(dict.fromkeys(front))
    return torch.tensor((front + [i for i in perm.tolist() if i not in front])[:k])


def dense_rows(case, r: HeadRanges):
    """Per-row CE, KL, correct from full fp64 logits masked outside each row's allowed set."""
    z = (case["hidden"].double() @ case["weight"].double().t())
    cols = torch.arange(z.shape[1])[None]
    s = case["streams"][:, None]
    vq02 = (cols >= r.vq02_start) & (cols < r.vq02_start + r.vq02_size)
    vq06 = (cols >= r.vq06_start) & (cols < r.vq06_start + r.vq06_size)
    ok = ((s == 0) & (vq02 | (cols == r.eot_id))) | ((s == 1) & vq02) | ((s == 2) & vq06)
    logq = torch.log_softmax(z.masked_fill(~ok, float("-inf")), -1)
    rows = ok.any(1) & (case["targets"] >= 0)
    t = case["targets"].clamp_min(0)[:, None]
    ce = torch.where(rows, -logq.gather(1, t)[:, 0], 0.0)
    ids = case["topk_ids"]
    valid = (ids >= 0) & ok.gather(1, ids.clamp_min(0))
    p = torch.where(valid, case["topk_logprobs"].double().exp(), 0.0)
    q = torch.where(valid, logq.gather(1, ids.clamp_min(0)).exp(), 0.0)
    tail_p, tail_q = 1 - p.sum(1), 1 - q.sum(1)
    kl = (torch.where(p > 0, p * (p.log() - q.log()), 0.0).sum(1)
          + tail_p * (tail_p.log() - tail_q.log()))
    kl = torch.where(rows & valid.any(1), kl, 0.0)
    correct = rows & (logq.argmax(1) == t[:, 0])
    return ce, kl, correct


def run(case, r=SMALL, **kw):
    topk = {} if kw.pop("no_topk", False) else dict(topk_ids=case["topk_ids"],
                                                   topk_logprobs=case["topk_logprobs"])
    return restricted_linear_ce(case["hidden"], case["weight"], case["targets"], case["streams"],
                                r, **topk, **kw)


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_rows_match_dense_masked_logits(chunk):
    case = make_case(SMALL, SMALL_VOCAB, dtype=torch.float64)
    out = run(case, chunk=chunk, kd_ratio=0.25)
    ce, kl, correct = dense_rows(case, SMALL)
    assert out.n_tokens == int(((case["streams"] >= 0) & (case["targets"] >= 0)).sum()) > 10
    assert bool(out.has_topk.any()) and bool((~out.has_topk & out.mask).any())
    torch.testing.assert_close(out.ce, ce, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(out.kl, kl, atol=1e-12, rtol=1e-12)
    assert torch.equal(out.correct, correct)
    w_kl = out.has_topk.double() * 0.25
    torch.testing.assert_close(out.loss, ((1 - w_kl) * ce + w_kl * kl).sum())


@pytest.mark.parametrize("kd_ratio,reduction", [(0.0, "sum"), (0.4, "mean"), (1.0, "sum")])
def test_gradients_match_finite_differences(kd_ratio, reduction):
    case = make_case(SMALL, SMALL_VOCAB, n=13, hidden=6, dtype=torch.float64, seed=1)

    def loss(h, w):
        return run(dict(case, hidden=h, weight=w), chunk=5, kd_ratio=kd_ratio,
                   reduction=reduction).loss

    h = case["hidden"].requires_grad_()
    w = case["weight"].requires_grad_()
    assert torch.autograd.gradcheck(loss, (h, w))


def test_no_loss_rows_give_zero_loss_and_gradients():
    case = make_case(SMALL, SMALL_VOCAB)
    case["streams"] = torch.full_like(case["streams"], -1)
    h, w = case["hidden"].requires_grad_(), case["weight"].requires_grad_()
    out = run(case, reduction="mean", kd_ratio=0.5)
    out.loss.backward()
    assert out.n_tokens == 0 and out.loss.item() == 0.0
    assert float(h.grad.abs().max()) == 0.0 and float(w.grad.abs().max()) == 0.0


def test_eot_target_only_at_group_start():
    case = make_case(SMALL, SMALL_VOCAB)
    i = int((case["streams"] == 1).nonzero()[0, 0])
    case["targets"][i] = SMALL.eot_id
    with pytest.raises(ValueError, match=f"row {i} .* stream 1"):
        run(case)


def test_candidates_outside_allowed_set_join_the_tail():
    case = make_case(SMALL, SMALL_VOCAB)
    cut = dict(case, topk_ids=case["topk_ids"].clone())
    outside = (case["streams"] == 1)[:, None] & (case["topk_ids"] == SMALL.eot_id)
    outside |= (case["streams"] == 2)[:, None] & (case["topk_ids"] < SMALL.vq06_start)
    cut["topk_ids"][outside] = -1
    assert bool(outside.any())
    torch.testing.assert_close(run(case, kd_ratio=0.5).loss, run(cut, kd_ratio=0.5).loss)


def test_no_grad_gives_same_values():
    case = make_case(SMALL, SMALL_VOCAB)
    h, w = case["hidden"].requires_grad_(), case["weight"].requires_grad_()
    with torch.no_grad():
        a = run(case, kd_ratio=0.5, chunk=4)
    b = run(case, kd_ratio=0.5, chunk=4)
    assert not a.loss.requires_grad and b.loss.requires_grad
    torch.testing.assert_close(a.loss, b.loss.detach())
    torch.testing.assert_close(a.kl, b.kl)


# vq02 and vq06 slices wider than the interpreter's 2048-column block; EOT = 3
WIDE = HeadRanges(8, 300, 308, 2500, eot_id=3)
WIDE_VOCAB = 2810


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max())


def _scale(t: torch.Tensor) -> float:
    return float(t.detach().double().abs().max())


def triton_vs_reference() -> dict:
    """Max |Triton - reference| of every output, per top-k setting; run with
    ``TRITON_INTERPRET=1`` set before triton is first imported (see :func:`triton_parity`)."""
    out = {}
    for topk in (False, True):
        case = make_case(WIDE, WIDE_VOCAB, n=24, hidden=32, k=5, seed=2)
        # rows aimed at their target, some of them in the vq06 slice's second block
        late = (case["streams"] == 2).nonzero()[:4, 0]
        case["targets"][late] = WIDE.vq06_start + 2100 + late
        aim = torch.cat([torch.arange(0, 24, 3), late])
        case["hidden"][aim] = case["weight"][case["targets"][aim].clamp_min(0)]
        res = []
        for backend in ("triton", "reference"):
            h = case["hidden"].clone().requires_grad_()
            w = case["weight"].clone().requires_grad_()
            with use_backend(backend):
                o = run(dict(case, hidden=h, weight=w), WIDE, chunk=7, kd_ratio=0.5,
                        no_topk=not topk)
            o.loss.backward()
            res.append((o, h.grad, w.grad))
        (a, ah, aw), (b, bh, bw) = res
        out[str(topk)] = dict(
            ce=_max_err(a.ce, b.ce), kl=_max_err(a.kl, b.kl), loss=_max_err(a.loss, b.loss),
            d_hidden=_max_err(ah, bh), d_weight=_max_err(aw, bw),
            scale=dict(ce=_scale(b.ce), kl=_scale(b.kl), loss=_scale(b.loss), d_hidden=_scale(bh),
                       d_weight=_scale(bw)),
            same_correct=bool(torch.equal(a.correct, b.correct)),
            n_correct=int(b.correct.sum()), n_correct_late=int(b.correct[late].sum()),
            interpreted="kernels.restricted_ce_triton__interpret" in sys.modules)
    return out


@pytest.fixture(scope="module")
def triton_parity() -> dict:
    """:func:`triton_vs_reference` in a fresh interpreter: Triton's own ``tl.sum`` / ``tl.max``
    are decorated when triton is first imported, so an interpreted kernel only works in a
    process that imported triton under ``TRITON_INTERPRET=1`` (torch.optim, vLLM and inductor
    import it earlier in a pytest session)."""
    pytest.importorskip("triton")
    from tests.conftest import REPO, cli_env

    code = ("import json; from tests.kernels.test_restricted_ce import triton_vs_reference as f; "
            "print(json.dumps(f()))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={**cli_env(), "TRITON_INTERPRET": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("topk", [False, True])
def test_triton_matches_reference(triton_parity, topk):
    r = triton_parity[str(topk)]
    assert r["interpreted"]  # the Triton kernel really ran
    assert r["same_correct"] and r["n_correct"] >= 6 and r["n_correct_late"] >= 3
    # fp32 parity, relative to the output's size: the aimed rows make gradients of order 10,
    # where one summation order against another differs by a few 1e-6 absolute
    for key in ("ce", "kl", "loss", "d_hidden", "d_weight"):
        assert r[key] <= 1e-5 * max(1.0, r["scale"][key]), (key, r[key], r["scale"][key])
