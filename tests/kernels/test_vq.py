"""kernels.vq: the fused nearest-centroid kernel (interpreted on CPU) against the torch reference
and the codec's numpy ``assign``; the codec sends torch tensors to the kernel and keeps numpy
inputs on its numpy path; GPU parity at the melvq codebook sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.codec import assign
from kernels import assign_codes, assign_codes_reference, use_backend


def clustered(n, k, d, seed=0, noise=0.1, device="cpu"):
    """Rows near random centroids: the nearest centroid wins by a wide margin."""
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(k, d, generator=gen)
    x = c[torch.randint(0, k, (n,), generator=gen)] + noise * torch.randn(n, d, generator=gen)
    return x.to(device), c.to(device)


def sq_dist(x, c, codes):
    return ((x.double() - c.double()[codes]) ** 2).sum(1)


def only_near_ties_differ(x, c, got, want, rel=1e-5):
    """Where two assignments differ, both centroids are (within fp32 rounding) equally near."""
    diff = got != want
    a, b = sq_dist(x, c, got)[diff], sq_dist(x, c, want)[diff]
    return bool(((a - b).abs() <= rel * b.clamp(min=1)).all())


# (rows, codes, dim): partial row and code tiles, dims of melvq's vq06 (80) and vq02 (120) blocks.
@pytest.mark.parametrize("n,k,d", [(300, 200, 80), (77, 130, 120), (5, 1, 16)])
def test_triton_matches_reference_and_numpy(triton_backend, n, k, d):
    x, c = clustered(n, k, d)
    got = assign_codes(x, c)
    assert got.dtype == torch.int64
    assert torch.equal(got, assign_codes_reference(x, c))
    assert np.array_equal(got.numpy(), assign(x.numpy(), c.numpy()))


def test_triton_random_rows_differ_only_at_near_ties(triton_backend):
    gen = torch.Generator().manual_seed(1)
    x, c = torch.randn(400, 20, generator=gen), torch.randn(150, 20, generator=gen)
    got, want = assign_codes(x, c), assign_codes_reference(x, c)
    assert (got == want).float().mean() > 0.99
    assert only_near_ties_differ(x, c, got, want)


def test_triton_bf16(triton_backend):
    x, c = clustered(200, 100, 48)
    x, c = x.bfloat16(), c.bfloat16()
    assert torch.equal(assign_codes(x, c), assign_codes_reference(x, c))


def test_exact_ties_take_the_first_code(triton_backend):
    c = torch.zeros(100, 16)
    c[[10, 70]] = 1.0  # codes 10 and 70 identical and nearest; the winner must be 10
    x = torch.ones(3, 16)
    assert assign_codes(x, c).tolist() == [10, 10, 10]
    assert assign(x.numpy(), c.numpy()).tolist() == [10, 10, 10]


def test_codec_assign_sends_tensors_to_the_kernel_and_keeps_numpy():
    x, c = clustered(500, 64, 24)
    codes_np = assign(x.numpy(), c.numpy())
    assert isinstance(codes_np, np.ndarray) and codes_np.dtype == np.int32
    codes_t = assign(x, c.numpy())  # centroids follow the features onto their device
    assert isinstance(codes_t, torch.Tensor) and codes_t.dtype == torch.int32
    assert np.array_equal(codes_t.numpy(), codes_np)


def test_shipped_codebooks_assign_alike_on_both_paths():
    """The shipped melvq codebooks (1024 / 4096 codes): the torch path (the kernel's reference on
    CPU) agrees with the numpy path that built the shipped codec, but at fp32 near-ties."""
    from engine.codec import load_codec

    book = load_codec().codebook
    gen = np.random.default_rng(0)
    for centroids in (book.vq02, book.vq06):
        c = np.asarray(centroids, np.float32)
        x = c[gen.integers(0, len(c), 2000)] + 0.3 * c.std() * gen.standard_normal(
            (2000, c.shape[1]), dtype=np.float32)
        want = assign(x, c)
        got = assign(torch.from_numpy(x), c).numpy()
        xt, ct = torch.from_numpy(x), torch.from_numpy(c)
        assert only_near_ties_differ(xt, ct, torch.from_numpy(got).long(),
                                     torch.from_numpy(want).long())


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"x \[n, d\]"):
        assign_codes(torch.zeros(4, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="dtypes"):
        assign_codes(torch.zeros(4, 3), torch.zeros(5, 3, dtype=torch.float64))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("k,d", [(1024, 120), (4096, 80)], ids=["vq02", "vq06"])
def test_gpu_codebook_sizes_match_reference(k, d):
    x, c = clustered(100_000, k, d, device="cuda", noise=0.5)
    with use_backend("triton"):
        got = assign_codes(x, c)
    want = assign_codes_reference(x, c)
    assert (got == want).float().mean() > 0.999
    assert only_near_ties_differ(x, c, got, want)
    with use_backend("triton"):
        assert torch.equal(assign_codes(x.bfloat16(), c.bfloat16()),
                           assign_codes_reference(x.bfloat16(), c.bfloat16()))
