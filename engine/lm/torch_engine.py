"""``TorchEngine``: the project's own KV-cached, batched generation in PyTorch.

    engine = TorchEngine("student/")                # or a model object; device="cuda" on GPU
    gens = engine.generate(prompts, SamplingParams(seed=1, audio_constraint=AudioConstraint(layout)))

It serves what vLLM cannot (sqrt-ALiBi Step1 models on CPU) and works for the RoPE student too.
Prompts are sorted by length and run ``max_batch`` at a time: one left-padded prefill, then one
token per step for every live sequence. Finished rows drop out of the batch once a quarter of it
has finished, so the cache is not copied on every finish.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from engine.lm.base import (FINISH_LENGTH, FINISH_STOP, Generation, LMEngine, SamplingParams,
                            check_prompts, per_request)
from engine.lm.sampling import AudioLogitsProcessor, sample
from engine.models import load_student, token_layout
from engine.tokens import GROUP

INITIAL_ROOM = 256  # generated slots allocated up front; the cache doubles when it needs more


class TorchEngine(LMEngine):
    """Batched generation with a KV cache.

    Args:
        model: a checkpoint dir (loaded with ``engine.models.load_student``) or a loaded
            ``Step1ForCausalLM`` / ``LlamaStudent`` (moved and cast in place).
        device: where to run; dtype: default float32 on CPU, the checkpoint's dtype elsewhere.
        max_batch: sequences decoded together.
        prefill_elements: bound on ``rows x heads x len^2`` attention scores per prefill piece.
        num_threads: torch CPU threads while generating (restored after); None leaves them.
            Decoding small models is many small ops, where one thread often beats several on a
            busy machine.
    """

    name = "torch"

    def __init__(self, model: str | Path | nn.Module, device: str | torch.device = "cpu",
                 max_batch: int = 32, dtype: torch.dtype | None = None,
                 prefill_elements: int = 1 << 26, num_threads: int | None = None):
        self.device = torch.device(device)
        if dtype is None and self.device.type == "cpu":
            dtype = torch.float32
        if isinstance(model, (str, Path)):
            model = load_student(model, dtype=dtype, device=self.device)
        else:
            model = model.to(device=self.device, dtype=dtype) if dtype else model.to(self.device)
        self.model = model.eval()
        self.max_batch = max_batch
        self.prefill_elements = prefill_elements
        self.num_threads = num_threads

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @property
    def layout(self):
        """The model's audio id layout (``engine.tokens.TokenLayout``)."""
        return token_layout(self.model.config)

    def generate(self, prompts: Sequence[Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams]) -> list[Generation]:
        prompts = check_prompts(prompts, self.vocab_size)
        plist = per_request(params, len(prompts))
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        out: list[Generation | None] = [None] * len(prompts)
        threads = torch.get_num_threads()
        try:
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            with torch.inference_mode():
                for s in range(0, len(order), self.max_batch):
                    idx = order[s:s + self.max_batch]
                    gens = _Batch(self, [prompts[i] for i in idx], [plist[i] for i in idx]).run()
                    for i, g in zip(idx, gens):
                        out[i] = g
        finally:
            torch.set_num_threads(threads)
        return out

    def close(self) -> None:
        self.model = None

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, cache) -> torch.Tensor:
        """Run left-padded prompts ``ids, mask [batch, len]`` into ``cache``; returns the last
        position's logits ``float32 [batch, vocab]``. Large batches go in pieces of rows."""
        b, n = ids.shape
        rows = max(1, self.prefill_elements // (self.model.config.num_attention_heads * n * n))
        if rows >= b:
            res = self.model(ids, past_key_values=cache, use_cache=True, attention_mask=mask,
                             logits_to_keep=1)
            return res.logits[:, -1].float()
        out, parts = [], []
        for s in range(0, b, rows):
            parts.append(cache.rows(s, s + rows))
            res = self.model(ids[s:s + rows], past_key_values=parts[-1], use_cache=True,
                             attention_mask=mask[s:s + rows], logits_to_keep=1)
            out.append(res.logits[:, -1].float())
        cache.length = n
        cache.padded = any(p.padded for p in parts)
        cache.aligned = all(p.aligned for p in parts)
        return torch.cat(out)


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A request's own random stream: seeded with ``seed``, or fresh randomness for None."""
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    return torch.Generator(device=device).manual_seed(seed)


class _Batch:
    """The decoding state of one batch of requests (rows in prompt order)."""

    def __init__(self, engine: TorchEngine, prompts: list[list[int]], params: list[SamplingParams]):
        self.engine, self.model, self.params = engine, engine.model, params
        self.dev = engine.device
        cfg = self.model.config
        self.budget = [request_budget(p, len(q), cfg.max_positions) for p, q in zip(params, prompts)]
        self.prompts = prompts
        self.steps = max(self.budget)
        b = len(prompts)
        self.hist = torch.zeros(b, self.steps, dtype=torch.long, device=self.dev)
        self.k = max(p.logprobs for p in params)
        if self.k:
            self.top_ids = torch.zeros(b, self.steps, self.k, dtype=torch.int32, device=self.dev)
            self.top_lp = torch.zeros(b, self.steps, self.k, dtype=torch.float32, device=self.dev)
        self.gens = [seeded_generator(p.seed, self.dev) for p in params]
        self.processors = {}
        for p in params:
            c = p.audio_constraint
            if c is not None and c not in self.processors:
                self.processors[c] = AudioLogitsProcessor(c, cfg.vocab_size, self.dev)
        self.done: list[Generation | None] = [None] * b
        self._select(torch.arange(b, device=self.dev))

    def _select(self, live: torch.Tensor) -> None:
        """Make ``live`` (original row indices) the current batch and gather per-row settings."""
        self.live = live
        rows = live.tolist()
        ps = [self.params[r] for r in rows]
        self.active = [True] * len(rows)
        self.cur_gens = [self.gens[r] for r in rows]
        self.temp = torch.tensor([p.temperature for p in ps], device=self.dev)
        filtered = any(p.top_k > 0 or p.top_p < 1 for p in ps)
        self.top_k = torch.tensor([p.top_k for p in ps], device=self.dev) if filtered else None
        self.top_p = torch.tensor([p.top_p for p in ps], device=self.dev) if filtered else None
        self.processed = torch.tensor([p.logprobs_mode == "processed" for p in ps], device=self.dev)
        self.groups = []
        for c, proc in self.processors.items():
            idx = [j for j, p in enumerate(ps) if p.audio_constraint == c]
            sel = None if len(idx) == len(ps) else torch.tensor(idx, device=self.dev)
            if idx:
                self.groups.append((proc, sel))

    def run(self) -> list[Generation]:
        b, n = len(self.prompts), max(len(q) for q in self.prompts)
        ids = torch.zeros(b, n, dtype=torch.long)
        mask = torch.zeros(b, n, dtype=torch.long)
        for i, q in enumerate(self.prompts):
            ids[i, n - len(q):] = torch.tensor(q)
            mask[i, n - len(q):] = 1
        cache = self.model.new_cache(b, n + min(self.steps, INITIAL_ROOM), device=self.dev)
        logits = self.engine.prefill(ids.to(self.dev), mask.to(self.dev), cache)
        for t in range(self.steps):
            nxt = self._step(logits, t)
            if not any(self.active):
                break
            if sum(self.active) < 0.75 * len(self.active):
                keep = torch.tensor([j for j, a in enumerate(self.active) if a], device=self.dev)
                cache.select(keep)
                nxt = nxt.index_select(0, keep)
                self._select(self.live.index_select(0, keep))
            out = self.model(nxt[:, None], past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1].float()
        return self.done

    def _step(self, logits: torch.Tensor, t: int) -> torch.Tensor:
        """Constrain, sample and record step ``t``; returns the sampled ids ``[rows]``."""
        raw = logits.log_softmax(-1) if self.k and not bool(self.processed.all()) else None
        for proc, sel in self.groups:
            w = proc.constraint.window
            recent = self.hist[:, max(0, t - w):t].index_select(0, self.live)
            lengths = torch.full((len(self.active),), t, dtype=torch.long, device=self.dev)
            if sel is None:
                proc.apply(logits, lengths, recent)
            else:
                logits[sel] = proc.apply(logits[sel], lengths[sel], recent[sel])
        nxt = sample(logits, self.temp, self.cur_gens, self.top_k, self.top_p)
        self.hist[self.live, t] = nxt
        if self.k:
            self._record_logprobs(logits, raw, t)
        for j, tok in enumerate(nxt.tolist()):
            if self.active[j]:
                self._maybe_finish(j, tok, t)
        return nxt

    def _record_logprobs(self, logits: torch.Tensor, raw: torch.Tensor | None, t: int) -> None:
        lp = raw
        if bool(self.processed.any()):
            scale = torch.where(self.temp > 0, self.temp, 1.0)[:, None]
            proc = (logits / scale).log_softmax(-1)
            lp = proc if raw is None else torch.where(self.processed[:, None], proc, raw)
        vals, ids = lp.topk(self.k, dim=-1)
        self.top_ids[self.live, t] = ids.to(torch.int32)
        self.top_lp[self.live, t] = vals

    def _maybe_finish(self, j: int, tok: int, t: int) -> None:
        r = int(self.live[j])
        p = self.params[r]
        if tok in p.stop_token_ids:
            reason = FINISH_STOP
        elif t + 1 >= self.budget[r]:
            reason = FINISH_LENGTH
        else:
            return
        self.active[j] = False
        n = t + 1
        gen = Generation(self.hist[r, :n].tolist(), reason)
        if p.logprobs:
            gen.topk_ids = self.top_ids[r, :n, :p.logprobs].cpu().numpy()
            gen.topk_logprobs = self.top_lp[r, :n, :p.logprobs].cpu().numpy()
        self.done[r] = gen


def request_budget(params: SamplingParams, prompt_len: int, max_positions: int) -> int:
    """Ids a request may generate: its token budget, within the model's context, in whole
    groups under an audio constraint; ValueError when nothing fits."""
    budget = min(params.token_budget(), max_positions - prompt_len)
    if params.audio_constraint is not None:
        budget -= budget % GROUP  # whole groups only
    if budget < 1:
        raise ValueError(f"a prompt of {prompt_len} ids leaves no room to generate in the "
                         f"model's {max_positions}-position context")
    return budget
