"""Fused kernels against their PyTorch references, in one process on the same inputs.

    python -m bench.kernels [--seqs 2048,4096,8192] [--batch 1] [--peak-tflops 989]
                            [--vq-rows 1000000] [--iters 10]

Attention: ``kernels.alibi_attention`` (Triton, causal sqrt-ALiBi) forward and forward+backward in
bf16 at the Step-Audio-TTS-3B shape (48 heads over 4 KV groups, head_dim 64) against what the
model runs without it: SDPA with an explicit ``[1, heads, seq, seq]`` bias. FLOPs count the causal
half of the matmuls (forward ``2 * 2 * b * h * s^2 * d / 2``, backward 2.5 x forward), reported
against the GPU's dense bf16 peak (looked up by device name, or ``--peak-tflops``).
VQ: ``kernels.assign_codes`` vectors/s for the melvq codebooks (vq02 1024 x 120, vq06 4096 x 80,
fp32) against the torch reference. The restricted-vocabulary loss runs through
``bench.kernel_loss.bench_loss`` when that exists.

Without a CUDA GPU the kernels only run under Triton's interpreter, far too slowly to time: the
script says so, runs the same code at toy sizes as a parity check and exits 0. Ends with
``kernels: <attention fwd+bwd TFLOP/s at the longest seq> (<ratio> x SDPA + explicit bias)``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity); first substring match of the device name.
PEAK_BF16 = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H100", 989.0),
             ("H200", 989.0), ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.0), ("A10G", 70.0),
             ("L4", 121.0), ("A10", 125.0), ("RTX 4090", 165.0)]


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def timed(fn, device: str, iters: int) -> float:
    """Seconds per call after one warm-up call (compilation, autotuning, caches)."""
    fn()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - start) / iters


def attention_flops(b: int, h: int, s: int, d: int) -> float:
    """Forward FLOPs of causal attention (QK^T and PV, lower triangle only)."""
    return 2 * 2 * b * h * s * s * d / 2


def attention_case(seq: int, args, device: str) -> dict:
    """Forward and forward+backward seconds for the kernel and the SDPA baseline at one length."""
    from engine.models import alibi_slopes
    from kernels import alibi_attention, alibi_attention_reference, use_backend

    b, h, g, d = args.batch, args.heads, args.groups, args.head_dim
    gen = torch.Generator(device).manual_seed(0)
    q = torch.randn(b, h, seq, d, device=device, generator=gen, dtype=args.dtype)
    k, v = (torch.randn(b, g, seq, d, device=device, generator=gen, dtype=args.dtype)
            for _ in range(2))
    do = torch.randn_like(q)
    slopes = alibi_slopes(h).to(device)
    leaves = [t.requires_grad_() for t in (q, k, v)]

    def fwd(fn):
        with torch.no_grad():
            fn(q, k, v, slopes)

    def fwd_bwd(fn):
        for t in leaves:
            t.grad = None
        fn(q, k, v, slopes).backward(do)

    row = {"seq": seq, "flops": attention_flops(b, h, seq, d)}
    with use_backend("triton"):
        row["fwd"] = timed(lambda: fwd(alibi_attention), device, args.iters)
        row["fwd_bwd"] = timed(lambda: fwd_bwd(alibi_attention), device, args.iters)
    try:
        row["ref_fwd"] = timed(lambda: fwd(alibi_attention_reference), device, args.iters)
        row["ref_fwd_bwd"] = timed(lambda: fwd_bwd(alibi_attention_reference), device, args.iters)
    except torch.OutOfMemoryError:
        row["ref_fwd"] = row["ref_fwd_bwd"] = float("nan")
        print(f"  seq {seq}: SDPA + explicit bias ran out of GPU memory")
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def report_attention(rows: list[dict], args, peak: float | None) -> None:
    print(f"\nattention, {str(args.dtype).removeprefix('torch.')}, batch {args.batch} x "
          f"{args.heads} heads / {args.groups} KV groups, head_dim {args.head_dim}, causal "
          f"sqrt-ALiBi")
    print(f"{'seq':>6s} {'pass':>9s} {'kernel ms':>10s} {'TFLOP/s':>8s} {'% peak':>7s} "
          f"{'SDPA+bias ms':>13s} {'speedup':>8s}")
    for r in rows:
        for name, key, flops in (("fwd", "fwd", r["flops"]),
                                 ("fwd+bwd", "fwd_bwd", 3.5 * r["flops"])):
            tflops = flops / r[key] / 1e12
            share = f"{100 * tflops / peak:6.1f}%" if peak else "      -"
            print(f"{r['seq']:6d} {name:>9s} {1e3 * r[key]:10.2f} {tflops:8.1f} {share} "
                  f"{1e3 * r['ref_' + key]:13.2f} {r['ref_' + key] / r[key]:7.2f}x")


def vq_rows(args, device: str) -> list[tuple]:
    """(codebook, kernel vectors/s, reference vectors/s) for vq02 and vq06."""
    from kernels import assign_codes, assign_codes_reference, use_backend

    out = []
    for name, k, d in (("vq02 1024 x 120", 1024, 120), ("vq06 4096 x 80", 4096, 80)):
        gen = torch.Generator(device).manual_seed(0)
        c = torch.randn(k, d, device=device, generator=gen)
        x = torch.randn(args.vq_rows, d, device=device, generator=gen)
        with use_backend("triton"):
            kernel = timed(lambda: assign_codes(x, c), device, args.iters)
            same = float((assign_codes(x, c) == assign_codes_reference(x, c)).float().mean())
        ref = timed(lambda: assign_codes_reference(x, c), device, args.iters)
        out.append((name, args.vq_rows / kernel, args.vq_rows / ref, same))
    print(f"\nVQ assignment, {args.vq_rows} fp32 vectors")
    print(f"{'codebook':18s} {'kernel vec/s':>13s} {'torch vec/s':>12s} {'speedup':>8s} "
          f"{'same codes':>11s}")
    for name, fast, slow, same in out:
        print(f"{name:18s} {fast:13.3e} {slow:12.3e} {fast / slow:7.2f}x {100 * same:10.3f}%")
    return out


def loss_bench() -> None:
    import importlib.util

    if importlib.util.find_spec("kernels.restricted_ce") is None:
        print("\nrestricted-vocabulary loss: kernels.restricted_ce not present, skipped")
        return
    try:
        from bench.kernel_loss import bench_loss
    except ImportError:
        print("\nrestricted-vocabulary loss: bench.kernel_loss.bench_loss not present, skipped")
        return
    rows = bench_loss(device="cuda")
    print("\nrestricted-vocabulary loss, forward + backward (bench.kernel_loss.bench_loss)")
    print(f"{'loss':34s} {'ms':>8s} {'tokens/s':>10s} {'peak MiB':>9s}")
    for r in rows:
        print(f"{r['name']:34s} {r['ms']:8.2f} {r['tokens_per_s']:10.0f} {r['peak_mib']:9.0f}")
    print(f"restricted loss: {rows[0]['tokens_per_s'] / rows[1]['tokens_per_s']:.2f} x "
          f"{rows[1]['name']}")


def interpreted_sanity(args) -> None:
    """The same code at toy sizes on CPU tensors, kernels interpreted: parity, not speed."""
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        print("triton was imported before TRITON_INTERPRET could be set; run with "
              "TRITON_INTERPRET=1 for the interpreted check")
        print("kernels: n/a (no CUDA GPU)")
        return
    os.environ["TRITON_INTERPRET"] = "1"  # triton reads it at import and at each triton.jit
    args.batch, args.iters, args.vq_rows, args.dtype = 1, 1, 64, torch.float32
    args.heads, args.groups, args.head_dim = 4, 2, 16
    rows = [attention_case(45, args, "cpu")]
    report_attention(rows, args, None)
    vq = vq_rows(args, "cpu")
    err = parity_error()
    print(f"\n(interpreted timings above mean nothing; attention fwd+bwd max error vs reference "
          f"{err:.1e}, VQ codes equal {100 * min(r[3] for r in vq):.1f}%)")
    print(f"kernels: n/a (no CUDA GPU; interpreted parity {err:.1e} x reference)")


def parity_error() -> float:
    from engine.models import alibi_slopes
    from kernels import alibi_attention, alibi_attention_reference, use_backend

    gen = torch.Generator().manual_seed(0)
    q, do = (torch.randn(1, 4, 45, 16, generator=gen) for _ in range(2))
    k, v = (torch.randn(1, 2, 45, 16, generator=gen) for _ in range(2))
    results = []
    for fn in (alibi_attention, alibi_attention_reference):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        with use_backend("triton"):
            out = fn(*leaves, alibi_slopes(4))
        out.backward(do)
        results.append([out.detach()] + [t.grad for t in leaves])
    return max(float((a - b).abs().max()) for a, b in zip(*results))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", default="2048,4096,8192", help="attention lengths, comma-separated")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--vq-rows", type=int, default=1_000_000)
    ap.add_argument("--peak-tflops", type=float, help="dense bf16 peak of this GPU (TFLOP/s)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU: Triton kernels only run interpreted here, too slowly to time; "
              "checking parity at toy sizes instead")
        interpreted_sanity(args)
        return 0
    args.dtype, args.heads, args.groups, args.head_dim = torch.bfloat16, 48, 4, 64
    name = torch.cuda.get_device_name()
    peak = peak_tflops(name, args.peak_tflops)
    print(f"{name}; dense bf16 peak "
          f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}")
    rows = [attention_case(int(s), args, "cuda") for s in args.seqs.split(",")]
    report_attention(rows, args, peak)
    vq_rows(args, "cuda")
    loss_bench()
    last = rows[-1]
    tflops = 3.5 * last["flops"] / last["fwd_bwd"] / 1e12
    print(f"kernels: {tflops:.0f} TFLOP/s attention fwd+bwd at seq {last['seq']} bf16 "
          f"({last['ref_fwd_bwd'] / last['fwd_bwd']:.2f} x SDPA + explicit bias)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
