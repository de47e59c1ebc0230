"""eSpeak NG phoneme round trip: text -> phoneme mnemonics, and ``[[...]]`` phoneme input -> audio.

engine.espeak renders text (or SSML) only; dialect stand-ins need to rewrite phonemes between the
two steps, so these helpers call the same process-wide synthesizer under its lock.

    >>> text_to_phonemes("我们是四川人。", "cmn")
    "w'o214_| m'@11n_| s.'i.51_| s'i[51_| ts.h'ua55n_| z.'@35n_|"
    >>> wav, sr = render_markup("[[w'o214 m'@11n]]", "cmn", Prosody())
"""
from __future__ import annotations

import ctypes

import numpy as np

from engine.espeak import Prosody, synthesizer

_CHARS_UTF8 = 1
_PHONEMES = 0x100  # espeakPHONEMES: honour [[ ]] phoneme input inside the text
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}


def _bind(lib) -> None:
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]


def text_to_phonemes(text: str, voice: str) -> str:
    """eSpeak's phoneme mnemonics for ``text`` (the ASCII names ``[[ ]]`` input accepts), its
    clauses joined by spaces. A language switch shows as ``(en)...(cmn)``."""
    synth = synthesizer()
    _bind(synth.lib)
    buf = ctypes.create_string_buffer(text.encode("utf-8"))
    ptr = ctypes.c_char_p(ctypes.addressof(buf))
    out = []
    with synth.lock:
        if synth.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        while ptr.value:
            out.append((synth.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, 0) or b"").decode())
    return " ".join(out)


def render_markup(markup: str, voice: str, prosody: Prosody) -> tuple[np.ndarray, int]:
    """Render text with ``[[phoneme]]`` passages. Returns (float32 ``[samples]``, sample rate)."""
    synth = synthesizer()
    data = markup.encode("utf-8") + b"\0"
    with synth.lock:
        if synth.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        for name, value in vars(prosody.clipped()).items():
            synth.lib.espeak_SetParameter(_PARAM[name], value, 0)
        # engine.espeak collects audio into _chunks from its callback; reuse it, as render does.
        synth._chunks = []
        err = synth.lib.espeak_Synth(data, len(data), 0, 1, 0, _CHARS_UTF8 | _PHONEMES, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err}")
        synth.lib.espeak_Synchronize()
        chunks, synth._chunks = synth._chunks, []
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    return pcm.astype(np.float32) / 32768.0, synth.sample_rate
