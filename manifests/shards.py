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


def read_sample(shard: str | Path, offset: int) -> dict[str, bytes]:
    """Read the sample whose first member starts at ``offset`` in ``shard``: {extension: bytes}."""
    out: dict[str, bytes] = {}
    key = None
    with open(shard, "rb") as f:
        f.seek(offset)
        with tarfile.open(fileobj=f, mode="r|") as tar:
            for info in tar:
                k, ext = info.name.split(".", 1)
                if key is None:
                    key = k
                if k != key:
                    break
                out[ext] = tar.extractfile(info).read()
    return out


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def json_bytes(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode()
