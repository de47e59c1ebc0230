"""Registered clone voices: a folder of prompts, each checked and tokenized once.

    store = VoiceStore("student/voices", codec)
    voice = store.register("narrator", wav_bytes, "The words spoken in it.")   # -> Voice
    store.get("narrator").ids                                                  # Step-Audio ids

A voice is ``NAME.wav`` (the prompt after Step-Audio's preprocessing: 16 kHz, peak-normalised,
silence trimmed), ``NAME.txt`` (its transcript) and ``NAME.ids.npy`` (its ids under the codec named
in ``NAME.json``); the ``.json`` is written last, so a voice without it is an interrupted write and
is ignored. Names are 1-64 letters, digits, ``_`` or ``-`` (starting with a letter or digit), so no
name reaches outside the folder. Prompts are checked as spec speaker prompts are
(:func:`engine.speakers.check_audio`: readable, 0.5-30 s, not silent).
"""
from __future__ import annotations

import io
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.audio import SAMPLE_RATE, preprocess
from engine.speakers import check_audio
from manifests.errors import UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class VoiceError(UserError):
    """A voice that cannot be registered; ``status`` is the HTTP status it answers."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param


@dataclass(frozen=True)
class Voice:
    """A registered prompt: ``ids`` are Step-Audio layout ids of ``wav_path``'s audio."""

    name: str
    wav_path: str
    text: str
    ids: tuple[int, ...]
    seconds: float


class VoiceStore:
    """The registered voices of one server, kept in ``root`` (created on the first registration).

    Args:
        root: the folder.
        codec: tokenizes prompts (its ``version`` is stored; voices stored under another codec are
            tokenized again when loaded).
        reserved: names that may not be registered (the built-in voices).
    """

    def __init__(self, root, codec, reserved=()):
        self.root, self.codec, self.reserved = Path(root), codec, set(reserved)
        self._voices: dict[str, Voice] = {}
        self._lock = threading.Lock()
        if self.root.is_dir():
            for meta in sorted(self.root.glob("*.json")):
                self._voices[meta.stem] = self._load(meta)

    def names(self) -> list[str]:
        return sorted(self._voices)

    def get(self, name: str) -> Voice | None:
        return self._voices.get(name)

    def register(self, name: str, audio: bytes, transcript: str) -> Voice:
        """Check, preprocess, tokenize and store one prompt.

        Raises:
            VoiceError: a bad name (400), a name in use (409), unreadable, too short or long, or
                silent audio, an empty transcript (400).
        """
        self._check_name(name)
        if name in self._voices:  # checked again under the lock; this spares the tokenizing
            raise VoiceError(f"voice {name!r} exists; delete it first", status=409, param="name")
        text = " ".join((transcript or "").split())
        if not text:
            raise VoiceError("transcript is empty: give the words spoken in the audio", param="transcript")
        wav = self._checked_audio(audio)
        ids = tuple(int(i) for i in self.codec.tokenize(wav))
        with self._lock:
            if name in self._voices:
                raise VoiceError(f"voice {name!r} exists; delete it first", status=409, param="name")
            self.root.mkdir(parents=True, exist_ok=True)
            voice = Voice(name, str(self.root / f"{name}.wav"), text, ids, len(wav) / SAMPLE_RATE)
            self._write(voice, wav)
            self._voices[name] = voice
        return voice

    def delete(self, name: str) -> None:
        """Remove a registered voice (VoiceError 404 when there is none of that name)."""
        with self._lock:
            if name not in self._voices or not NAME.fullmatch(name):
                raise VoiceError(f"no registered voice {name!r}", status=404, param="name")
            del self._voices[name]
            for suffix in (".json", ".ids.npy", ".txt", ".wav"):
                (self.root / f"{name}{suffix}").unlink(missing_ok=True)

    # -- parts -------------------------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise VoiceError(f"voice name {name!r} must be 1-64 letters, digits, _ or - (starting with a letter "
                             "or digit)", param="name")
        if name in self.reserved:
            raise VoiceError(f"voice {name!r} is built in; choose another name", status=409, param="name")

    def _checked_audio(self, audio: bytes) -> np.ndarray:
        """The prompt as 16 kHz preprocessed audio, checked as a spec speaker prompt is."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prompt"
            path.write_bytes(audio)
            try:
                check_audio(path)
            except UserError as exc:
                raise VoiceError(f"audio: {str(exc).replace(str(path), 'the upload')}", param="audio") from None
            import soundfile as sf

            wav, sr = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
        wav = preprocess(wav.mean(axis=1), sr)
        if len(wav) < 0.5 * SAMPLE_RATE:
            raise VoiceError("audio: under 0.5 s of sound once leading and trailing silence is trimmed",
                             param="audio")
        return wav

    def _write(self, voice: Voice, wav: np.ndarray) -> None:
        import soundfile as sf

        stem = self.root / voice.name
        _atomic(stem.with_suffix(".wav"), lambda f: sf.write(f, wav, SAMPLE_RATE, format="WAV", subtype="PCM_16"))
        _atomic(Path(f"{stem}.ids.npy"), lambda f: np.save(f, np.asarray(voice.ids, np.int32)))
        _atomic(stem.with_suffix(".txt"), lambda f: f.write(voice.text.encode()))
        meta = {"name": voice.name, "codec": self.codec.version, "seconds": round(voice.seconds, 3)}
        _atomic(stem.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode()))

    def _load(self, meta_path: Path) -> Voice:
        try:
            return self._read(meta_path)
        except (OSError, ValueError, UserError) as exc:
            raise UserError(f"{meta_path}: a broken registered voice ({exc}); delete its files") from None

    def _read(self, meta_path: Path) -> Voice:
        name = meta_path.stem
        meta = json.loads(meta_path.read_text())
        wav_path = self.root / f"{name}.wav"
        text = (self.root / f"{name}.txt").read_text(encoding="utf-8")
        if meta.get("codec") == self.codec.version:
            ids = tuple(int(i) for i in np.load(self.root / f"{name}.ids.npy"))
        else:  # stored under another codec: its ids mean other sounds here
            import soundfile as sf

            ids = tuple(int(i) for i in self.codec.tokenize(sf.read(str(wav_path), dtype="float32")[0]))
        return Voice(name, str(wav_path), text, ids, float(meta.get("seconds", 0.0)))


def _atomic(path: Path, write) -> None:
    """Write ``path`` through a temp file in its folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
