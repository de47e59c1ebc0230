"""Distillation training step with the codebook-restricted head vs the full-vocabulary head.

    python -m bench.distill_head [--batch 4] [--seq 384] [--hidden 256] [--layers 2] [--steps 3]
                                 [--topk 0] [--kd-ratio 0] [--threads 1]

One small Step1 student with the Step-Audio vocabulary (74752 ids, the upstream token layout),
the same initial weights and the same batches for every head: TTS-shaped rows (a text prompt,
then 2:3 audio groups and EOT; loss on the audio and EOT only). A step is forward + backward +
AdamW. Heads: ``DistillLoss(restricted=True)`` (fused chunked loss over the 1025 / 4096 allowed
rows), ``DistillLoss(restricted=False)`` (full ``[loss rows, 74752]`` logits, same mask, same
loss: the baseline of the ratio) and the textbook head (``lm_head`` over every position +
unmasked ``F.cross_entropy``). tokens/s counts input tokens; peak memory is the extra memory of
one step above what was live before it (``VmHWM`` on CPU, ``max_memory_allocated`` on GPU).
Ends with ``distill_head: <tokens/s> (<ratio> x full-vocab)`` and the memory ratio.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from bench.kernel_loss import EOT, audio_targets, peak_mib
from engine.tokens import STEP_AUDIO


def make_batches(n: int, batch: int, seq: int, topk: int, device) -> list[dict]:
    """``n`` batches of ``[batch, seq]`` rows: ~1/6 text prompt, the rest audio + EOT."""
    out = []
    g = torch.Generator().manual_seed(1)
    for i in range(n):
        rows = [audio_targets(seq, topk, seed=100 * i + r) for r in range(batch)]
        b = {key: torch.stack([r[key] for r in rows]) for key in rows[0]}
        prompt = seq // 6
        b["streams"][:, :prompt] = -1
        b["labels"][:, :prompt] = -100
        text = torch.randint(4, STEP_AUDIO.text_size, (batch, seq), generator=g)
        # input ids: the targets shifted right, text where there is no loss
        ids = torch.where(b["labels"] >= 0, b["labels"], text).roll(1, dims=1)
        ids[:, 0] = 1
        b["input_ids"] = ids
        out.append({key: v.to(device) for key, v in b.items()})
    return out


def student(hidden: int, layers: int, device):
    from engine.models import Step1Config, Step1ForCausalLM

    # the tiny preset's 4 heads / 2 KV groups; token_layout None: the upstream Step-Audio layout
    cfg = Step1Config.preset("tiny", vocab_size=STEP_AUDIO.vocab_size, hidden_size=hidden,
                             intermediate_size=3 * hidden, num_hidden_layers=layers,
                             token_layout=None)
    return Step1ForCausalLM(cfg).init_weights(seed=0).to(device)


def heads(kd_ratio: float) -> dict:
    """name -> ``fn(model, batch) -> loss``."""
    from distill.losses import DistillLoss

    restricted = DistillLoss(STEP_AUDIO, EOT, kd_ratio)
    full = DistillLoss(STEP_AUDIO, EOT, kd_ratio, restricted=False)

    def plain(model, b):
        logits = model(b["input_ids"]).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), b["labels"].flatten())

    return {
        "restricted head (DistillLoss)": lambda m, b: restricted(m.model(b["input_ids"]),
                                                                 m.lm_head.weight, b)["loss"],
        "full-vocab head, masked (same loss)": lambda m, b: full(m.model(b["input_ids"]),
                                                                 m.lm_head.weight, b)["loss"],
        "full-vocab head, plain F.cross_entropy": plain,
    }


def run_head(fn, batches, args, device) -> dict:
    model = student(args.hidden, args.layers, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(b):
        opt.zero_grad(set_to_none=True)
        loss = fn(model, b)
        loss.backward()
        opt.step()
        return loss.item()

    step(batches[0])  # warm-up; AdamW allocates its state here
    mib, first = peak_mib(lambda: step(batches[1 % len(batches)]), device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    losses = [step(b) for b in batches]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tokens = sum(b["input_ids"].numel() for b in batches)
    return dict(tokens_per_s=tokens / seconds, step_s=seconds / len(batches), peak_mib=mib,
                loss=losses[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=384)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--topk", type=int, default=0)
    parser.add_argument("--kd-ratio", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = make_batches(args.steps, args.batch, args.seq, args.topk, device)
    loss_tokens = int((batches[0]["streams"] >= 0).sum())
    print(f"vocab {STEP_AUDIO.vocab_size}, hidden {args.hidden}, {args.layers} layers, batch "
          f"{args.batch} x {args.seq} ({loss_tokens} loss tokens), {args.steps} timed steps, "
          f"top-k {args.topk}, kd_ratio {args.kd_ratio}, {device}, {args.threads} threads\n")
    print("| head | tokens/s | s / step | peak extra MiB | last loss |\n|---|---|---|---|---|")
    res = {}
    for name, fn in heads(args.kd_ratio).items():
        r = res[name] = run_head(fn, batches, args, device)
        print(f"| {name} | {r['tokens_per_s']:.0f} | {r['step_s']:.2f} | {r['peak_mib']:.0f} | "
              f"{r['loss']:.4f} |")
    cand, base = list(res.values())[:2]
    print(f"\ndistill_head: {cand['tokens_per_s']:.0f} tokens/s "
          f"({cand['tokens_per_s'] / base['tokens_per_s']:.1f} x full-vocab); peak memory "
          f"{cand['peak_mib']:.0f} MiB ({cand['peak_mib'] / max(base['peak_mib'], 1e-9):.2f} x "
          f"{base['peak_mib']:.0f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
