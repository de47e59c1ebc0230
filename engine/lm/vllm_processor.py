"""The audio constraint inside vLLM (v1 engine): a batch-level logits processor.

vLLM builds it in each worker from its qualified name, so the same class serves the in-process
engine and a server:

    LLM(model=DIR, logits_processors=[PROCESSOR])                 # VLLMEngine does this
    vllm serve DIR --skip-tokenizer-init --logits-processors engine.lm.vllm_processor:AudioConstraintLogitsProcessor

A request opts in with ``SamplingParams(extra_args={XARG: constraint_args(c)})`` (HTTP:
``"vllm_xargs"``); others pass through untouched. Each step it masks every opted-in row to the ids
``engine.lm.sampling.allowed_ids`` allows after that row's generated ids: the 2:3 slot ranges,
EOT only at group boundaries, and the repetition guard. It runs before sampling and after vLLM
computes raw logprobs, so returned logprobs stay the model's own.
"""
from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from engine.lm.constraint_args import XARG, constraint_from_args
from engine.lm.sampling import AudioConstraint, AudioLogitsProcessor

PROCESSOR = "engine.lm.vllm_processor:AudioConstraintLogitsProcessor"


def _constraint(params) -> AudioConstraint | None:
    args = (params.extra_args or {}).get(XARG)
    return None if args is None else constraint_from_args(args)


class AudioConstraintLogitsProcessor(LogitsProcessor):
    """Applies each request's :class:`AudioConstraint` to its row of the batch logits."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        # batch row -> (constraint, the request's live output id list)
        self.rows: dict[int, tuple[AudioConstraint, list[int]]] = {}
        self.masks: dict[tuple[AudioConstraint, int], AudioLogitsProcessor] = {}

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        _constraint(sampling_params)  # a malformed list is a 400 for the request, not a crash

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which id is most likely, so greedy requests need it too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        def new(params, _prompt_ids, output_ids):
            c = _constraint(params)
            return None if c is None else (c, output_ids)

        process_dict_updates(self.rows, batch_update, new)

    def _mask(self, c: AudioConstraint, width: int) -> AudioLogitsProcessor:
        key = (c, width)
        if key not in self.masks:
            self.masks[key] = AudioLogitsProcessor(c, width, self.device)
        return self.masks[key]

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        groups: dict[AudioConstraint, list[int]] = {}
        for row, (c, _) in self.rows.items():
            groups.setdefault(c, []).append(row)
        for c, rows in groups.items():
            w = max(c.window, 1)
            lengths = torch.tensor([len(self.rows[r][1]) for r in rows], dtype=torch.long)
            recent = torch.full((len(rows), w), -1, dtype=torch.long)
            for j, r in enumerate(rows):
                # placeholders (-1) of not-yet-known ids under async scheduling stay -1: no ban
                tail = self.rows[r][1][-w:]
                if tail:
                    recent[j, w - len(tail):] = torch.tensor(tail, dtype=torch.long)
            idx = torch.tensor(rows, dtype=torch.long, device=logits.device)
            sub = logits.index_select(0, idx)
            sub = self._mask(c, logits.shape[-1]).apply(sub, lengths.to(logits.device),
                                                         recent.to(logits.device))
            logits.index_copy_(0, idx, sub)
        return logits
