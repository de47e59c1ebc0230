"""The audio constraint as it travels to vLLM and OpenAI-compatible servers, and the check that
every returned sequence obeys it.

    args = constraint_args(c)               # [text_size, vq02, vq06, vocab, eot, min_groups, ...]
    constraint_from_args(args) == c          # what the vLLM logits processor rebuilds
    n, why = audio_prefix(generated, c)      # ids that follow the 2:3 pattern (whole groups)

A request carries its constraint as ``extra_args[XARG]`` (in-process vLLM) or
``vllm_xargs[XARG]`` (HTTP): a flat list of ints, the only shape ``vllm_xargs`` accepts.
``max_seconds`` is not sent: it is folded into ``max_tokens`` by the caller.
"""
from __future__ import annotations

from typing import Sequence

from engine.lm.sampling import AudioConstraint, repetition_ban
from engine.tokens import GROUP, TokenLayout

XARG = "stepforge_audio"
_FIELDS = ("text_size", "vq02_size", "vq06_size", "vocab_size")


def constraint_args(c: AudioConstraint) -> list[int]:
    """``c`` as the flat int list a request carries."""
    layout = [getattr(c.layout, f) for f in _FIELDS]
    return [*layout, c.eot, c.min_groups, c.window, c.repeats]


def constraint_from_args(args: Sequence) -> AudioConstraint:
    """Inverse of :func:`constraint_args`. Raises ValueError on a malformed list."""
    try:
        vals = [int(a) for a in args]
    except (TypeError, ValueError):
        raise ValueError(f"{XARG} must be a list of 8 ints, got {args!r}") from None
    if len(vals) != 8:
        raise ValueError(f"{XARG} must be a list of 8 ints, got {len(vals)}")
    layout = TokenLayout(**dict(zip(_FIELDS, vals[:4])))
    eot, min_groups, window, repeats = vals[4:]
    return AudioConstraint(layout, eot=eot, min_groups=min_groups, window=window, repeats=repeats)


def allowed_token_list(c: AudioConstraint) -> list[int]:
    """Every id the constraint can ever allow (audio ids and EOT): a server-side
    ``allowed_token_ids`` for servers without the per-position logits processor."""
    return [c.eot, *range(c.layout.vq02_offset, c.layout.audio_end)]


def audio_prefix(generated: Sequence[int], c: AudioConstraint) -> tuple[int, str]:
    """How many leading ids of ``generated`` obey ``c``: whole groups, then EOT where allowed.

    Returns:
        (n, reason): ``n == len(generated)`` and ``reason == ""`` when all of it obeys;
        otherwise ``generated[:n]`` is the longest obeying prefix of whole groups (plus EOT)
        and reason names the first break, e.g. ``"id 70 at position 7 breaks the 2:3 ..."``.
    """
    slots = c.layout.slot_ranges()
    for i, tok in enumerate(generated):
        slot = i % GROUP
        ban = repetition_ban(generated[max(0, i - c.window):i], c.window, c.repeats)
        if tok == c.eot and slot == 0 and i >= GROUP * c.min_groups and tok != ban:
            return i + 1, ("" if i + 1 == len(generated) else
                           f"{len(generated) - i - 1} ids follow EOT at position {i}")
        lo, hi = slots[slot]
        if not lo <= tok < hi or tok == ban:
            return i - slot, f"id {tok} at position {i} breaks the 2:3 audio pattern"
    whole = len(generated) - len(generated) % GROUP
    if whole != len(generated):
        return whole, f"{len(generated)} ids end inside a {GROUP}-id group"
    return whole, ""
