"""Speaker prompts for voice cloning: a wav and the words spoken in it.

A speaker folder holds ``NAME.wav`` (or ``NAME.flac``) beside ``NAME.txt`` (its UTF-8
transcript), or one ``speakers.jsonl`` with rows ``{"name": ..., "wav": ..., "text": ...}``
(``wav`` relative to the folder; ``name`` defaults to the wav's stem). Text files without audio
(a README, say) are ignored.

    >>> speakers = load_speakers("engine/data/speakers")        # doctest: +SKIP
    >>> speakers[0].name, speakers[0].text                       # doctest: +SKIP
    ('f1', 'The morning train was quiet and warm.')

Every prompt is checked: readable audio, 0.5-30 s long, not silent, a non-empty transcript. A bad
one raises :class:`~engine.spec.errors.SpecError` naming the file.

A task stores a packaged prompt by name, ``builtin:amy.wav`` (:func:`prompt_ref`), never by the
path of the checkout that expanded it, and whatever reads a task's ``speaker_wav`` opens
:func:`prompt_path` of it: runs keep working when the package moves. Runs made before stored the
absolute path; a missing one of the packaged layout (``/old/checkout/engine/data/speakers/amy.wav``
for speaker ``amy``) resolves to the packaged prompt of that name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.audio import read_audio
from engine.spec.errors import SpecError
from engine.spec.textfile import read_utf8
from manifests.digest import file_sha256
from manifests.errors import UserError

BUILTIN_SPEAKERS = Path(__file__).resolve().parent / "data" / "speakers"
AUDIO_SUFFIXES = (".wav", ".flac")
MIN_SECONDS, MAX_SECONDS = 0.5, 30.0
# Below -60 dBFS peak or -80 dBFS RMS nothing a speaker encoder can use is left.
SILENT_PEAK, SILENT_RMS = 1e-3, 1e-4
JSONL = "speakers.jsonl"
BUILTIN_REF = "builtin:"  # a task's speaker_wav naming a packaged prompt: "builtin:amy.wav"


@dataclass(frozen=True)
class Speaker:
    """One clone prompt: ``name`` (unique in its folder), ``wav_path`` (absolute), ``text``."""

    name: str
    wav_path: str
    text: str

    @property
    def ref(self) -> str:
        """What a task stores as its ``speaker_wav``: :func:`prompt_ref` of the wav."""
        return prompt_ref(self.wav_path)

    def wav_sha256(self) -> str:
        """Hex digest of the prompt audio bytes: tasks hash it so a changed prompt changes ids."""
        return file_sha256(self.wav_path)


def resolve_folder(folder) -> Path:
    """``"builtin"`` -> the packaged prompts (engine/data/speakers), else the path itself."""
    return BUILTIN_SPEAKERS if str(folder) == "builtin" else Path(folder).expanduser()


def builtin_prompt(name: str) -> tuple[str, str]:
    """The packaged clone prompt of a built-in speaker (``"amy"``): (wav path, transcript).

    Teachers use it for a task that names a speaker without its prompt wav.

    Raises:
        UserError: ``name`` is not a built-in speaker.
    """
    txt = BUILTIN_SPEAKERS / f"{name}.txt"
    if not name.isidentifier() or not txt.is_file():  # isidentifier: no path in a name
        raise UserError(f"speaker {name!r} has no prompt wav and is not built in")
    return str(BUILTIN_SPEAKERS / f"{name}.wav"), txt.read_text(encoding="utf-8").strip()


def prompt_ref(wav_path: str) -> str:
    """What a task stores as ``speaker_wav`` for the prompt at ``wav_path``: ``builtin:NAME.wav``
    for a packaged prompt, else the path as it is."""
    path = Path(wav_path)
    return f"{BUILTIN_REF}{path.name}" if path.parent == BUILTIN_SPEAKERS else wav_path


def prompt_path(stored: str, speaker: str = "") -> str:
    """The file to open for a task's ``speaker_wav`` (``stored``) of speaker ``speaker``.

    ``builtin:NAME.wav`` -> the packaged prompt; an absolute path that does not exist but was the
    packaged prompt of built-in ``speaker`` in another checkout (``.../engine/data/speakers/
    SPEAKER.wav``) -> the packaged prompt of that name; anything else (``""`` too) as it is, for
    the reader to report when it cannot be read.
    """
    if stored.startswith(BUILTIN_REF):
        name = stored[len(BUILTIN_REF):]
        return str(BUILTIN_SPEAKERS / name) if name and name == Path(name).name and name != ".." else stored
    path = Path(stored)
    moved = (speaker and path.is_absolute() and path.stem == speaker
             and path.parent.parts[-3:] == ("engine", "data", "speakers") and not path.exists())
    if moved and (BUILTIN_SPEAKERS / path.name).is_file():
        return str(BUILTIN_SPEAKERS / path.name)
    return stored


def load_speakers(folder) -> list[Speaker]:
    """Load and check every speaker in ``folder`` (a path or ``"builtin"``), sorted by name.

    Raises:
        SpecError: missing or empty folder, bad audio, bad transcript, or a name used twice.
    """
    path = resolve_folder(folder)
    if not path.is_dir():
        raise SpecError.at(path, "", "speaker folder not found")
    speakers = _from_jsonl(path / JSONL) if (path / JSONL).is_file() else _from_pairs(path)
    if not speakers:
        raise SpecError.at(path, "", f"no speakers (expected NAME.wav + NAME.txt pairs or {JSONL})")
    seen: dict[str, str] = {}
    for sp in speakers:
        if sp.name in seen:
            raise SpecError.at(sp.wav_path, "", f"speaker name {sp.name!r} also used by {seen[sp.name]}")
        seen[sp.name] = sp.wav_path
        check_audio(Path(sp.wav_path))
    return sorted(speakers, key=lambda s: s.name)


def _from_pairs(folder: Path) -> list[Speaker]:
    speakers = []
    for wav in sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES):
        txt = wav.with_suffix(".txt")
        if not txt.is_file():
            raise SpecError.at(wav, "", f"no transcript {txt.name} beside it")
        speakers.append(Speaker(wav.stem, str(wav.resolve()), _transcript(read_utf8(txt), txt)))
    return speakers


def _from_jsonl(path: Path) -> list[Speaker]:
    speakers = []
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SpecError.at(path, f"line {n}", f"not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("wav"), str):
            raise SpecError.at(path, f"line {n}", 'needs a "wav" path and a "text"')
        wav = (path.parent / row["wav"]).resolve()
        if not wav.is_file():
            raise SpecError.at(path, f"line {n}", f"wav {row['wav']} not found")
        name = str(row.get("name") or wav.stem)
        text = row.get("text")
        speakers.append(Speaker(name, str(wav), _transcript(text, f"{path}: line {n}")))
    return speakers


def _transcript(text, where) -> str:
    if not isinstance(text, str) or not text.strip():
        raise SpecError.at(where, "", "empty transcript")
    return " ".join(text.split())


def check_audio(path: Path) -> float:
    """Check one prompt file; returns its duration in seconds.

    Raises:
        SpecError: unreadable, shorter than 0.5 s, longer than 30 s, or silent.
    """
    try:
        wav, sr = read_audio(path)
    except ValueError as exc:
        raise SpecError(" ".join(str(exc).split())) from None
    seconds = len(wav) / sr if sr else 0.0
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise SpecError.at(path, "", f"{seconds:.2f} s long (prompts must be {MIN_SECONDS}-{MAX_SECONDS:g} s)")
    peak = float(np.abs(wav).max())
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if peak < SILENT_PEAK or rms < SILENT_RMS:
        raise SpecError.at(path, "", f"silent audio (peak {peak:.2g}, RMS {rms:.2g})")
    return seconds
