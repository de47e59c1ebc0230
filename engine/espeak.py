"""eSpeak NG in process, through its C API (ctypes).

The library comes from the PyPI package ``espeakng-loader`` (it ships libespeak-ng and the voice
data), or from the system (Debian's ``libespeak-ng1``). eSpeak keeps global state, so one
process holds one synthesizer and calls are serialised by a lock.

eSpeak seeds its noise generator from the clock, so the breath noise of the breathy variants
(``+f2``, ``+f3``, ``+f5``) used to differ from run to run. Every render now reseeds it
(``espeak_ng_SetRandSeed``; older builds draw the noise from C ``rand()``, so ``srand`` there),
so a fresh process renders the same sequence of calls to the same samples.

    >>> from engine.espeak import render
    >>> wav, sr = render("Hello there.", voice="en-us+f3", rate=190, pitch=60)
    >>> sr
    22050
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

import numpy as np

from engine.errors import MissingPackage

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_SSML = 0x10
_PHONEMES = 0x100  # espeakPHONEMES: honour [[ ]] phoneme input inside the text
_POS_CHARACTER = 1
_NOISE_SEED = 0  # breath noise seed, the same for every render
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Prosody:
    """eSpeak parameters. rate: words/min (80..450); pitch, range: 0..100; volume: 0..200;
    wordgap: extra pause between words in units of 10 ms."""

    rate: int = 175
    pitch: int = 50
    range: int = 50
    volume: int = 100
    wordgap: int = 0

    def clipped(self) -> "Prosody":
        return Prosody(
            rate=int(np.clip(self.rate, 80, 450)),
            pitch=int(np.clip(self.pitch, 0, 100)),
            range=int(np.clip(self.range, 0, 100)),
            volume=int(np.clip(self.volume, 0, 200)),
            wordgap=int(np.clip(self.wordgap, 0, 100)),
        )


class _Synth:
    """The process-wide eSpeak NG handle."""

    def __init__(self):
        self.lib, data_path = _load_library()
        path = data_path.encode() if data_path else None
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data path {data_path!r})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        self._seed = _noise_seeder(self.lib)
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.lock = threading.Lock()

    def _collect(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def render(self, text: str, voice: str, prosody: Prosody, ssml: bool = False,
               phonemes: bool = False) -> np.ndarray:
        """float32 samples of ``text``: an SSML document when ``ssml``; ``[[...]]`` passages are
        read as phoneme mnemonics when ``phonemes``."""
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            for name, value in vars(prosody.clipped()).items():
                self.lib.espeak_SetParameter(_PARAM[name], value, 0)
            data = text.encode("utf-8") + b"\0"
            flags = _CHARS_UTF8 | (_SSML if ssml else 0) | (_PHONEMES if phonemes else 0)
            self._chunks = []
            if self._seed is not None:
                self._seed(_NOISE_SEED)
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, flags, None, None)
            if err != 0:
                raise RuntimeError(f"espeak_Synth failed with error {err}")
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0

    def text_to_phonemes(self, text: str, voice: str) -> list[str]:
        """eSpeak's phoneme mnemonics for ``text``, one string per clause."""
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_char_p(ctypes.addressof(buf))
        out = []
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice!r}")
            while ptr.value:
                out.append((self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, 0) or b"").decode())
        return out


def _noise_seeder(lib: ctypes.CDLL):
    """The call that seeds eSpeak's noise: ``espeak_ng_SetRandSeed``, or C ``srand`` for builds
    without it (they draw from ``rand()``); None where neither can be reached."""
    seeder = getattr(lib, "espeak_ng_SetRandSeed", None)
    if seeder is not None:
        seeder.argtypes = [ctypes.c_long]
        return seeder
    try:
        srand = ctypes.CDLL(None).srand
    except (OSError, AttributeError):  # no C library symbol table to reach (not glibc)
        return None
    srand.argtypes = [ctypes.c_uint]
    return srand


def _load_library() -> tuple[ctypes.CDLL, str | None]:
    try:
        import espeakng_loader
    except ImportError:
        name = ctypes.util.find_library("espeak-ng")
        if name is None:
            raise MissingPackage(
                "eSpeak NG not found: pip install espeakng-loader (or apt-get install libespeak-ng1)"
            ) from None
        return ctypes.CDLL(name), None
    return ctypes.CDLL(espeakng_loader.get_library_path()), espeakng_loader.get_data_path()


_synth: _Synth | None = None
_init_lock = threading.Lock()


def synthesizer() -> _Synth:
    global _synth
    with _init_lock:
        if _synth is None:
            _synth = _Synth()
    return _synth


def render(text: str, voice: str = "en-us", prosody: Prosody | None = None,
           ssml: bool = False, **params) -> tuple[np.ndarray, int]:
    """Render text to a float32 waveform in [-1, 1].

    Args:
        text: UTF-8 text, or an SSML document when ``ssml`` is true.
        voice: eSpeak voice name, optionally with a variant: ``"yue"``, ``"en-gb-scotland+m3"``.
        prosody: rate/pitch/range/volume/wordgap; keyword arguments override its fields.
    Returns:
        (waveform ``[samples]`` float32, sample rate in Hz).
    """
    base = vars(prosody) if prosody is not None else {}
    synth = synthesizer()
    return synth.render(text, voice, Prosody(**{**base, **params}), ssml), synth.sample_rate
