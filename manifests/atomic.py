"""Atomic file writes: write beside the target, fsync, then rename over it."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from manifests.errors import storage_error

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    A crash leaves at most a ``*.tmp`` file, never a half-written ``path``.

    Raises:
        StorageError: the disk is full, or the folder read-only or not writable (one line naming
            ``path``); nothing is left behind.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        error = storage_error(exc, path)
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
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


def move_files_into(src: str | os.PathLike, dest: str | os.PathLike, last: str | None = None) -> None:
    """Move every file of the folder ``src`` into ``dest`` (one rename each, replacing a file of
    the same name) and remove ``src``.

    For a set of files that must look whole in a folder that cannot be swapped whole because it
    holds other things too (a student dir beside its checkpoints/ and logs/): write the set into
    ``src``, a temporary folder inside ``dest``, then move it in. ``last`` names the file whose
    presence says the set is complete: it is removed from ``dest`` first and moved in after every
    other file, so a crash midway leaves no such file.

    Args:
        src: a folder of plain files on the same filesystem as ``dest``.
        dest: the folder the files end up in (must exist).
        last: the marker file's name, or None.
    """
    src, dest = Path(src), Path(dest)
    if last is not None:
        (dest / last).unlink(missing_ok=True)
    for f in sorted(src.iterdir(), key=lambda p: p.name == last):
        os.replace(f, dest / f.name)
    src.rmdir()
    _fsync_dir(dest)


def remove_temporaries(folder: str | os.PathLike) -> int:
    """Delete ``*.tmp`` leftovers of interrupted writes; returns how many."""
    removed = 0
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        tmp.unlink()
        removed += 1
    return removed
