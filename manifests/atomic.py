"""Atomic file writes: write beside the target, fsync, then rename over it."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash leaves at most a ``*.tmp`` file, never a half-written ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``*.tmp`` leftovers of interrupted writes; returns how many."""
    removed = 0
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        tmp.unlink()
        removed += 1
    return removed
