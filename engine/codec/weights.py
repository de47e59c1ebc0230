"""The codec's weights file: one float16 ``.npz`` (codebooks, decoder tensors, a JSON config).

    vq02 [1024, 6 * q], vq06 [4096, 4 * q], dec/<parameter name> ..., config (JSON text)
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from manifests.atomic import atomic_path
from manifests.digest import file_sha256
from manifests.errors import UserError

SHIPPED = Path(__file__).resolve().parent / "weights" / "melvq.npz"
FORMAT = "melvq-1"


def save(path, codebooks: dict[str, np.ndarray], decoder: dict[str, np.ndarray], config: dict) -> str:
    """Write atomically (:func:`manifests.atomic.atomic_path`); returns the file's short sha256.

    Args:
        codebooks: ``{"vq02": [k02, d02], "vq06": [k06, d06]}``.
        decoder: parameter name -> array (a torch ``state_dict`` as numpy).
        config: decoder shape and training settings, stored as JSON.
    """
    arrays = {k: np.asarray(v, np.float16) for k, v in codebooks.items()}
    arrays.update({f"dec/{k}": np.asarray(v, np.float16) for k, v in decoder.items()})
    arrays["config"] = np.frombuffer(json.dumps({"format": FORMAT, **config}, sort_keys=True).encode(), np.uint8)
    with atomic_path(path) as tmp:
        _write_npz(tmp, arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0o600; a shipped weights file is world-readable
    return digest(path)


def _write_npz(path, arrays: dict[str, np.ndarray]) -> None:
    # np.savez stamps each member with the current time; fixed stamps and sorted names make
    # identical weights give identical bytes, so the digest in the version string is reproducible.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def digest(path) -> str:
    """The first 8 hex digits of the file's sha256: the ``+HASH`` of a codec version."""
    return file_sha256(path)[:8]


def load(path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """Read a weights file as float32 arrays: (codebooks, decoder tensors, config).

    Raises:
        UserError: naming the file, when it is missing, unreadable or not a melvq file.
    """
    try:
        with np.load(str(path), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        config = json.loads(arrays.pop("config").tobytes().decode())
    except Exception as exc:  # numpy/zipfile/json raise many types for a bad file
        raise UserError(f"{path}: not a readable melvq weights file ({exc})") from None
    if config.get("format") != FORMAT or "vq02" not in arrays or "vq06" not in arrays:
        raise UserError(f"{path}: not a {FORMAT} weights file")
    codebooks = {k: arrays[k].astype(np.float32) for k in ("vq02", "vq06")}
    decoder = {k[4:]: arrays[k].astype(np.float32) for k in arrays if k.startswith("dec/")}
    return codebooks, decoder, config
