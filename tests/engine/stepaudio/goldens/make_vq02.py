"""Make the vq02-side parity goldens (goldens/vq02/*.npy) by running UPSTREAM code.

Upstream: github:stepfun-ai/Step-Audio at a52b94d85d418cd5bc736d696d310c990befbc79 (Apache-2.0):
``tokenizer.py`` (StepAudioTokenizer.get_vq02_code / dump_label), ``utils.py`` (resample_audio,
energy_norm_fn, trim_silence) and the ``funasr_detach`` tree (AutoModel, ParaformerStreaming,
WavFrontendOnline, SANMEncoderChunkOpt), plus torchaudio (transforms.Resample,
compliance.kaldi.fbank) and librosa (effects.trim). Nothing of it is in this repository:

    mkdir -p /root/upstream_a/src /root/upstream_a/shims/{funasr,whisper,sox}
    git --git-dir=<fetched Step-Audio>.git archive a52b94d8 funasr_detach tokenizer.py utils.py \\
        speakers | tar x -C /root/upstream_a/src
    touch /root/upstream_a/shims/{funasr,whisper,sox}/__init__.py
    .venv/bin/pip install --target /root/upstream_a/site --no-deps torchaudio==2.11.0 six==1.16.0 \\
        omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
    mkdir -p /root/upstream_a/disabled_so
    mv /root/upstream_a/site/torchaudio/lib/*.so /root/upstream_a/disabled_so/
    PYTHONPATH=/root/upstream_a/src:/root/upstream_a/shims:/root/upstream_a/site:. \\
        .venv/bin/python tests/engine/stepaudio/goldens/make_vq02.py

(torchaudio 2.11 is the newest release; its compiled extension does not load with torch 2.13, so
its .so files are moved away: compliance.kaldi and transforms.Resample are pure PyTorch.)

Shims, all outside upstream's logic: ``funasr``, ``whisper`` and ``sox`` are empty modules
(funasr_detach's register.py imports the PyPI funasr only for its side effects; tokenizer.py
imports whisper for vq06 and utils.py sox for volume/speed changes, neither used here);
``.cuda()`` is a no-op and the model runs with device "cpu" (upstream hard-codes CUDA);
torchaudio.save/load of the in-memory wav go through soundfile as 32-bit float (what torchaudio
2.3 wrote for a float tensor: a lossless round trip); the frontend's dither is set to 0 on the
built model (upstream's 1.0 adds random noise; parity needs none). librosa is the venv's 0.11
(upstream pins 0.10.2.post1).
"""
from __future__ import annotations

import io
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "vq02"
UPSTREAM = Path("/root/upstream_a/src")
sys.path.insert(0, str(HERE.parent))
from tiny_paraformer import PARAFORMER_DIR, write_tiny_tokenizer_vq02  # noqa: E402

SYNTH_LENGTHS = (7680, 8680, 4240, 11620, 300)  # piece boundary, short tails, too short


def synth(n: int, seed: int) -> np.ndarray:
    """A pitch-swept, amplitude-modulated tone in noise (speech-like enough for fbank)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    wav = 0.3 * np.sin(2 * np.pi * (150 + 50 * np.sin(2 * np.pi * 3 * t)) * t)
    return (wav * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t)) + 0.02 * rng.normal(size=n)).astype(np.float32)


def shim_upstream():
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    import torchaudio

    def save(dst, wav, sr, format=None, **_):
        sf.write(dst, wav.numpy().T, sr, format="WAV", subtype="FLOAT")

    def load(src, **_):
        data, sr = sf.read(src, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), sr
    torchaudio.save, torchaudio.load = save, load
    sys.modules.setdefault("whisper", types.ModuleType("whisper"))


def run_vq02(model, kms, wav: np.ndarray, tokenizer_cls) -> dict:
    """Upstream get_vq02_code on ``wav`` with the windows' inputs/outputs recorded."""
    record = {"lfr": [], "enc": []}
    inner = model.model.encode_chunk

    def encode_chunk(speech, speech_lengths, cache=None, **kw):
        record["lfr"].append(speech[0].clone())
        out, lens = inner(speech, speech_lengths, cache=cache, **kw)
        record["enc"].append(out[0, -speech_lengths[0]:].clone())
        return out, lens
    model.model.encode_chunk = encode_chunk
    host = types.SimpleNamespace(funasr_model=model, kms=kms, chunk_size=[0, 4, 5],
                                 encoder_chunk_look_back=4, decoder_chunk_look_back=1,
                                 vq02_sessions={}, vq02_lock=__import__("threading").Lock())
    host.dump_label = lambda samples, mean: tokenizer_cls.dump_label(host, samples, mean)
    host.kmean_cluster = lambda s, m: tokenizer_cls.kmean_cluster(host, s, m)
    # upstream passes device=0 (CUDA); everything else as get_vq02_code
    res, _ = model.infer_encoder(input=[_wav_bytes(wav)], chunk_size=host.chunk_size,
                                 encoder_chunk_look_back=4, decoder_chunk_look_back=1,
                                 device="cpu", is_final=True, cache={})
    codes = []
    for r in res:
        if len(r["enc_out"]) > 0:
            codes = host.dump_label([r["enc_out"]], kms)[0]
    model.model.encode_chunk = inner
    cat = (lambda xs: torch.cat(xs).numpy() if xs else np.zeros((0, 0), np.float32))
    return {"lfr": cat(record["lfr"]), "enc": cat(record["enc"]),
            "chunks": np.array([len(x) for x in record["lfr"]], np.int32),
            "codes": np.array(codes, np.int32)}


