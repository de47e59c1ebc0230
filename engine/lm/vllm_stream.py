"""Streaming on vLLM: its engine's own continuous batching, driven one step at a time, with each
request's new ids handed out as they are sampled.

    batcher = VLLMStreamBatcher(VLLMEngine("student/"))
    handle = batcher.submit(prompt_ids, params, on_ids=lambda ids, done, error: ...)
    handle.cancel()                  # aborted in vLLM before its next step
    batcher.close()

The same ``submit`` interface as :class:`engine.lm.stream.ContinuousBatcher` (the torch engine's).
vLLM schedules: requests join and leave its running batch at every step, and its prefix cache
reuses the KV of prompt blocks already computed (the shared system and clone turns), so the
``prefix`` hint is not needed here. One thread owns the vLLM engine; use the engine's
``generate`` or this batcher, not both at once.
"""
from __future__ import annotations

import itertools
from typing import Sequence

from engine.lm.base import FINISH_LENGTH, FINISH_STOP, Generation, SamplingParams, check_prompts
from engine.lm.stream import CLOSED, FINISH_CANCELLED, Handle, OnIds, StepBatcher
from engine.lm.vllm_engine import VLLMEngine, enforce_constraint


class VLLMStreamBatcher(StepBatcher):
    """Streams requests through ``engine``'s vLLM ``LLMEngine`` (``add_request`` / ``step``)."""

    def __init__(self, engine: VLLMEngine):
        super().__init__("stepforge-vllm-stream")
        self.engine = engine
        self.core = engine.llm.llm_engine
        self._live: dict[str, tuple[Handle, list[int]]] = {}
        self._ids = itertools.count()
        self._thread.start()

    def submit(self, ids: Sequence[int], params: SamplingParams, on_ids: OnIds, prefix: int = 0) -> Handle:
        """Queue one request (``prefix`` is accepted for the interface; vLLM finds shared
        prefixes itself). Raises ValueError for a prompt or params vLLM cannot run."""
        [ids] = check_prompts([ids], self.engine.vocab_size)
        if params.logprobs:
            raise ValueError("streaming sends ids without logprobs; use VLLMEngine.generate")
        self.engine.sampling_params(params, len(ids))  # refuses what cannot run, here
        return self._enqueue(ids, params, on_ids, prefix)

    @property
    def running(self) -> int:
        return len(self._live)

    def _loop(self) -> None:
        while True:
            if not self._admit(block=not self._live):
                break
            self._abort_cancelled()
            if not self._live:
                continue
            for listen in self.step_listeners:
                listen(len(self._live))
            try:
                outputs = self.core.step()
            except Exception as exc:  # the engine failed: every running request hears of it
                self._fail_all(exc)
                continue
            for out in outputs:
                self._deliver(out)
        self._fail_all(RuntimeError("the batcher was closed"))

    def _admit(self, block: bool) -> bool:
        from vllm.sampling_params import RequestOutputKind

        while True:
            handle = self._take(block)
            if handle is None or handle is CLOSED:
                return handle is None
            block = False
            request_id = f"stream-{next(self._ids)}"
            try:
                vparams = self.engine.sampling_params(handle.params, len(handle.ids))
                vparams.output_kind = RequestOutputKind.DELTA
                self.core.add_request(request_id, {"prompt_token_ids": handle.ids}, vparams)
            except Exception as exc:
                handle.on_ids([], None, exc)
                continue
            self._live[request_id] = (handle, [])

    def _abort_cancelled(self) -> None:
        gone = [rid for rid, (handle, _) in self._live.items() if handle.cancelled.is_set()]
        if not gone:
            return
        self.core.abort_request(gone)
        for rid in gone:
            handle, ids = self._live.pop(rid)
            handle.on_ids([], Generation(list(ids), FINISH_CANCELLED), None)

    def _deliver(self, out) -> None:
        entry = self._live.get(out.request_id)
        if entry is None:
            return
        handle, ids = entry
        new = [int(t) for t in out.outputs[0].token_ids]
        ids.extend(new)
        done = None
        if out.finished:
            del self._live[out.request_id]
            stop = bool(ids) and ids[-1] in handle.params.stop_token_ids
            done = enforce_constraint(Generation(list(ids), FINISH_STOP if stop else FINISH_LENGTH,
                                                 info={"vllm_finish_reason": out.outputs[0].finish_reason}),
                                      handle.params)
        handle.on_ids(new, done, None)

    def _fail_all(self, exc: BaseException) -> None:
        live, self._live = self._live, {}
        if live:
            try:
                self.core.abort_request(list(live))
            except Exception:  # the engine is gone already; the requests are failed below
                pass
        for handle, _ in live.values():
            handle.on_ids([], None, exc)
