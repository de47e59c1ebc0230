"""eSpeak NG binding: breathy variants render the same samples in every fresh process, as text
and as phoneme markup (the Sichuanese stand-in's path)."""
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Breathy variants and a plain one, in one process: the digest covers the call sequence.
RENDER = """
import hashlib
import numpy as np
from engine.espeak import Prosody, render
from engine.teachers.phonemes import render_markup, text_to_phonemes
h = hashlib.sha256()
# phoneme markup first: a render before it would leave the noise seeded for it
markup = "[[" + text_to_phonemes("我们是四川人。", "cmn") + "]]"
wav, sr = render_markup(markup, "cmn+f2", Prosody(rate=170))
h.update(np.asarray(wav).tobytes())
for voice in ("en-us+f2", "en+f5", "en-us+m3"):
    wav, sr = render("Seven bright kites drifted over the quiet harbour.", voice=voice, rate=170)
    h.update(np.asarray(wav).tobytes())
print(h.hexdigest())
"""


def _digest() -> str:
    out = subprocess.run([sys.executable, "-c", RENDER], check=True, cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def test_breath_noise_is_the_same_in_every_process():
    # eSpeak seeds its noise from the clock (seconds): without the reseed on every render the
    # two processes, a second or more apart, rendered different breath noise.
    first = _digest()
    time.sleep(1.1)
    assert _digest() == first
