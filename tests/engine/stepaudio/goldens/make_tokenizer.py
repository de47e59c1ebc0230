"""Make the end-to-end tokenizer goldens (goldens/tokenizer/*.npy) with UPSTREAM ``wav2token``.

Upstream: github:stepfun-ai/Step-Audio at a52b94d85d418cd5bc736d696d310c990befbc79 (Apache-2.0):
``StepAudioTokenizer.wav2token`` of ``tokenizer.py`` run unchanged (torchaudio resampling,
energy_norm_fn, trim_silence, get_vq02_code through funasr_detach's streaming Paraformer,
get_vq06_code through whisper's log-mel and onnxruntime, the 2:3 merge) on the tiny checkpoints of
``tiny_paraformer.py`` and ``tiny_vq06.py`` (seed 0), for the first 2.5 s of
``speakers/Tingting_prompt.wav`` (44.1 kHz 16-bit), with and without the prompt trim.

Environment (outside the repository): the one make_vq02.py documents (/root/upstream_a: upstream
src with funasr_detach, torchaudio 2.11 in site/, empty funasr/sox/whisper shims) plus
openai-whisper 20231117 as make_vq06.py installs it (/root/upstream_b/site), first on the path so
the real whisper wins over the shim:

    PYTHONPATH=/root/upstream_b/site:/root/upstream_a/src:/root/upstream_a/site:/root/upstream_a/shims:. \\
        .venv/bin/python tests/engine/stepaudio/goldens/make_tokenizer.py

Harness only (none of upstream's logic changes): the instance is made with ``object.__new__``
(its ``__init__`` asks for CUDA); AutoModel is built as upstream builds it, on CPU, with the
frontend dither set to 0; ``infer_encoder`` is called with device "cpu" instead of upstream's
``device=0``; ``.cuda()`` is a no-op; torchaudio.save/load of the in-memory wav go through
soundfile as 32-bit float (lossless, what torchaudio 2.3 wrote for a float tensor).
"""
from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
OUT = HERE / "tokenizer"
EXCERPT = (0, 110250)  # the first 2.5 s at 44.1 kHz: silence, then speech


def shim_torch_and_torchaudio():
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    import torchaudio

    def save(dst, wav, sr, format=None, **_):
        sf.write(dst, wav.numpy().T, sr, format="WAV", subtype="FLOAT")

    def load(src, **_):
        data, sr = sf.read(src, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr
    torchaudio.save, torchaudio.load = save, load


def upstream_tokenizer(tok_dir: Path):
    import onnxruntime
    from funasr_detach import AutoModel
    from tokenizer import StepAudioTokenizer

    tok = object.__new__(StepAudioTokenizer)
    model = AutoModel(model=str(tok_dir / "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"),
                      model_revision="master", disable_log=True, disable_update=True)
    model.kwargs["frontend"].dither = 0.0
    inner = model.infer_encoder
    model.infer_encoder = lambda *a, **kw: inner(*a, **{**kw, "device": "cpu"})
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    tok.funasr_model = model
    tok.kms = torch.tensor(np.load(tok_dir / "linguistic_tokenizer.npy"))
    tok.ort_session = onnxruntime.InferenceSession(str(tok_dir / "speech_tokenizer_v1.onnx"), sess_options=opts,
                                                   providers=["CPUExecutionProvider"])
    tok.chunk_size, tok.encoder_chunk_look_back, tok.decoder_chunk_look_back = [0, 4, 5], 4, 1
    tok.vq02_sessions, tok.vq02_lock, tok.vq06_lock = {}, threading.Lock(), threading.Lock()
    return tok


def main():
    import whisper  # noqa: F401  (the real one: fail here, not inside upstream, when it is the shim)
    assert hasattr(whisper, "log_mel_spectrogram"), "openai-whisper must come before the whisper shim"
    shim_torch_and_torchaudio()
    sys.path.insert(0, str(REPO))
    from tests.engine.stepaudio.tiny_paraformer import write_tiny_tokenizer_vq02
    from tests.engine.stepaudio.tiny_vq06 import write_tiny_vq06_onnx

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = write_tiny_tokenizer_vq02(tmp, seed=0)
        write_tiny_vq06_onnx(tok_dir / "speech_tokenizer_v1.onnx", seed=0)
        tok = upstream_tokenizer(tok_dir)
        src = Path(sys.modules["tokenizer"].__file__).parent
        pcm, sr = sf.read(src / "speakers" / "Tingting_prompt.wav", dtype="int16")
        assert sr == 44100 and pcm.ndim == 1
        pcm = pcm[EXCERPT[0]:EXCERPT[1]]
        np.save(OUT / "prompt_44k_int16.npy", pcm)
        wav = torch.from_numpy(pcm.astype(np.float32) / 32768.0)[None]  # what torchaudio.load gives
        for name, trim in (("trim", True), ("notrim", False)):
            ids, vq02, vq06 = tok.wav2token(wav, sr, enable_trim=trim)
            for key, value in (("ids", ids), ("vq02", vq02), ("vq06", vq06)):
                np.save(OUT / f"{name}_{key}.npy", np.asarray(value, np.int64))
            print(name, len(ids), len(vq02), len(vq06))
    total = sum(p.stat().st_size for p in OUT.glob("*.npy"))
    print(f"wrote {len(list(OUT.glob('*.npy')))} goldens, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
