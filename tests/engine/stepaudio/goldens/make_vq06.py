"""Make the vq06 and merge goldens by running UPSTREAM Step-Audio code (never committed here).

What it runs (github:stepfun-ai/Step-Audio at a52b94d85d418cd5bc736d696d310c990befbc79):
- ``StepAudioTokenizer.get_vq06_code`` of ``tokenizer.py`` (30 s chunking, whisper's
  ``log_mel_spectrogram(n_mels=128)``, the ONNX session) on the tiny graph of
  ``tests/engine/stepaudio/tiny_vq06.py`` (seed 0). Upstream's ``__init__`` asks for CUDA and
  loads Paraformer, so the instance is made with ``object.__new__`` and given a CPU session built
  with upstream's options; ``torchaudio``, ``sox`` and ``funasr_detach`` are import-time stubs
  (the vq06 path and the merge use none of them).
- ``whisper.log_mel_spectrogram`` (openai-whisper 20231117, upstream's pin) for the log-mel.
- the merge: ``StepAudioTokenizer.wav2token``'s interleave loop (its preprocess and code methods
  replaced by fixed code arrays) and ``merge_vq0206_to_token_str`` read back with
  ``utils.get_audio_tokens``.

Input: ``speakers/Tingting_prompt.wav`` (44.1 kHz), resampled to 16 kHz with soxr (HQ), peak
normalised as upstream's energy_norm_fn, 2.0 s from 0.5 s. The long inputs are that excerpt
tiled (no extra files stored).

Run (from the repository root; upstream checkout and deps outside the repository):

    git --git-dir=<fetched Step-Audio>.git archive a52b94d8 tokenizer.py utils.py speakers \\
        | tar -x -C /root/upstream_b/Step-Audio
    echo 'setuptools<70' > /root/upstream_b/c.txt   # its setup.py needs pkg_resources
    .venv/bin/pip install --target /root/upstream_b/site --no-deps --build-constraint \\
        /root/upstream_b/c.txt openai-whisper==20231117
    .venv/bin/pip install --target /root/upstream_b/site tiktoken more-itertools numba
    rm -rf /root/upstream_b/site/numpy*   # keep the venv's numpy
    PYTHONPATH=/root/upstream_b/site .venv/bin/python tests/engine/stepaudio/goldens/make_vq06.py \\
        --upstream /root/upstream_b/Step-Audio
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
OUT = HERE / "vq06"
SEED = 0


def excerpt(upstream: Path) -> np.ndarray:
    import soundfile as sf
    import soxr

    wav, sr = sf.read(upstream / "speakers" / "Tingting_prompt.wav", dtype="float32", always_2d=True)
    wav16 = soxr.resample(wav.mean(axis=1), sr, 16000, quality="HQ").astype(np.float32)
    wav16 = wav16 / max(np.abs(wav16).max(), 0.01) * 0.999
    return np.ascontiguousarray(wav16[8000:8000 + 32000], dtype=np.float32)


def long_inputs(x: np.ndarray) -> dict[str, np.ndarray]:
    """Tiled excerpt: two chunks (30 s + 2 s) and one whose 300-sample tail piece is dropped."""
    tiled = np.tile(x, 16)
    return {"long": tiled[:480000 + 32000], "longdrop": tiled[:480000 + 300]}


def merge_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    sizes = {"m37x50": (37, 50), "m4x6": (4, 6), "m10x3": (10, 3), "m1x2": (1, 2), "m0x9": (0, 9)}
    return {k: (rng.integers(0, 1024, a).astype(np.int64), rng.integers(0, 4096, b).astype(np.int64))
            for k, (a, b) in sizes.items()}


def upstream_module(upstream: Path):
    for name in ("torchaudio", "sox"):
        sys.modules.setdefault(name, types.ModuleType(name))
    funasr = types.ModuleType("funasr_detach")
    funasr.AutoModel = None
    sys.modules["funasr_detach"] = funasr
    sys.path.insert(0, str(upstream))
    import tokenizer
    import utils
    return tokenizer, utils


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", type=Path, required=True, help="upstream Step-Audio checkout")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import onnxruntime
    import torch
    import whisper

    from tests.engine.stepaudio.tiny_vq06 import write_tiny_vq06_onnx

    tokenizer, utils = upstream_module(args.upstream)
    tok = object.__new__(tokenizer.StepAudioTokenizer)
    tok.vq06_lock = threading.Lock()
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = write_tiny_vq06_onnx(Path(tmp) / "speech_tokenizer_v1.onnx", seed=SEED)
        tok.ort_session = onnxruntime.InferenceSession(str(onnx_path), sess_options=opts,
                                                       providers=["CPUExecutionProvider"])
        x = excerpt(args.upstream)
        np.save(OUT / "wav16k.npy", x)
        np.save(OUT / "log_mel.npy", whisper.log_mel_spectrogram(torch.from_numpy(x), n_mels=128).numpy())
        np.save(OUT / "log_mel_short.npy", whisper.log_mel_spectrogram(torch.from_numpy(x[:1000]), n_mels=128).numpy())
        np.save(OUT / "codes.npy", np.asarray(tok.get_vq06_code(torch.from_numpy(x)[None]), np.int64))
        np.save(OUT / "codes_short.npy", np.asarray(tok.get_vq06_code(torch.from_numpy(x[:1000])[None]), np.int64))
        for name, wav in long_inputs(x).items():
            np.save(OUT / f"codes_{name}.npy", np.asarray(tok.get_vq06_code(torch.from_numpy(wav)[None]), np.int64))
    for name, (vq02, vq06) in merge_cases().items():
        tok.preprocess_wav = lambda audio, sr, **kw: audio
        tok.get_vq02_code = lambda audio, a=vq02: a.tolist()
        tok.get_vq06_code = lambda audio, b=vq06: b.tolist()
        ids, _, _ = tok.wav2token(None, 16000)
        text = tok.merge_vq0206_to_token_str(vq02.tolist(), vq06.tolist())
        from_text = utils.get_audio_tokens(text) if text else []
        assert list(ids) == list(from_text), name
        np.save(OUT / f"merge_{name}_vq02.npy", vq02)
        np.save(OUT / f"merge_{name}_vq06.npy", vq06)
        np.save(OUT / f"merge_{name}.npy", np.asarray(ids, np.int64))
    for p in sorted(OUT.glob("*.npy")):
        print(p.name, np.load(p).shape)


if __name__ == "__main__":
    main()
