"""WebDataset shards: plain tar files of ``<id>.<ext>`` members, written whole and atomically.

    writer = ShardWriter(run / "shards")
    offsets = writer.write(index, [("abc123", {"json": b"{...}", "tokens.npy": b"...", "flac": b"..."})])

A shard is built in a temporary file and renamed into place, so a crash never leaves a half shard
under its final name. ``read_sample`` fetches one sample by the byte offset the manifest keeps.
"""
from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np

from manifests.atomic import atomic_path

SHARD_RE = re.compile(r"^shard-(\d{6})\.tar$")


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def sample_key(task_id: str, attempt: int = 0) -> str:
    """Shard key of one attempt at a task (webdataset keys must not contain dots)."""
    return task_id if attempt == 0 else f"{task_id}_{attempt}"


def shard_index(name: str) -> int:
    m = SHARD_RE.match(Path(name).name)
    if m is None:
        raise ValueError(f"{name} is not a shard name (shard-NNNNNN.tar)")
    return int(m.group(1))


class ShardWriter:
    """Writes numbered shards into one folder."""

    def __init__(self, folder: str | Path, mtime: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mtime = mtime

    def write(self, index: int, samples: list[tuple[str, dict[str, bytes]]]) -> list[int]:
        """Write one shard atomically.

        Args:
            index: shard number (the file is ``shard-{index:06d}.tar``).
            samples: (key, {extension: payload}) pairs; keys must not contain dots.
        Returns:
            The byte offset of each sample's first member, in order.
        """
        offsets = []
        with atomic_path(self.folder / shard_name(index)) as tmp:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
                for key, members in samples:
                    if "." in key or "/" in key:
                        raise ValueError(f"sample key {key!r} must not contain '.' or '/'")
                    offsets.append(tar.offset)
                    for ext, payload in members.items():
                        info = tarfile.TarInfo(f"{key}.{ext}")
                        info.size, info.mtime, info.mode = len(payload), self.mtime, 0o644
                        tar.addfile(info, io.BytesIO(payload))
        return offsets


class ShardReadError(ValueError):
    """A sample that cannot be read back from its shard: the bytes at its offset are not a tar
    header, or not the sample that was written there (the shard changed after its commit)."""


def read_sample(shard: str | Path, offset: int, key: str | None = None, first: str | None = None) -> dict[str, bytes]:
    """Read the sample whose first member starts at ``offset`` in ``shard``: {extension: bytes}.

    Args:
        key: the sample key written at ``offset`` (:func:`sample_key`); when given, a different
            sample found there is an error rather than a silent wrong answer.
        first: the extension of the sample's first member (a run's samples start with ``json``);
            when given, an offset that lands on a later member of the sample is an error.
    Raises:
        ShardReadError: ``shard unreadable at offset N: ...`` (a missing file is an OSError).
    """
    out: dict[str, bytes] = {}
    found = None
    with open(shard, "rb") as f:
        f.seek(offset)
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for info in tar:
                    k, _, ext = info.name.partition(".")
                    if found is None:
                        found = k
                        if first is not None and ext != first:
                            raise ShardReadError(f"shard unreadable at offset {offset}: found {info.name!r} where a "
                                                 f"sample's {first!r} member was written")
                    if k != found:
                        break
                    out[ext] = tar.extractfile(info).read()
        except (tarfile.TarError, EOFError) as exc:
            raise ShardReadError(f"shard unreadable at offset {offset}: {exc}") from None
    if found is None:
        raise ShardReadError(f"shard unreadable at offset {offset}: no sample there")
    if key is not None and found != key:
        raise ShardReadError(f"shard unreadable at offset {offset}: found sample {found!r} where {key!r} was written")
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def json_bytes(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode()
