"""The built-in clone speakers (engine/data/speakers/NAME.wav + NAME.txt), rendered by eSpeak.

Regenerate them with:

    python -m engine.teachers.builtin_speakers engine/data/speakers

Each prompt is 16 kHz mono 16-bit PCM, 2-4 s, read by a distinct eSpeak voice variant and pitch
(listed in ``SPEAKERS``, so tests can check that cloning recovers them).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from engine.audio import SAMPLE_RATE, preprocess
from engine.espeak import render
from engine.teachers.isolate import pristine


@dataclass(frozen=True)
class BuiltinSpeaker:
    name: str
    voice: str
    variant: str
    pitch: int
    text: str


SPEAKERS = (
    BuiltinSpeaker("amy", "en-us", "f2", 55, "The morning train was quiet, so I read my book."),
    BuiltinSpeaker("ben", "en", "m3", 40, "Could you pass me the map? I think we took a wrong turn."),
    BuiltinSpeaker("callum", "en-gb-scotland", "m7", 30, "The wind off the loch was cold, but the fire was warm."),
    BuiltinSpeaker("lin", "cmn", "f4", 60, "今天天气很好，我们去公园吧。"),
    BuiltinSpeaker("wei", "cmn", "m1", 45, "这家小店的面条非常好吃。"),
    BuiltinSpeaker("mei", "yue", "f1", 50, "我哋今晚去边度食饭好呢？"),
)


def make_speakers(folder) -> list[Path]:
    """Write every built-in prompt into ``folder``; returns the wav paths."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sp in SPEAKERS:
        wav, sr = pristine(render, sp.text, voice=f"{sp.voice}+{sp.variant}", pitch=sp.pitch)
        wav = preprocess(wav, sr)
        seconds = len(wav) / SAMPLE_RATE
        if not 2.0 <= seconds <= 4.0:
            raise ValueError(f"speaker {sp.name}: prompt is {seconds:.2f} s (want 2-4 s); change its text")
        sf.write(folder / f"{sp.name}.wav", wav, SAMPLE_RATE, subtype="PCM_16")
        (folder / f"{sp.name}.txt").write_text(sp.text + "\n", encoding="utf-8")
        paths.append(folder / f"{sp.name}.wav")
    return paths


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m engine.teachers.builtin_speakers OUT_DIR", file=sys.stderr)
        return 2
    for path in make_speakers(args[0]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