def _wav_bytes(wav: np.ndarray):
    import torchaudio
    buf = io.BytesIO()
    torchaudio.save(buf, torch.from_numpy(wav)[None], 16000, format="wav")
    buf.seek(0)
    return buf


def main():
    shim_upstream()
    sys.path.insert(0, str(UPSTREAM))
    import torchaudio
    import torchaudio.compliance.kaldi as kaldi
    import utils as up_utils
    from funasr_detach import AutoModel
    from tokenizer import StepAudioTokenizer

    OUT.mkdir(parents=True, exist_ok=True)
    save = (lambda name, x: np.save(OUT / f"{name}.npy", np.asarray(x)))
    wav44, sr = sf.read(UPSTREAM / "speakers/Tingting_prompt.wav", dtype="float32")
    assert sr == 44100
    # resampling (transforms.Resample as utils.resample_audio / tts.py use it)
    ex44 = wav44[44100: 44100 + 11025]
    save("resample_in_44k", ex44)
    save("resample_44k_16k", torchaudio.transforms.Resample(44100, 16000)(torch.from_numpy(ex44)[None])[0])
    noise = np.random.default_rng(7).normal(0, 0.3, 4800).astype(np.float32)
    save("resample_in_noise", noise)
    for a, b in ((48000, 16000), (48000, 22050), (24000, 16000), (22050, 16000), (16000, 22050)):
        save(f"resample_noise_{a}_{b}", torchaudio.transforms.Resample(a, b)(torch.from_numpy(noise)[None])[0])
    # 16 kHz excerpt of the real prompt: its first 1.0 s (0.09 s of near-silence, then speech)
    x16 = up_utils.resample_audio(torch.from_numpy(wav44)[None], 44100, 16000)[0, :16000]
    save("tingting_16k", x16)
    norm = up_utils.energy_norm_fn(x16[None])
    save("norm", norm[0])
    trimmed = up_utils.trim_silence(norm[0].numpy(), 16000)
    save("trim", trimmed)
    # fbank: the Paraformer frontend's call and CosyVoice's CAM++ call (povey, mean removed)
    seg = x16[:8000]
    save("fbank_hamming", kaldi.fbank((seg * (1 << 15))[None], num_mel_bins=80, frame_length=25,
                                      frame_shift=10, dither=0.0, energy_floor=0.0,
                                      window_type="hamming", sample_frequency=16000))
    povey = kaldi.fbank(seg[None], num_mel_bins=80, dither=0, sample_frequency=16000)
    save("fbank_povey_cmn", povey - povey.mean(dim=0, keepdim=True))
    # vq02 on the tiny checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        tok = write_tiny_tokenizer_vq02(tmp, seed=0)
        model = AutoModel(model=str(tok / PARAFORMER_DIR), model_revision="master",
                          disable_log=True, disable_update=True)
        model.kwargs["frontend"].dither = 0.0
        released = torch.load(tok / PARAFORMER_DIR / "model.pt", weights_only=True)
        built = model.model.state_dict()
        assert set(built) == set(released), set(built) ^ set(released)
        assert all(built[k].shape == v.shape for k, v in released.items())
        kms = torch.tensor(np.load(tok / "linguistic_tokenizer.npy"))
        cases = {"trim": trimmed.astype(np.float32)}
        for i, n in enumerate(SYNTH_LENGTHS):
            cases[f"synth{n}"] = synth(n, seed=i)
            save(f"vq02_in_synth{n}", cases[f"synth{n}"])
        for name, wav in cases.items():
            for key, value in run_vq02(model, kms, wav, StepAudioTokenizer).items():
                if key != "lfr" or name in ("trim", "synth8680"):  # keep the goldens small
                    save(f"vq02_{name}_{key}", value)
    total = sum(p.stat().st_size for p in OUT.glob("*.npy"))
    print(f"wrote {len(list(OUT.glob('*.npy')))} goldens, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
