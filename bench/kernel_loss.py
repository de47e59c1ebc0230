"""The fused codebook-restricted loss alone against the full-vocabulary reference, vocab 74752.

    python -m bench.kernel_loss [--rows 2048] [--hidden 256] [--topk 0] [--kd-ratio 0] [--threads 1]

One call = forward + backward of the loss over ``rows`` positions laid out as 2:3 audio groups
(last position EOT), from random hidden states and a random ``[74752, hidden]`` head. Candidate:
:func:`kernels.restricted_linear_ce` (Triton on CUDA, the chunked reference on CPU); baseline:
:func:`distill.losses.full_vocab_loss` (full logits, masked). Peak memory is the extra memory one
call needs above what was live before it: ``torch.cuda.max_memory_allocated`` on GPU, the process'
peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs``) on CPU. Ends with
``kernel_loss: <ms> (<ratio> x full-vocab)``. ``bench_loss()`` is the importable part.
"""
from __future__ import annotations

import argparse
import ctypes
import re
import time

import torch

from engine.tokens import STEP_AUDIO

EOT = 3


def _rss_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 1024


def _pin_malloc() -> None:
    """Large CPU buffers straight from mmap, freed straight back: RSS then follows live tensors
    (glibc's adaptive threshold would otherwise keep freed logits resident and hide later peaks)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB
    except (OSError, AttributeError):
        pass


def peak_mib(fn, device: torch.device) -> tuple[float, object]:
    """``(MiB above the memory live at the start, fn())`` for one call of ``fn``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, out
    _pin_malloc()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    base = _rss_mib("VmRSS")
    out = fn()
    return _rss_mib("VmHWM") - base, out


def timed_ms(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in ms (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]


def audio_targets(n: int, k: int = 0, seed: int = 0, device="cpu") -> dict:
    """``labels`` / ``streams`` ``[n]`` of 2:3 groups ending in EOT, and a teacher top-k
    (``topk_ids`` / ``topk_logprobs`` ``[n, k]``) when ``k``."""
    from distill.data import stream_codes

    g = torch.Generator().manual_seed(seed)
    n_audio = (n - 1) // 5 * 5  # whole groups, then EOT; leftover rows (prompt) carry no loss
    streams = torch.cat([torch.full((n - n_audio - 1,), -1, dtype=torch.int8),
                         torch.from_numpy(stream_codes(n_audio))])
    vq02 = STEP_AUDIO.vq02_offset + torch.randint(0, 1024, (n,), generator=g)
    vq06 = STEP_AUDIO.vq06_offset + torch.randint(0, 4096, (n,), generator=g)
    labels = torch.where(streams == 2, vq06, vq02)
    labels[-1] = EOT
    labels[streams < 0] = -100
    out = dict(labels=labels, streams=streams)
    if k:  # the target first, then other ids of the same codebook; EOT leads at the end
        is06 = (streams == 2)[:, None]
        start = torch.where(is06, STEP_AUDIO.vq06_offset, STEP_AUDIO.vq02_offset)
        size = torch.where(is06, 4096, 1024)
        code = labels[:, None] - start + 7 * torch.arange(k)[None]
        out["topk_ids"] = start + code % size
        out["topk_ids"][-1, 0] = EOT
        out["topk_logprobs"] = torch.log_softmax(torch.randn(n, k + 1, generator=g), -1)[:, :k]
    return {key: v.to(device) for key, v in out.items()}


def _defaults(device: torch.device, rows, hidden, dtype):
    gpu = device.type == "cuda"
    return (rows or (16384 if gpu else 2048), hidden or (3072 if gpu else 256),
            dtype or (torch.bfloat16 if gpu else torch.float32))


def bench_loss(rows: int | None = None, hidden: int | None = None, device=None, dtype=None,
               topk: int = 0, kd_ratio: float = 0.0, repeats: int = 3) -> list[dict]:
    """Time and peak memory of the restricted loss vs the full-vocabulary reference.

    Args:
        rows: positions per call (default 16384 on GPU, 2048 on CPU).
        hidden: hidden size (default 3072, the TTS-3B width, on GPU; 256 on CPU).
        device: default CUDA when available. dtype: default bf16 on GPU, fp32 on CPU.
        topk: teacher candidates per position (0: CE only); kd_ratio: their weight.
    Returns:
        ``[{"name", "ms", "tokens_per_s", "peak_mib"}]``, the restricted loss first.
    """
    from distill.losses import full_vocab_loss
    from kernels import HeadRanges, pick, restricted_linear_ce

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows, hidden, dtype = _defaults(device, rows, hidden, dtype)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(rows, hidden, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(STEP_AUDIO.vocab_size, hidden, generator=g) * 0.02).to(device, dtype)
    w.requires_grad_()
    batch = audio_targets(rows, topk, device=device)
    ranges = HeadRanges.from_layout(STEP_AUDIO, EOT)
    topk_kw = {key: batch[key] for key in ("topk_ids", "topk_logprobs") if key in batch}

    def restricted():
        out = restricted_linear_ce(h, w, batch["labels"], batch["streams"], ranges,
                                   kd_ratio=kd_ratio, reduction="mean", **topk_kw)
        out.loss.backward()
        h.grad = w.grad = None

    def full():
        full_vocab_loss(h, w, batch, ranges, kd_ratio)["loss"].backward()
        h.grad = w.grad = None

    out = []
    for name, fn in ((f"restricted ({pick(h, w)})", restricted), ("full-vocab reference", full)):
        ms = timed_ms(fn, device, repeats)
        mib, _ = peak_mib(fn, device)
        out.append(dict(name=name, ms=ms, tokens_per_s=rows / ms * 1000, peak_mib=mib))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--topk", type=int, default=0)
    parser.add_argument("--kd-ratio", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = bench_loss(args.rows, args.hidden, topk=args.topk, kd_ratio=args.kd_ratio,
                     repeats=args.repeats)
    print("| loss | ms / call | tokens/s | peak extra MiB |\n|---|---|---|---|")
    for r in res:
        print(f"| {r['name']} | {r['ms']:.1f} | {r['tokens_per_s']:.0f} | {r['peak_mib']:.0f} |")
    cand, base = res
    print(f"kernel_loss: {cand['tokens_per_s']:.0f} tok/s "
          f"({cand['tokens_per_s'] / base['tokens_per_s']:.1f} x full-vocab reference); "
          f"peak extra memory {cand['peak_mib']:.0f} MiB "
          f"({cand['peak_mib'] / max(base['peak_mib'], 1e-9):.3f} x {base['peak_mib']:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
