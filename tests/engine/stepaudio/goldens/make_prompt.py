"""Make the prompt-conditioning parity goldens (goldens/prompt/*.npy) with UPSTREAM's code.

Upstream: github.com/stepfun-ai/Step-Audio at a52b94d85d418cd5bc736d696d310c990befbc79 (its
``cosyvoice/`` tree, Apache-2.0), run from outside this repository, never imported by it:

    git --git-dir=STEP_AUDIO.git archive a52b94d cosyvoice | tar -x -C /root/upstream_d/Step-Audio
    .venv/bin/pip install --target /root/upstream_d/site --no-deps torchaudio==2.11.0
    rm /root/upstream_d/site/torchaudio/lib/*.so      # CUDA builds; Resample and kaldi are pure torch
    PYTHONPATH=/root/upstream_d/Step-Audio:/root/upstream_d/site \\
        .venv/bin/python tests/engine/stepaudio/goldens/make_prompt.py

Input: ``tingting_1200ms.wav``, the first 1.2 s of upstream's ``speakers/Tingting_prompt.wav``
(44.1 kHz 16-bit mono, kept as it is). The steps are upstream's ``preprocess_prompt_wav`` (tts.py):
the file read as ``torchaudio.load`` reads it, channel mean, ``torchaudio.transforms.Resample`` to 16 kHz and to 22.05 kHz,
then ``CosyVoiceFrontEnd._extract_speech_feat`` with the ``feat_extractor`` of the yaml (upstream's
``mel_spectrogram`` with the released values) and ``_extract_spk_embedding`` on the tiny
``campplus.onnx`` of ``tiny_campplus.py`` (seed 0). ``cosyvoice/cli/frontend.py`` imports
``whisper`` for its speech-token path only, which is not run here: an empty stand-in module is
registered under that name (openai-whisper pulls numba, tiktoken and more). torchaudio 2.11's
``load`` needs torchcodec: the 16-bit file is read with soundfile instead, to the same floats
(``int16 / 32768``, ``[channels, samples]``).
Saved: both resampled inputs, the mel ``[frames, 80]`` and the embedding ``[192]``.
"""
from __future__ import annotations

import functools
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tiny_campplus import write_tiny_campplus  # noqa: E402

WAV = HERE / "prompt" / "tingting_1200ms.wav"
# feat_extractor: of the released cosyvoice.yaml (CosyVoice-300M recipe values)
FEAT_EXTRACTOR = dict(n_fft=1024, num_mels=80, sampling_rate=22050, hop_size=256, win_size=1024, fmin=0,
                      fmax=8000, center=False)


def main() -> None:
    sys.modules.setdefault("whisper", types.ModuleType("whisper"))
    import torchaudio
    from cosyvoice.cli.frontend import CosyVoiceFrontEnd
    from cosyvoice.matcha.audio import mel_spectrogram

    out = HERE / "prompt"
    data, sr = sf.read(str(WAV), dtype="float32", always_2d=True)  # = torchaudio.load for PCM
    prompt_wav = torch.from_numpy(data.T.copy())
    if prompt_wav.shape[0] > 1:
        prompt_wav = prompt_wav.mean(dim=0, keepdim=True)
    wav16 = torchaudio.transforms.Resample(orig_freq=sr, new_freq=16000)(prompt_wav)
    wav22 = torchaudio.transforms.Resample(orig_freq=sr, new_freq=22050)(prompt_wav)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = str(write_tiny_campplus(Path(tmp) / "campplus.onnx", seed=0))
        # the second model is the speech tokenizer's, unused here: any loadable graph will do
        frontend = CosyVoiceFrontEnd(functools.partial(mel_spectrogram, **FEAT_EXTRACTOR), onnx_path, onnx_path)
        mel, mel_len = frontend._extract_speech_feat(wav22)
        embedding = frontend._extract_spk_embedding(wav16)
    arrays = dict(wav16k=wav16[0].numpy(), wav22k=wav22[0].numpy(), mel=mel[0].numpy(),
                  embedding=embedding[0].numpy().astype(np.float32))
    assert int(mel_len[0]) == arrays["mel"].shape[0]
    for name, a in arrays.items():
        np.save(out / f"{name}.npy", a)
    print({k: (v.shape, v.dtype) for k, v in arrays.items()}, f"torchaudio {torchaudio.__version__}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
