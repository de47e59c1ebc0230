"""File digests for identities: a model directory's fingerprint and a file's sha256.

    >>> model_dir_fingerprint("student/")              # doctest: +SKIP
    '3f9a0c41d2e7'
    >>> file_sha256("engine/data/speakers/amy.wav")    # doctest: +SKIP
    'b1c4...'

A model fingerprint covers, in sorted name order, config.json, tokenizer.model, the weights
(``*.safetensors``, ``*.bin``) and their ``*.index.json``: each file's name and size, all of a
small file, and of a large one the first and last 4 MiB (plus a safetensors header, which names
every tensor's shape and dtype). LM teacher ids and student fingerprints both use it, so the same
checkpoint gets the same hash in a run's teacher id and in an eval report.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

WHOLE_FILE_BYTES = 64 << 20
EDGE_BYTES = 4 << 20
SAFETENSORS_HEADER_CAP = 100 << 20
MODEL_FILE_NAMES = ("config.json", "tokenizer.model")
MODEL_FILE_SUFFIXES = (".safetensors", ".bin")
CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_file(h, path: Path) -> None:
    """Feed one model file into the hash ``h`` (a ``hashlib`` object): its name and size, then
    all of it up to 64 MiB, else its safetensors header and its first and last 4 MiB."""
    path = Path(path)
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_BYTES:
            h.update(f.read())
            return
        head = f.read(EDGE_BYTES)
        if path.suffix == ".safetensors":  # the header (names, shapes, dtypes) may be longer
            n = int.from_bytes(head[:8], "little")
            f.seek(8)
            h.update(f.read(min(n, SAFETENSORS_HEADER_CAP)))
        h.update(head)
        f.seek(size - EDGE_BYTES)
        h.update(f.read(EDGE_BYTES))


def is_model_file(path: Path) -> bool:
    """True for the files a model fingerprint covers (config, tokenizer, weights, index)."""
    return (path.name in MODEL_FILE_NAMES or path.suffix in MODEL_FILE_SUFFIXES
            or path.name.endswith(".index.json"))


def hash_model_files(h, folder: str | os.PathLike) -> None:
    """Feed every model file of ``folder`` (see :func:`is_model_file`) into ``h``, by name."""
    for path in sorted(Path(folder).iterdir()):
        if is_model_file(path):
            hash_file(h, path)


def model_dir_fingerprint(folder: str | os.PathLike) -> str:
    """12 hex digits identifying a checkpoint directory's config, tokenizer and weights."""
    h = hashlib.sha256()
    hash_model_files(h, folder)
    return h.hexdigest()[:12]
