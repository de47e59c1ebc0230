"""The 2:3 merge of vq02 and vq06 codes into Step-Audio LM ids, and the decoders' token stream.

Encoding merges ``min(n06 // 3, n02 // 2)`` groups of ``[a02, b02, a06, b06, c06]`` with ids
``65536 + c02`` and ``66560 + c06`` (tails dropped). The CosyVoice-300M-25Hz decoders read the
mixed stream ``id - 65536`` (0..1023 vq02, 1024..5119 vq06) in the same order.

    ids = merge(vq02, vq06)                  # int64 [5 * groups]
    tokens = decoder_tokens(ids)             # int64 [n] in 0..5119
    vq02, vq06 = split(ids)

The id layout is :data:`engine.tokens.STEP_AUDIO`; this module only adds numpy shapes and the
decoder-side stream.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.tokens import STEP_AUDIO, TokenLayout, deinterleave, interleave
from manifests.errors import UserError


def merge(vq02: Sequence[int], vq06: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> np.ndarray:
    """vq02 codes ``[n02]`` (0..1023) and vq06 codes ``[n06]`` (0..4095) -> LM ids int64
    ``[5 * min(n02 // 2, n06 // 3)]``; a code out of range is a UserError."""
    try:
        return np.asarray(interleave(vq02, vq06, layout), dtype=np.int64)
    except ValueError as e:
        raise UserError(f"merge: {e}") from None


def split(ids: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> tuple[np.ndarray, np.ndarray]:
    """LM ids in the 2:3 pattern -> (vq02 codes int64 ``[2g]``, vq06 codes int64 ``[3g]``)."""
    try:
        vq02, vq06 = deinterleave(ids, layout)
    except ValueError as e:
        raise UserError(f"audio ids: {e}") from None
    return np.asarray(vq02, dtype=np.int64), np.asarray(vq06, dtype=np.int64)


def decoder_tokens(ids: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> np.ndarray:
    """LM audio ids -> the decoders' mixed stream ``id - 65536`` int64 ``[n]`` in 0..5119.

    Like upstream, the 2:3 order is not enforced here (a generated sequence is decoded as it
    came); an id outside the audio range is a UserError naming its position.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero(~layout.is_audio(ids))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"audio ids: id {int(ids[i])} at position {i} is not an audio id "
                        f"({layout.vq02_offset}..{layout.audio_end - 1})")
    return ids - layout.vq02_offset


def from_decoder_tokens(tokens: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> np.ndarray:
    """Inverse of :func:`decoder_tokens`: mixed 0..5119 tokens -> LM ids int64 ``[n]``."""
    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    n = layout.vq02_size + layout.vq06_size
    bad = np.flatnonzero((tokens < 0) | (tokens >= n))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"decoder tokens: token {int(tokens[i])} at position {i} is outside 0..{n - 1}")
    return tokens + layout.vq02_offset
