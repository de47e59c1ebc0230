"""The Step-Audio token id layout and the 2:3 dual-codebook interleave.

Text ids sit at 0..65535, linguistic (vq02, 16.7 Hz, 1024 codes) audio ids at 65536 + c and
semantic (vq06, 25 Hz, 4096 codes) audio ids at 66560 + c, in a 74752-id vocabulary. Audio runs in
groups of two vq02 then three vq06 ids (120 ms per group).

    >>> interleave([1, 2, 3, 4], [10, 11, 12, 13, 14, 15])
    [65537, 65538, 66570, 66571, 66572, 65539, 65540, 66573, 66574, 66575]

The layout is a value: a student with a compact text vocabulary keeps the audio codes' meaning by
using a ``TokenLayout`` with another ``text_size``; ``STEP_AUDIO`` is the upstream one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

VQ02_PER_GROUP = 2
VQ06_PER_GROUP = 3
GROUP = VQ02_PER_GROUP + VQ06_PER_GROUP
GROUP_SECONDS = 0.12
TOKENS_PER_SECOND = GROUP / GROUP_SECONDS  # 41.67


@dataclass(frozen=True)
class TokenLayout:
    """Where text and the two audio codebooks live in an LM vocabulary."""

    text_size: int = 65536
    vq02_size: int = 1024
    vq06_size: int = 4096
    vocab_size: int = 74752

    def __post_init__(self):
        if self.vq06_offset + self.vq06_size > self.vocab_size:
            raise ValueError(f"vocab_size {self.vocab_size} cannot hold {self}")

    @property
    def vq02_offset(self) -> int:
        return self.text_size

    @property
    def vq06_offset(self) -> int:
        return self.text_size + self.vq02_size

    @property
    def audio_end(self) -> int:
        return self.vq06_offset + self.vq06_size

    def is_audio(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        return (ids >= self.vq02_offset) & (ids < self.audio_end)

    def slot_ranges(self) -> list[tuple[int, int]]:
        """The id range [lo, hi) allowed at each of the 5 positions of a group."""
        vq02 = (self.vq02_offset, self.vq02_offset + self.vq02_size)
        vq06 = (self.vq06_offset, self.audio_end)
        return [vq02] * VQ02_PER_GROUP + [vq06] * VQ06_PER_GROUP


STEP_AUDIO = TokenLayout()


def _check_codes(codes: np.ndarray, size: int, name: str) -> None:
    bad = np.flatnonzero((codes < 0) | (codes >= size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} code {int(codes[i])} at position {i} is outside 0..{size - 1}")


def interleave(vq02: Sequence[int], vq06: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> list[int]:
    """Merge codes into LM ids: groups of [2 x vq02][3 x vq06], remainder dropped.

    Args:
        vq02: linguistic codes ``[n02]`` in 0..1023.
        vq06: semantic codes ``[n06]`` in 0..4095.
    Returns:
        ``5 * min(n02 // 2, n06 // 3)`` LM ids.
    """
    a = np.asarray(vq02, dtype=np.int64).reshape(-1)
    b = np.asarray(vq06, dtype=np.int64).reshape(-1)
    _check_codes(a, layout.vq02_size, "vq02")
    _check_codes(b, layout.vq06_size, "vq06")
    groups = min(len(a) // VQ02_PER_GROUP, len(b) // VQ06_PER_GROUP)
    out = np.concatenate(
        [
            a[: groups * VQ02_PER_GROUP].reshape(groups, VQ02_PER_GROUP) + layout.vq02_offset,
            b[: groups * VQ06_PER_GROUP].reshape(groups, VQ06_PER_GROUP) + layout.vq06_offset,
        ],
        axis=1,
    )
    return out.reshape(-1).tolist()


def check_audio_ids(ids: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> np.ndarray:
    """Validate an interleaved audio id sequence; returns it as ``int64 [n]``.

    Raises:
        ValueError: naming the first position whose id is out of range or breaks the 2:3
            pattern, or when the length is not a whole number of groups.
    """
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    lo = np.empty(GROUP, np.int64)
    hi = np.empty(GROUP, np.int64)
    for slot, (a, b) in enumerate(layout.slot_ranges()):
        lo[slot], hi[slot] = a, b
    slot = np.arange(len(ids)) % GROUP
    bad = np.flatnonzero((ids < lo[slot]) | (ids >= hi[slot]))
    if bad.size:
        i = int(bad[0])
        kind = "vq02" if slot[i] < VQ02_PER_GROUP else "vq06"
        raise ValueError(
            f"id {int(ids[i])} at position {i} is not a {kind} id "
            f"({lo[slot[i]]}..{hi[slot[i]] - 1}) as the 2:3 pattern requires"
        )
    if len(ids) % GROUP:
        raise ValueError(f"{len(ids)} audio ids is not a whole number of {GROUP}-id groups")
    return ids


def teacher_audio_ids(ids: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> np.ndarray:
    """A teacher's generated ids as a codec decodes them: :func:`check_audio_ids`, as ``int32
    [n]``, and not empty (ValueError "no audio tokens")."""
    ids = check_audio_ids(ids, layout).astype(np.int32)
    if ids.size == 0:
        raise ValueError("no audio tokens")
    return ids


def deinterleave(ids: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> tuple[list[int], list[int]]:
    """Split LM audio ids back into (vq02 codes, vq06 codes); inverse of :func:`interleave`."""
    groups = check_audio_ids(ids, layout).reshape(-1, GROUP)
    vq02 = groups[:, :VQ02_PER_GROUP].reshape(-1) - layout.vq02_offset
    vq06 = groups[:, VQ02_PER_GROUP:].reshape(-1) - layout.vq06_offset
    return vq02.tolist(), vq06.tolist()


def duration_seconds(n_ids: int) -> float:
    """Audio duration carried by ``n_ids`` interleaved ids."""
    return n_ids / GROUP * GROUP_SECONDS


def to_audio_string(ids: Sequence[int], layout: TokenLayout = STEP_AUDIO) -> str:
    """LM ids -> ``<audio_N>`` text (N = c for vq02, 1024 + c for vq06)."""
    ids = check_audio_ids(ids, layout)
    return "".join(f"<audio_{int(i) - layout.vq02_offset}>" for i in ids)


_AUDIO_RE = re.compile(r"<audio_(\d+)>")


def from_audio_string(text: str, layout: TokenLayout = STEP_AUDIO) -> list[int]:
    """``<audio_N>`` text -> LM ids; anything but audio tags is an error."""
    ids, pos = [], 0
    for m in _AUDIO_RE.finditer(text):
        if m.start() != pos:
            raise ValueError(f"unexpected text {text[pos:m.start()][:20]!r} at character {pos}")
        ids.append(int(m.group(1)) + layout.vq02_offset)
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"unexpected text {text[pos:pos + 20]!r} at character {pos}")
    check_audio_ids(ids, layout)
    return ids
