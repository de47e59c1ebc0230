"""One distillation step on a GPU, timed and checked, before a GPU distill run is planned.

    python -m bench.gpu_step .gpu/en_basic .gpu/variants/medium.yaml --json OUT/gpu_step.json

For the student of a distill YAML, on packs of a run's accepted rows, in bf16 as DeepSpeed trains it:
- forward + backward time per pack with the system turn shared per pack (``data.share_prefix``:
  one attention call per sequence per layer, the PyTorch path) and with the turn repeated in each
  sequence (one fused Triton sqrt-ALiBi attention call per layer over the whole pack), and how many
  operators each launches;
- the Triton kernels against their PyTorch references on the GPU (packed sqrt-ALiBi attention
  forward and backward, bf16 and fp32; the codebook-restricted loss and its gradients).
It writes ``timings`` that ``bench.gpu_distill train --timings`` plans the steps with.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
import yaml


def packs(cfg: dict, run: str, share: bool, max_tokens: int, n: int):
    from distill.preflight import build_data, student_text
    from distill.recipe import build_student

    cfg = json.loads(json.dumps(cfg))
    cfg["data"].update(share_prefix=share, max_tokens=max_tokens)
    student = build_student(cfg)
    tokenizer, layout = student_text(student.config, None)
    _, _, plan = build_data(cfg, [run], tokenizer, layout, 1)  # the packs training would take first
    return student, tokenizer, layout, list(itertools.islice(plan.batches(0), n))


DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: a dry run of the script


def to_device(batch: dict) -> dict:
    return {k: v.to(DEV) if torch.is_tensor(v) else v for k, v in batch.items()}


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def time_steps(module, batches) -> dict:
    from torch.profiler import ProfilerActivity, profile

    for b in batches[:2]:  # warm-up: kernel compiles, allocator
        module(to_device(b))["loss"].backward()
    sync()
    start, tokens = time.perf_counter(), 0
    for b in batches[2:]:
        out = module(to_device(b))
        out["loss"].backward()
        tokens += int(b["input_ids"].numel())
    sync()
    wall = (time.perf_counter() - start) / max(1, len(batches) - 2)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEV.type == "cuda" else [])
    with profile(activities=activities) as prof:
        module(to_device(batches[-1]))["loss"].backward()
        sync()
    events = prof.key_averages()
    return {"s_per_pack": wall, "tokens_per_pack": tokens / max(1, len(batches) - 2),
            "operators": sum(e.count for e in events if not e.key.startswith("autograd")),
            "top_cpu": [(e.key, e.count, round(e.self_cpu_time_total / 1e3, 2))
                        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]]}


def attention_parity() -> list[dict]:
    from kernels import alibi_attention, alibi_attention_reference
    from engine.models import alibi_slopes

    rows = []
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        lengths = [700, 350, 1200, 64, 1]
        cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=DEV)
        total = int(cu[-1])
        q = torch.randn(1, 8, total, 64, device=DEV, dtype=dtype, requires_grad=True)
        k = torch.randn(1, 2, total, 64, device=DEV, dtype=dtype, requires_grad=True)
        v = torch.randn(1, 2, total, 64, device=DEV, dtype=dtype, requires_grad=True)
        slopes = alibi_slopes(8).to(DEV)
        do = torch.randn(1, 8, total, 64, device=DEV, dtype=dtype)
        got = alibi_attention(q, k, v, slopes, cu_seqlens=cu)
        grads = torch.autograd.grad(got, (q, k, v), do)
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        ref = alibi_attention_reference(q64, k64, v64, slopes.double(), cu_seqlens=cu)
        ref_grads = torch.autograd.grad(ref, (q64, k64, v64), do.double())
        rows.append({"dtype": str(dtype), "tokens": total, "out_max_abs": float((got.double() - ref).abs().max()),
                     **{f"d{n}_max_abs": float((g.double() - r).abs().max())
                        for n, g, r in zip("qkv", grads, ref_grads)}})
    return rows


def loss_parity(student, layout, tokenizer, batch) -> dict:
    from distill.losses import DistillLoss
    from distill.recipe import DistillModule
    from kernels import use_backend

    out = {}
    for name in ("triton", "reference"):
        student.model.set_dropout(0.0)  # the same function twice
        model = DistillModule(student, DistillLoss(layout, eot_id=tokenizer.eot)).to(DEV).float()
        model.zero_grad()
        with use_backend(name):
            res = model(to_device(batch))
            res["loss"].backward()
        out[name] = (float(res["loss"]), model.student.lm_head.weight.grad.detach().clone())
    return {"loss_triton": out["triton"][0], "loss_reference": out["reference"][0],
            "head_grad_max_abs": float((out["triton"][1] - out["reference"][1]).abs().max())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("config", type=Path)
    p.add_argument("--packs", type=int, default=6)
    p.add_argument("--shared-max-tokens", type=int, default=4096, help="pack size of the shared-turn path")
    p.add_argument("--fused-max-tokens", type=int, default=16384, help="pack size of the fused path")
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--timings", type=Path, default=None,
                   help="write the fused step time here for `bench.gpu_distill train --timings`")
    p.add_argument("--startup", type=float, default=60.0, help="seconds a distill run spends outside its steps")
    args = p.parse_args(argv)
    from distill.losses import DistillLoss
    from distill.recipe import DistillModule

    cfg = yaml.safe_load(args.config.read_text())
    cfg.pop("budget_share", None)
    report = {"gpu": torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", "torch": torch.__version__}
    for label, share, max_tokens in (("shared_prefix", True, args.shared_max_tokens),
                                     ("fused", False, args.fused_max_tokens)):
        student, tokenizer, layout, batches = packs(cfg, args.run, share, max_tokens, args.packs)
        student.model.set_dropout(cfg["train"]["dropout"])
        module = DistillModule(student, DistillLoss(layout, eot_id=tokenizer.eot)).to(DEV, torch.bfloat16)
        report[label] = time_steps(module, batches)
        report[label]["sequences_per_pack"] = sum(len(b["cu_seqlens"]) - 1 for b in batches) / len(batches)
        print(f"{label}: {report[label]['s_per_pack'] * 1000:.1f} ms per pack of "
              f"{report[label]['tokens_per_pack']:.0f} tokens, {report[label]['operators']} operators", flush=True)
        if label == "fused" and DEV.type == "cuda":
            report["loss_parity_fp32"] = loss_parity(student, layout, tokenizer, batches[0])
            print(f"loss parity: {report['loss_parity_fp32']}", flush=True)
        args.json.write_text(json.dumps(report, indent=1))
    if args.timings:  # DeepSpeed's optimizer step and logging on top of forward + backward
        per_step = report["fused"]["s_per_pack"] * 1.5 + 0.03
        args.timings.write_text(json.dumps({args.config.stem: {"s_per_step": per_step, "startup_s": args.startup}}))
    if DEV.type != "cuda":
        return 0
    report["attention_parity"] = attention_parity()
    for row in report["attention_parity"]:
        print(f"attention parity: {row}", flush=True)
    args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
