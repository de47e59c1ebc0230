"""Audio-constrained decoding and sampling, shared by every LM backend.

Once the assistant turn has started (every generated id), only audio ids may be sampled, in the
2:3 pattern: positions 0-1 of each 5-id group from the vq02 range, 2-4 from the vq06 range. EOT is
allowed only between groups, after at least ``min_groups`` groups. Upstream's repetition guard bans
the last id when it occurs at least twice among the last 10 generated ids.

    >>> allowed_ids([], STEP_AUDIO, eot=3)
    [(65536, 66560)]
    >>> allowed_ids([65536, 65537, 66560, 66561, 66562], STEP_AUDIO, eot=3)
    [(3, 4), (65536, 66560)]

:func:`allowed_ids` states the rule for one sequence (vLLM ``allowed_token_ids``, HTTP backends);
:class:`AudioLogitsProcessor` applies the same rule to a ``[batch, vocab]`` logits tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from engine.prompts import EOT
from engine.tokens import GROUP, GROUP_SECONDS, STEP_AUDIO, TokenLayout
from manifests.errors import UserError

NEG_INF = float("-inf")


def repetition_ban(generated: Sequence[int], window: int = 10, repeats: int = 2) -> int | None:
    """The id to ban next: the last id when it occurs ``repeats`` or more times among the last
    ``window`` generated ids (itself included); else None."""
    if not generated or window <= 0 or repeats <= 0:
        return None
    recent = list(generated[-window:])
    return recent[-1] if recent.count(recent[-1]) >= repeats else None


def allowed_ids(generated: Sequence[int], layout: TokenLayout = STEP_AUDIO, eot: int = EOT, *,
                min_groups: int = 1, window: int = 10, repeats: int = 2) -> list[tuple[int, int]]:
    """The ids the next step may sample, as sorted half-open ranges ``[(lo, hi), ...]``.

    Args:
        generated: ids generated so far in the assistant turn (not the prompt).
        eot: the end-of-turn id, allowed only after a whole group.
        min_groups: groups required before EOT may end the turn.
        window, repeats: the repetition guard (``repeats`` 0 disables it).
    """
    n = len(generated)
    lo, hi = layout.slot_ranges()[n % GROUP]
    ban = repetition_ban(generated, window, repeats)
    ranges = [(lo, hi)]
    if ban is not None and lo <= ban < hi:
        ranges = [(a, b) for a, b in ((lo, ban), (ban + 1, hi)) if a < b]
    if n % GROUP == 0 and n >= GROUP * min_groups and eot != ban:
        ranges.append((eot, eot + 1))
    return sorted(ranges)


@dataclass(frozen=True)
class AudioConstraint:
    """Audio-only decoding for TTS: the 2:3 pattern, EOT at group boundaries, the repetition
    guard, and an optional cap on audio length (``max_seconds``, 41.67 ids per second)."""

    layout: TokenLayout = STEP_AUDIO
    eot: int = EOT
    max_seconds: float | None = None
    min_groups: int = 1
    window: int = 10
    repeats: int = 2

    def allowed(self, generated: Sequence[int]) -> list[tuple[int, int]]:
        return allowed_ids(generated, self.layout, self.eot, min_groups=self.min_groups,
                           window=self.window, repeats=self.repeats)

    def max_new_tokens(self, limit: int) -> int:
        """Ids a request may generate: the whole groups that fit in ``limit`` ids and in
        ``max_seconds``. A request that reaches it ends on a group boundary, without EOT."""
        groups = limit // GROUP
        if self.max_seconds is not None:
            groups = min(groups, int(self.max_seconds / GROUP_SECONDS + 1e-9))
        if groups < 1:
            raise UserError(f"max_tokens {limit} / max_seconds {self.max_seconds} leave no room "
                            f"for one {GROUP}-id audio group")
        return groups * GROUP

    def processor(self, vocab_size: int, device="cpu") -> "AudioLogitsProcessor":
        return AudioLogitsProcessor(self, vocab_size, device)


class AudioLogitsProcessor:
    """Applies an :class:`AudioConstraint` to logits ``[batch, vocab]`` in place.

    ``vocab_size`` is the logits' width (it may exceed the layout's, e.g. a padded GPU vocab).
    """

    def __init__(self, constraint: AudioConstraint, vocab_size: int, device="cpu"):
        if constraint.layout.audio_end > vocab_size or not 0 <= constraint.eot < vocab_size:
            raise ValueError(f"a {vocab_size}-id vocabulary cannot hold the audio ids of "
                             f"{constraint.layout} and EOT {constraint.eot}")
        self.constraint = constraint
        table = torch.zeros(GROUP + 1, vocab_size, dtype=torch.bool, device=device)
        for slot, (lo, hi) in enumerate(constraint.layout.slot_ranges()):
            table[slot, lo:hi] = True
        table[GROUP] = table[0]
        table[GROUP, constraint.eot] = True  # row GROUP: a boundary where EOT may end the turn
        self.table = table

    def apply(self, logits: torch.Tensor, lengths: torch.Tensor, recent: torch.Tensor | None
              ) -> torch.Tensor:
        """Mask ``logits [batch, vocab]``.

        Args:
            lengths: ids generated so far per row, long ``[batch]``.
            recent: the last ``window`` generated ids per row, right-aligned, ``-1`` where a row has
                fewer, long ``[batch, w]`` (None: no repetition guard).
        """
        c = self.constraint
        slot = lengths % GROUP
        row = torch.where((slot == 0) & (lengths >= GROUP * c.min_groups), GROUP, slot)
        logits.masked_fill_(~self.table[row], NEG_INF)
        if recent is not None and recent.shape[1] and c.window > 0 and c.repeats > 0:
            recent = recent[:, -c.window:]
            last = recent[:, -1]
            hit = ((recent == last[:, None]).sum(1) >= c.repeats) & (last >= 0)
            rows = hit.nonzero().flatten()
            if rows.numel():
                logits[rows, last[rows]] = NEG_INF
        return logits

    def __call__(self, logits: torch.Tensor, generated: Sequence[Sequence[int]]) -> torch.Tensor:
        """Mask ``logits [batch, vocab]`` given each row's generated ids."""
        w = max(self.constraint.window, 1)
        lengths = torch.tensor([len(g) for g in generated], dtype=torch.long)
        recent = torch.full((len(generated), w), -1, dtype=torch.long)
        for i, g in enumerate(generated):
            tail = list(g[-w:])
            if tail:
                recent[i, w - len(tail):] = torch.tensor(tail, dtype=torch.long)
        dev = logits.device
        return self.apply(logits, lengths.to(dev), recent.to(dev))


def filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
                       ) -> torch.Tensor:
    """Set logits outside each row's top-k / nucleus to -inf.

    Args:
        logits: ``float [batch, vocab]``; top_k: long ``[batch]`` (0 = off); top_p: ``[batch]``.
    """
    vocab = logits.shape[-1]
    k = torch.where(top_k > 0, top_k.clamp(max=vocab), vocab)
    if bool((k >= vocab).all()) and bool((top_p >= 1).all()):
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    rank = torch.arange(vocab, device=logits.device)[None]
    drop = rank >= k[:, None]
    probs = sorted_logits.masked_fill(drop, NEG_INF).softmax(-1)
    mass_before = probs.cumsum(-1) - probs
    drop |= mass_before >= top_p[:, None]
    drop[:, 0] = False
    return logits.masked_fill(torch.empty_like(drop).scatter_(1, order, drop), NEG_INF)


def sample(logits: torch.Tensor, temperature: torch.Tensor, generators: Sequence[torch.Generator],
           top_k: torch.Tensor | None = None, top_p: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one id per row; rows with temperature 0 take the argmax.

    Args:
        logits: ``float [batch, vocab]`` (already constrained).
        temperature: ``[batch]``; generators: one per row, its own random stream.
    Returns:
        long ``[batch]``.
    """
    greedy = temperature <= 0
    scaled = logits / torch.where(greedy, 1.0, temperature)[:, None]
    if top_k is not None or top_p is not None:
        b = logits.shape[0]
        top_k = top_k if top_k is not None else torch.zeros(b, dtype=torch.long, device=logits.device)
        top_p = top_p if top_p is not None else torch.ones(b, device=logits.device)
        scaled = filter_top_k_top_p(scaled, top_k, top_p)
    # Inverse CDF with one uniform per row from the row's own generator: a request's draws do
    # not depend on what else is in the batch. Zero-probability ids are never hit (right=True on
    # a flat CDF step), and u < 1 keeps the target below the total.
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64, device=g.device)
                   for g in generators]).to(logits.device)
    cdf = scaled.softmax(-1).to(torch.float64).cumsum(-1)
    target = (u * cdf[:, -1]).clamp(max=cdf[:, -1] * (1 - 1e-12))
    drawn = torch.searchsorted(cdf, target[:, None], right=True).squeeze(1)
    drawn = drawn.clamp(max=logits.shape[-1] - 1)
    return torch.where(greedy, logits.argmax(-1), drawn)
