"""TorchEngine throughput against one-request-at-a-time generation on a tiny student.

    python -m bench.lm_throughput [--requests 32] [--tokens 200] [--threads 2]

Same process, same prompts (Step-Audio TTS prompts with ByteTokenizer, ~550 ids), same weights.
Every request generates exactly ``--tokens`` ids (no stop id), so all rows do equal work.
Candidates: TorchEngine with ``max_batch=32`` for the sqrt-ALiBi Step1 and the RoPE student.
Baselines: transformers' ``LlamaForCausalLM.generate`` one request at a time (the RoPE student's
weights) and TorchEngine with ``max_batch=1``. Tokens/s counts generated ids over wall time,
prefill included.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from distill.models import build_student, export
from engine.instructions import Instruction
from engine.lm import AudioConstraint, SamplingParams, TorchEngine
from engine.prompts import ByteTokenizer, build_tts_prompt

SENTENCES = ["Hello there, how are you today?", "The weather is lovely in spring.",
             "Please read this sentence slowly.", "Numbers like 42 are hard to say.",
             "A quick brown fox jumps over the lazy dog.", "Welcome to the data engine."]


def prompts(n: int) -> list[list[int]]:
    tok = ByteTokenizer()
    return [build_tts_prompt(f"{SENTENCES[i % len(SENTENCES)]} ({i})", Instruction(), tok)
            for i in range(n)]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def hf_one_at_a_time(model_dir: str, ps: list[list[int]], tokens: int) -> int:
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(model_dir).eval()
    n = 0
    with torch.inference_mode():
        for i, p in enumerate(ps):
            torch.manual_seed(i)
            ids = torch.tensor([p])
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                              temperature=0.7, max_new_tokens=tokens, min_new_tokens=tokens,
                              pad_token_id=0)
            n += out.shape[1] - ids.shape[1]
    return n


def engine_run(model, ps, tokens: int, max_batch: int, constrained: bool = False) -> int:
    engine = TorchEngine(model, max_batch=max_batch)
    c = AudioConstraint(engine.layout, repeats=2) if constrained else None
    params = [SamplingParams(seed=i, max_tokens=tokens, stop_token_ids=(), audio_constraint=c)
              for i in range(len(ps))]
    return sum(len(g.token_ids) for g in engine.generate(ps, params))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-hf", action="store_true", help="leave out the transformers baseline")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ps = prompts(args.requests)
    step1, rope = build_student("step1", "tiny", seed=0), build_student("llama", "tiny", seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        export(rope, d)
        engine_run(step1, ps[:2], 8, 2)  # warm-up
        runs = [("TorchEngine step1 batch 32", lambda: engine_run(step1, ps, args.tokens, 32)),
                ("TorchEngine step1 batch 32 + audio constraint",
                 lambda: engine_run(step1, ps, args.tokens, 32, constrained=True)),
                ("TorchEngine llama batch 32", lambda: engine_run(rope, ps, args.tokens, 32)),
                ("TorchEngine step1 batch 1", lambda: engine_run(step1, ps, args.tokens, 1)),
                ("TorchEngine llama batch 1", lambda: engine_run(rope, ps, args.tokens, 1))]
        if not args.skip_hf:
            runs.append(("HF LlamaForCausalLM.generate batch 1",
                         lambda: hf_one_at_a_time(d, ps, args.tokens)))
        for name, fn in runs:
            sec, n = timed(fn)
            rows.append((name, n, sec, n / sec))
            print(f"{name:48s} {n:6d} tokens {sec:7.2f} s {n / sec:9.1f} tok/s", flush=True)
    best = rows[0][3]
    base_name, base = ("HF generate", rows[-1][3]) if not args.skip_hf else ("batch 1", rows[3][3])
    print(f"lm_throughput: {best:.0f} tok/s ({best / base:.1f} x {base_name} one at a time; "
          f"{args.requests} x {args.tokens} tokens, tiny step1, {args.threads} threads)")


if __name__ == "__main__":
    main()
