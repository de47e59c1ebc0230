"""Distillation training with the system turn shared per packed row vs one copy per sequence.

    python -m bench.share_prefix [--rows 96] [--max-tokens 4096] [--threads 2]

The same student (the ``distill_cpu.yaml`` Step1 shape: hidden 192, 4 layers, 6 heads / 2 KV
groups, byte text + Step-Audio codebooks), the same initial weights and the same TTS sequences:
Step-Audio prompts of en-basic sentences with random tags, then 2-3 s of audio ids (random codes
in the 2:3 pattern) and EOT. One epoch over the rows packed into ``max_tokens`` rows by
``distill.data.collate``, without and with ``share_prefix``; a step is forward + backward + AdamW
through the recipe's ``DistillModule`` and restricted ``DistillLoss``. First, untimed, the same
sequences packed both ways must give the same loss (same math). Loss tokens/s counts the audio
ids and EOTs trained on. Ends with ``share_prefix: <loss tokens/s> (<ratio> x one copy per
sequence)``.
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch


def make_samples(n: int, seed: int = 0):
    """``n`` training samples built as ``distill.data.SequenceBuilder`` builds them."""
    from distill.data import IGNORE, NO_LOSS, Sample, stream_codes
    from engine.data.basic_en import sentences
    from engine.instructions import EMOTIONS, Instruction
    from engine.prompts import ByteTokenizer, build_tts_prompt

    tok = ByteTokenizer()
    layout = tok.layout()
    rng = random.Random(seed)
    texts = sentences()
    out = []
    for i in range(n):
        emotion = rng.choice(["neutral", *EMOTIONS])
        instr = Instruction(dialect="english", emotion=emotion, intensity=0 if emotion == "neutral" else 2)
        prompt = build_tts_prompt(texts[i], instr, tok)
        groups = rng.randint(17, 25)  # 2.0-3.0 s
        audio = []
        for _ in range(groups):
            audio += [layout.vq02_offset + rng.randrange(layout.vq02_size) for _ in range(2)]
            audio += [layout.vq06_offset + rng.randrange(layout.vq06_size) for _ in range(3)]
        ids = np.asarray(prompt + audio + [tok.eot], np.int64)
        labels = np.full(len(ids), IGNORE, np.int64)
        streams = np.full(len(ids), NO_LOSS, np.int8)
        first = len(prompt) - 1
        labels[first:-1] = ids[first + 1:]
        streams[first:-1] = stream_codes(len(audio))
        out.append(Sample(f"s{i}", ids, labels, streams, prefix_len=prompt.index(tok.eot) + 1))
    return out, layout, tok


def packs(samples, max_tokens: int, share: bool) -> list[list]:
    """Greedy packs in sample order (all samples share one system turn here)."""
    out, cur, size = [], [], 0
    for s in samples:
        cost = len(s) - (s.prefix_len if share and cur else 0)
        if cur and size + cost > max_tokens:
            out.append(cur)
            cur, size = [], 0
            cost = len(s)
        cur.append(s)
        size += cost
    return out + ([cur] if cur else [])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from distill.data import collate
    from distill.losses import DistillLoss
    from engine.models import build_student
    from distill.recipe import DistillModule

    samples, layout, tok = make_samples(args.rows)

    def fresh():
        student = build_student("step1", "tiny", seed=0, hidden_size=192, intermediate_size=512,
                                num_hidden_layers=4, num_attention_heads=6)
        return DistillModule(student, DistillLoss(layout, eot_id=tok.eot)).train()

    check = packs(samples, args.max_tokens, True)[0]
    with torch.no_grad():
        module = fresh()
        loss_copies, loss_shared = (float(module(collate(check, share))["loss"]) for share in (False, True))
    if abs(loss_copies - loss_shared) > 1e-4 * abs(loss_copies):
        raise SystemExit(f"share_prefix changed the loss: {loss_shared} vs {loss_copies}")
    results = {}
    for share in (False, True):
        module = fresh()
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
        batches = [collate(p, share) for p in packs(samples, args.max_tokens, share)]
        loss_tokens = input_tokens = 0
        module(batches[0])["loss"].backward()  # warm-up, untimed
        opt.zero_grad()
        start = time.perf_counter()
        for batch in batches:
            out = module(batch)
            out["loss"].backward()
            opt.step()
            opt.zero_grad()
            loss_tokens += int(out["n_tokens"])
            input_tokens += batch["input_ids"].shape[1]
        results[share] = (len(batches), loss_tokens, input_tokens, time.perf_counter() - start)
    base, shared = results[False], results[True]
    print(f"{args.rows} sequences (mean {np.mean([len(s) for s in samples]):.0f} tokens, "
          f"system turn {samples[0].prefix_len}), rows of {args.max_tokens} tokens, {args.threads} threads")
    print(f"same {len(check)} sequences packed both ways: loss {loss_copies:.5f} vs {loss_shared:.5f}")
    print(f"{'packing':28s} {'steps':>6s} {'input tok':>10s} {'loss tok':>9s} {'s':>7s} {'loss tok/s':>11s}")
    for name, (steps, lt, it, wall) in (("one copy per sequence", base), ("shared system turn", shared)):
        print(f"{name:28s} {steps:6d} {it:10d} {lt:9d} {wall:7.1f} {lt / wall:11.0f}")
    ratio = (shared[1] / shared[3]) / (base[1] / base[3])
    print(f"share_prefix: {shared[1] / shared[3]:.0f} loss tok/s ({ratio:.2f} x one copy per sequence)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
