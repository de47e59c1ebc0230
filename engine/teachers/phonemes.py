"""eSpeak NG phoneme round trip: text -> phoneme mnemonics, and ``[[...]]`` phoneme input -> audio.

Dialect stand-ins rewrite phonemes between the two steps. Both go through the process-wide
synthesizer of engine.espeak (its lock, and the noise reseed of every rendering).

    >>> text_to_phonemes("我们是四川人。", "cmn")
    "w'o214_| m'@11n_| s.'i.51_| s'i[51_| ts.h'ua55n_| z.'@35n_|"
    >>> wav, sr = render_markup("[[w'o214 m'@11n]]", "cmn", Prosody())
"""
from __future__ import annotations

import numpy as np

from engine.espeak import Prosody, synthesizer


def text_to_phonemes(text: str, voice: str) -> str:
    """eSpeak's phoneme mnemonics for ``text`` (the ASCII names ``[[ ]]`` input accepts), its
    clauses joined by spaces. A language switch shows as ``(en)...(cmn)``."""
    return " ".join(synthesizer().text_to_phonemes(text, voice))


def render_markup(markup: str, voice: str, prosody: Prosody) -> tuple[np.ndarray, int]:
    """Render text with ``[[phoneme]]`` passages. Returns (float32 ``[samples]``, sample rate).
    Like every rendering it reseeds eSpeak's breath noise (engine.espeak), so a breathy variant
    (``+f2``) gives the same samples in every process."""
    synth = synthesizer()
    return synth.render(markup, voice, prosody, phonemes=True), synth.sample_rate
