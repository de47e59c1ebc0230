"""Where a user's released Step-Audio checkpoints are, which files they hold, and their identity.

    >>> ckpt = resolve("stepaudio:/models/step-audio")           # doctest: +SKIP
    >>> ckpt = resolve("stepaudio:/m/Step-Audio-Tokenizer,/m/Step-Audio-TTS-3B")  # doctest: +SKIP
    >>> ckpt.decoder_dir(music=True), ckpt.version()              # doctest: +SKIP
    (PosixPath('/m/Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music'), 'stepaudio-1+3f9a0c41d2e7')

A spec is ``stepaudio:DIR``, DIR being upstream's "model path" that holds ``Step-Audio-Tokenizer/``
and ``Step-Audio-TTS-3B/`` (the decoders ``CosyVoice-300M-25Hz/`` and ``CosyVoice-300M-25Hz-Music/``
sit inside TTS-3B), or ``stepaudio:TOKENIZER_DIR,TTS_DIR`` naming the two dirs separately, in that
order. ``~`` is expanded; a DIR whose own name contains a comma is taken whole when it exists.

:meth:`StepAudioCheckpoint.check` raises one ``MissingModel`` line naming the first missing (or
empty) file of the parts asked for. :meth:`StepAudioCheckpoint.version` identifies the codec's files
(tokenizer and both decoders) by content, so runs tokenized or decoded with other weights never mix.
It feeds each file into :func:`manifests.digest.hash_file`: name, size, all of a file up to 64 MiB,
else its first and last 4 MiB. Nothing is cached on disk: the whole checkpoint costs ~100 MB of
reads (campplus.onnx twice whole, 8 MiB of each large file), well under a second from the page
cache. The large torch files (model.pt, flow.pt, hift.pt) are zip archives whose central directory,
at the end and so always hashed, stores a CRC-32 of every tensor record: a change to any weight
changes the version. The 523 MB ``speech_tokenizer_v1.onnx`` is covered by size, head and tail only.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from engine.errors import MissingModel
from manifests.digest import hash_file
from manifests.errors import UserError

PREFIX = "stepaudio:"
FORMAT = "stepaudio-1"
TOKENIZER_NAME = "Step-Audio-Tokenizer"
TTS_NAME = "Step-Audio-TTS-3B"
COMMON_NAME = "CosyVoice-300M-25Hz"
MUSIC_NAME = "CosyVoice-300M-25Hz-Music"
PARAFORMER = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"

# part -> files relative to its dir, in the order they are checked and hashed
TOKENIZER_FILES = ("linguistic_tokenizer.npy", "speech_tokenizer_v1.onnx", f"{PARAFORMER}/config.yaml",
                   f"{PARAFORMER}/am.mvn", f"{PARAFORMER}/model.pt")
DECODER_FILES = ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx")
TEXT_FILES = ("tokenizer.model",)
LM_FILES = ("config.json",)
PARTS = ("tokenizer", "decoder", "music", "text", "lm")
CODEC_PARTS = ("tokenizer", "decoder", "music")
HINT = ("the released layout is MODEL_PATH/Step-Audio-Tokenizer and MODEL_PATH/Step-Audio-TTS-3B "
        "(use --codec stepaudio:MODEL_PATH or stepaudio:TOKENIZER_DIR,TTS_DIR)")


@dataclass(frozen=True)
class StepAudioCheckpoint:
    """The two released dirs. Build it with :func:`parse_spec` or :func:`resolve`."""

    tokenizer_dir: Path
    tts_dir: Path

    @property
    def paraformer_dir(self) -> Path:
        """The streaming Paraformer (vq02 encoder): config.yaml, am.mvn, model.pt."""
        return self.tokenizer_dir / PARAFORMER

    def decoder_dir(self, music: bool = False) -> Path:
        """CosyVoice-300M-25Hz (speech) or CosyVoice-300M-25Hz-Music (rap, humming)."""
        return self.tts_dir / (MUSIC_NAME if music else COMMON_NAME)

    def files(self, parts=CODEC_PARTS) -> list[tuple[str, Path]]:
        """``(role, path)`` of every file ``parts`` need (a subset of :data:`PARTS`), role being
        the path below the tokenizer or TTS dir, e.g. ``"CosyVoice-300M-25Hz/flow.pt"``."""
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown checkpoint parts {unknown}; choose from {PARTS}")
        out = []
        for part in parts:
            if part == "tokenizer":
                out += [(f"{TOKENIZER_NAME}/{f}", self.tokenizer_dir / f) for f in TOKENIZER_FILES]
            elif part in ("decoder", "music"):
                name = MUSIC_NAME if part == "music" else COMMON_NAME
                out += [(f"{TTS_NAME}/{name}/{f}", self.tts_dir / name / f) for f in DECODER_FILES]
            else:
                names = TEXT_FILES if part == "text" else LM_FILES
                out += [(f"{TTS_NAME}/{f}", self.tts_dir / f) for f in names]
        return out

    def check(self, parts=CODEC_PARTS) -> "StepAudioCheckpoint":
        """Self, when every file of ``parts`` is there and not empty.

        Raises:
            MissingModel: one line naming the first missing or empty file.
        """
        for role, path in self.files(parts):
            if not path.is_file():
                raise MissingModel(f"{path}: missing from the Step-Audio checkpoint ({role}); {HINT}")
            if path.stat().st_size == 0:
                raise MissingModel(f"{path}: empty file in the Step-Audio checkpoint ({role})")
        return self

    def version(self, parts=CODEC_PARTS) -> str:
        """``stepaudio-1+<12 hex>``: a digest of the files of ``parts`` (roles, sizes, contents
        as :func:`manifests.digest.hash_file` reads them), independent of where they are."""
        self.check(parts)
        h = hashlib.sha256(FORMAT.encode())
        for role, path in self.files(parts):
            h.update(f"\0{role}\0{file_digest(path)}".encode())
        return f"{FORMAT}+{h.hexdigest()[:12]}"


def file_digest(path: str | os.PathLike) -> str:
    """hash_file's sha256 of one file, remembered per process while its stat is unchanged."""
    st = os.stat(path)
    return _digest(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@functools.lru_cache(maxsize=256)
def _digest(path: str, *stat) -> str:
    h = hashlib.sha256()
    hash_file(h, Path(path))
    return h.hexdigest()


def is_spec(spec: str) -> bool:
    """True for a ``stepaudio:...`` codec spec."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse_spec(spec: str) -> StepAudioCheckpoint:
    """The checkpoint a ``stepaudio:DIR`` or ``stepaudio:TOKENIZER_DIR,TTS_DIR`` spec names
    (a bare DIR or pair is accepted too). Checks the dirs, not the files (see :func:`resolve`).

    Raises:
        UserError: an empty or malformed spec, or dirs that are not there (one line).
    """
    if not isinstance(spec, str):
        raise UserError(f"codec spec {spec!r} is not a string")
    body = spec[len(PREFIX):] if is_spec(spec) else spec
    if not body.strip():
        raise UserError(f"codec spec {spec!r} names no directory: use stepaudio:MODEL_PATH or "
                        f"stepaudio:TOKENIZER_DIR,TTS_DIR")
    whole = _path(body)
    if "," not in body or whole.is_dir():
        return _model_path(whole, spec)
    parts = [p.strip() for p in body.split(",")]
    if len(parts) != 2 or not all(parts):
        raise UserError(f"codec spec {spec!r}: expected stepaudio:TOKENIZER_DIR,TTS_DIR (two "
                        f"directories separated by one comma)")
    tok, tts = map(_path, parts)
    for path, name in ((tok, TOKENIZER_NAME), (tts, TTS_NAME)):
        if not path.is_dir():
            raise UserError(f"{path}: no such directory (the {name} dir of codec spec {spec!r})")
    if (tok / COMMON_NAME).is_dir() and (tts / "linguistic_tokenizer.npy").exists():
        raise UserError(f"codec spec {spec!r} names the TTS dir first: the order is "
                        f"stepaudio:TOKENIZER_DIR,TTS_DIR")
    return StepAudioCheckpoint(tok, tts)


def resolve(spec: str, parts=CODEC_PARTS) -> StepAudioCheckpoint:
    """:func:`parse_spec`, then :meth:`StepAudioCheckpoint.check` of ``parts``."""
    return parse_spec(spec).check(parts)


def _path(text: str) -> Path:
    return Path(os.path.expanduser(text.strip()))


def _model_path(root: Path, spec: str) -> StepAudioCheckpoint:
    if not root.is_dir():
        raise UserError(f"{root}: no such directory (codec spec {spec!r}); {HINT}")
    for name in (TOKENIZER_NAME, TTS_NAME):
        if not (root / name).is_dir():
            raise MissingModel(f"{root}: no {name}/ inside (codec spec {spec!r}); {HINT}")
    return StepAudioCheckpoint(root / TOKENIZER_NAME, root / TTS_NAME)
