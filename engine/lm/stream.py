"""Continuous batching for the torch engine: requests join and leave the running batch at every
decoding step, and each request's ids reach its caller as they are sampled.

    batcher = ContinuousBatcher(TorchEngine("student/"), max_batch=16)
    handle = batcher.submit(prompt_ids, params, on_ids=lambda ids, done, error: ...,
                            prefix=len(system_turn))
    handle.cancel()                  # the request leaves the batch at the next step
    batcher.close()

One thread owns the model. Between two steps it admits waiting requests (prefilled one at a time
and joined into the batch's KV cache, left-padded) and drops finished or cancelled ones (their
rows leave the cache); every step then samples one id for every running request. Sampling is
:class:`engine.lm.torch_engine.TorchEngine`'s (the audio constraint, each request's own seeded
generator), so a seeded request gives the ids ``TorchEngine.generate`` gives, whatever else runs.

Prompts that begin alike (the Step-Audio system turn, a voice's clone turn) share a prefix: the
caller says how many leading ids are shareable, and their KV is computed once and kept (least
recently used first out) instead of being recomputed for every request.
"""
from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from engine.lm.base import FINISH_LENGTH, FINISH_STOP, Generation, SamplingParams, check_prompts
from engine.lm.sampling import AudioLogitsProcessor, sample
from engine.lm.torch_engine import TorchEngine, request_budget, seeded_generator

FINISH_CANCELLED = "cancelled"  # the caller left before the request finished
CLOSED = object()  # what StepBatcher._take returns once the batcher is closed
ROOM = 64  # free KV slots a joining request brings; the cache doubles when it needs more

# on_ids(new_ids, done, error): new ids as they are sampled; ``done`` (the whole Generation) once
# the request finished; ``error`` when it could not run. Called on the batcher's thread.
OnIds = Callable[[list, "Generation | None", "BaseException | None"], None]


@dataclass
class Handle:
    """A submitted request; :meth:`cancel` makes it leave the batch at the next step."""

    ids: list[int]
    params: SamplingParams
    on_ids: OnIds
    prefix: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


class _Row:
    """A running request: its sampled ids and random stream."""

    def __init__(self, handle: Handle, budget: int, device: torch.device):
        self.handle, self.budget = handle, budget
        self.params = handle.params
        self.generated: list[int] = []
        self.generator = seeded_generator(handle.params.seed, device)


class StepBatcher(ABC):
    """What both streaming batchers share: a queue of submitted :class:`Handle` s and the one
    thread that owns the engine (``_loop``, in the subclass). ``step_listeners`` are called with
    the batch size of every step (metrics)."""

    def __init__(self, thread_name: str):
        self.step_listeners: list = []
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)

    def _enqueue(self, ids: list[int], params: SamplingParams, on_ids: OnIds, prefix: int) -> Handle:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        handle = Handle(ids, params, on_ids, prefix)
        self._queue.put(handle)
        return handle

    @property
    def waiting(self) -> int:
        """Requests submitted and not yet decoding."""
        return self._queue.qsize()

    def _take(self, block: bool):
        """The next submitted request not cancelled (cancelled ones are answered here); None when
        none waits, ``CLOSED`` once :meth:`close` was called."""
        while True:
            try:
                handle = self._queue.get() if block else self._queue.get_nowait()
            except queue.Empty:
                return None
            if handle is None:
                return CLOSED
            if not handle.cancelled.is_set():
                return handle
            handle.on_ids([], Generation([], FINISH_CANCELLED), None)

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=60)

    @abstractmethod
    def _loop(self) -> None:
        """The engine's thread: admit, step, hand out ids, until ``close``."""


