"""Make the HiFT parity goldens (goldens/hift/*.npy) by running UPSTREAM's HiFTGenerator.

Upstream: github.com/stepfun-ai/Step-Audio at a52b94d85d418cd5bc736d696d310c990befbc79 (its
``cosyvoice/`` tree, Apache-2.0), run from outside this repository, never imported by it:

    git --git-dir=STEP_AUDIO.git archive a52b94d cosyvoice | tar -x -C /root/upstream_d/Step-Audio
    .venv/bin/pip install --target /root/upstream_d/site hyperpyyaml      # 1.2.3, pure Python
    PYTHONPATH=/root/upstream_d/Step-Audio:/root/upstream_d/site \\
        .venv/bin/python tests/engine/stepaudio/goldens/make_hift.py

It writes the tiny checkpoint of ``tiny_hift.py`` (seed 0) and a cosyvoice.yaml holding its
``hift:`` section to a temp dir, builds the generator with hyperpyyaml as upstream's CosyVoice
does, loads ``hift.pt`` strictly, and saves: the fixed input mel, the F0 predictor's output, the
source after ``torch.manual_seed(SEED)`` (the shared random state: our generator seeded alike must
draw the same phases and noise), the full ``inference`` output after the same seeding, and the
output for a given fixed source (upstream's ``_stft`` -> ``_inference_impl`` -> ``_istft``).
Also ``released_keys.json``: every state-dict key and shape of upstream's generator at the released
sizes (its constructor defaults, the values of the CosyVoice-300M recipe's ``hift:``), which is the
list ``hift.pt`` (~82 MB) holds.
Upstream puts its STFT window on CUDA (``.cuda()`` in the constructor); on a CPU machine that call
is made the identity here, nothing else is changed.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tiny_hift import write_hift_yaml, write_tiny_hift  # noqa: E402

SEED = 1234
FRAMES = 24


def fixed_mel() -> np.ndarray:
    """[80, 24]: a louder then a quieter half, so the tiny F0 head gives voiced and unvoiced frames."""
    rng = np.random.default_rng(0)
    half = FRAMES // 2
    return np.concatenate([rng.normal(-5, 2, (80, half)), rng.normal(-10, 1, (80, FRAMES - half))], 1).astype(np.float32)


def fixed_source() -> np.ndarray:
    """[24 * 256]: a 150 Hz sine with noise, as an excitation independent of the F0 head."""
    t = np.arange(FRAMES * 256) / 22050
    rng = np.random.default_rng(1)
    return np.tanh(0.1 * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def main() -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self  # upstream's window .cuda(); CPU here
    from hyperpyyaml import load_hyperpyyaml

    out = HERE / "hift"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_hift_yaml(tmp, write_tiny_hift(tmp, seed=0))
        with open(Path(tmp) / "cosyvoice.yaml") as f:
            hift = load_hyperpyyaml(f)["hift"]
        hift.load_state_dict(torch.load(Path(tmp) / "hift.pt", map_location="cpu"))  # strict, as upstream
    hift.eval()
    mel, src = fixed_mel(), fixed_source()
    with torch.inference_mode():
        x = torch.from_numpy(mel)[None]
        f0 = hift.f0_predictor(x)
        torch.manual_seed(SEED)
        source = hift._f02source(f0)  # [1, 1, frames * 256]
        torch.manual_seed(SEED)
        wav, _ = hift.inference(mel=x)
        real, imag = hift._stft(torch.from_numpy(src)[None])
        magnitude, phase = hift._inference_impl(mel=x, s_stft=torch.cat([real, imag], dim=1))
        wav_fixed = torch.clamp(hift._istft(magnitude, phase), -hift.audio_limit, hift.audio_limit)
    arrays = dict(mel=mel, f0=f0[0].numpy(), source=source[0, 0].numpy(), wav_seeded=wav[0].numpy(),
                  fixed_source=src, wav_fixed_source=wav_fixed[0].numpy(), seed=np.array(SEED))
    for name, a in arrays.items():
        np.save(out / f"{name}.npy", a)
    from cosyvoice.hifigan.f0_predictor import ConvRNNF0Predictor
    from cosyvoice.hifigan.generator import HiFTGenerator

    released = HiFTGenerator(f0_predictor=ConvRNNF0Predictor()).state_dict()
    (out / "released_keys.json").write_text(json.dumps({k: list(v.shape) for k, v in released.items()}, indent=0))
    voiced = float((arrays["f0"] > 10).mean())
    print(f"wrote {len(arrays)} arrays to {out}; voiced frames {voiced:.2f}; |wav| max {np.abs(arrays['wav_seeded']).max():.3f}")


if __name__ == "__main__":
    main()