class ContinuousBatcher(StepBatcher):
    """Decodes up to ``max_batch`` requests together, one step at a time, on ``engine``'s model.

    Args:
        engine: a loaded :class:`TorchEngine` (its model is used from the batcher's thread only).
        max_batch: requests decoding together; more wait (``waiting``) and join as rows leave.
        prefixes: shared prompt prefixes whose KV is kept.
    """

    def __init__(self, engine: TorchEngine, max_batch: int = 16, prefixes: int = 16):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        super().__init__("stepforge-continuous-batcher")
        self.engine, self.model, self.max_batch = engine, engine.model, max_batch
        self.device = engine.device
        self.vocab = engine.vocab_size
        self.prefix_hits = 0
        self._prefixes: OrderedDict = OrderedDict()
        self._max_prefixes = prefixes
        self._rows: list[_Row] = []
        self._cache = None
        self._logits: torch.Tensor | None = None
        self._processors: dict = {}
        self._thread.start()

    # -- the caller's side -------------------------------------------------------------------
    def submit(self, ids: Sequence[int], params: SamplingParams, on_ids: OnIds, prefix: int = 0) -> Handle:
        """Queue one request. ``prefix``: how many leading ids other requests share (0: none).

        Raises:
            ValueError: an empty prompt, an id outside the vocabulary, a bad prefix, or logprobs
                (which only ``TorchEngine.generate`` returns).
        """
        [ids] = check_prompts([ids], self.vocab)
        if not 0 <= prefix < len(ids):
            raise ValueError(f"prefix {prefix} must leave at least one of the prompt's {len(ids)} ids")
        if params.logprobs:
            raise ValueError("continuous batching streams ids without logprobs; use TorchEngine.generate")
        return self._enqueue(ids, params, on_ids, prefix)

    @property
    def running(self) -> int:
        return len(self._rows)

    # -- the batcher's thread ----------------------------------------------------------------
    def _loop(self) -> None:
        threads = self.engine.num_threads
        if threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            while True:
                if not self._admit(block=not self._rows):
                    break
                if self._rows:
                    try:
                        self._step()
                    except Exception as exc:  # a bug: every running request hears of it
                        self._fail_all(exc)
        self._fail_all(RuntimeError("the batcher was closed"))
        for handle in self._drain():
            handle.on_ids([], None, RuntimeError("the batcher was closed"))

    def _drain(self) -> list[Handle]:
        out = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return out
            if item is not None:
                out.append(item)

    def _admit(self, block: bool) -> bool:
        """Join waiting requests into the batch while there is room; False once closed."""
        while len(self._rows) < self.max_batch:
            handle = self._take(block)
            if handle is None or handle is CLOSED:
                return handle is None
            block = False
            try:
                budget = request_budget(handle.params, len(handle.ids), self.model.config.max_positions)
                cache, logits = self._prefill(handle)
            except Exception as exc:
                handle.on_ids([], None, exc)
                continue
            self._join(_Row(handle, budget, self.device), cache, logits)
        return True

    def _prefill(self, handle: Handle):
        """A one-row cache holding the prompt, and its last position's logits; the shared prefix
        comes from the prefix store (computed on its first use)."""
        ids = handle.ids
        start = 0
        cache = None
        if handle.prefix:
            key = tuple(ids[:handle.prefix])
            stored = self._prefixes.get(key)
            if stored is None:
                stored = self.model.new_cache(1, handle.prefix, device=self.device)
                self.model(torch.tensor([ids[:handle.prefix]], device=self.device), past_key_values=stored,
                           use_cache=True, logits_to_keep=1)
                self._prefixes[key] = stored
                while len(self._prefixes) > self._max_prefixes:
                    self._prefixes.popitem(last=False)
            else:
                self.prefix_hits += 1
                self._prefixes.move_to_end(key)
            cache = stored.copy(len(ids) - handle.prefix + ROOM)
            start = handle.prefix
        if cache is None:
            cache = self.model.new_cache(1, len(ids) + ROOM, device=self.device)
        out = self.model(torch.tensor([ids[start:]], device=self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        return cache, out.logits[:, -1].float()

    def _join(self, row: _Row, cache, logits: torch.Tensor) -> None:
        if self._cache is None:
            self._cache, self._logits = cache, logits
        else:
            self._cache.join(cache)
            self._logits = torch.cat([self._logits, logits])
        self._rows.append(row)
        c = row.params.audio_constraint
        if c is not None and c not in self._processors:
            self._processors[c] = AudioLogitsProcessor(c, self.vocab, self.device)

    def _step(self) -> None:
        """Sample one id for every row, hand them out, drop finished rows, run the model once."""
        rows, logits = self._rows, self._logits
        for listen in self.step_listeners:
            listen(len(rows))
        self._constrain(rows, logits)
        temp = torch.tensor([r.params.temperature for r in rows], device=self.device)
        top_k = top_p = None
        if any(r.params.top_k > 0 or r.params.top_p < 1 for r in rows):
            top_k = torch.tensor([r.params.top_k for r in rows], device=self.device)
            top_p = torch.tensor([r.params.top_p for r in rows], device=self.device)
        nxt = sample(logits, temp, [r.generator for r in rows], top_k, top_p)
        keep = []
        for j, (row, tok) in enumerate(zip(rows, nxt.tolist())):
            row.generated.append(tok)
            reason = None
            if tok in row.params.stop_token_ids:
                reason = FINISH_STOP
            elif len(row.generated) >= row.budget:
                reason = FINISH_LENGTH
            elif row.handle.cancelled.is_set():
                reason = FINISH_CANCELLED
            done = Generation(list(row.generated), reason) if reason else None
            row.handle.on_ids([tok], done, None)
            if reason is None:
                keep.append(j)
        if len(keep) < len(rows):
            self._keep(keep)
            nxt = nxt[keep]
        if self._rows:
            out = self.model(nxt[:, None], past_key_values=self._cache, use_cache=True)
            self._logits = out.logits[:, -1].float()

    def _constrain(self, rows: list[_Row], logits: torch.Tensor) -> None:
        """Apply each row's audio constraint (rows grouped by constraint)."""
        for constraint, proc in self._processors.items():
            idx = [j for j, r in enumerate(rows) if r.params.audio_constraint == constraint]
            if not idx:
                continue
            w = max(constraint.window, 1)
            lengths = torch.tensor([len(rows[j].generated) for j in idx], device=self.device)
            recent = torch.full((len(idx), w), -1, dtype=torch.long)
            for i, j in enumerate(idx):
                tail = rows[j].generated[-w:]
                if tail:
                    recent[i, w - len(tail):] = torch.tensor(tail)
            recent = recent.to(self.device)
            if len(idx) == len(rows):
                proc.apply(logits, lengths, recent)
            else:
                sel = torch.tensor(idx, device=self.device)
                logits[sel] = proc.apply(logits[sel], lengths, recent)

    def _keep(self, keep: list[int]) -> None:
        """Make rows ``keep`` (indices) the batch; the others' cache rows go."""
        self._rows = [self._rows[j] for j in keep]
        if not keep:
            self._cache, self._logits = None, None
            return
        rows = torch.tensor(keep, device=self.device)
        self._cache.select(rows)
        self._cache.trim()
        self._logits = self._logits.index_select(0, rows)

    def _fail_all(self, exc: BaseException) -> None:
        rows, self._rows = self._rows, []
        self._cache, self._logits = None, None
        for row in rows:
            row.handle.on_ids([], None, exc)
