"""Speed of the released Step-Audio speech stack at its real sizes vs the project's melvq codec.

    python -m bench.stepaudio_decode                                  # CPU, fp32, torch threads 2
    python -m bench.stepaudio_decode --device cuda --dtype bf16       # the same on a GPU (flow in bf16)
    python -m bench.stepaudio_decode --weights /tmp/sa_released       # keep the ~1.6 GB of checkpoints

Random weights of the released shapes, written in the released layout by the tests' writers
(tests/engine/stepaudio/tiny_*.py): CosyVoice-300M-25Hz ``flow.pt`` (105.4 M parameters) and
``hift.pt`` (base 512), the Step-Audio-Tokenizer Paraformer-large encoder (512-d, 4 heads, 2048
units, 50 blocks; the ASR head our loader ignores is written at one block) and its 1024 x 512
centroids. A released-size ``speech_tokenizer_v1.onnx`` cannot be written here (upstream publishes
only the trained graph), so vq06 runs a stand-in graph of the released file's size and shape
(S3Tokenizer v1 as the PyPI s3tokenizer describes it: two stride-2 convs 128 -> 1280, six pre-LN
Transformer blocks of 1280 x 20 heads, MLP 5120, nearest of 4096 codes; ~130 M parameters, a 543 MB
graph vs the released 523 MB), exported with torch.onnx.

Decode: 415 ids (83 merged 2:3 groups, 9.96 s at 41.67 ids/s) after a 3 s prompt (125 ids, 258
prompt-mel frames, a 192-d embedding; prompt conditioning itself is per voice and not timed), flow
per Euler-step count then HiFT on the 10-step mel; melvq detokenizes the same ids. Encode: 10 s of
speech (engine/data/speakers/*.wav tiled), vq02 and vq06 of StepAudioTokenizer timed apart (their
sum is the encode; preprocessing and merge take milliseconds), vs melvq tokenize. All in one
process with the same torch (and onnxruntime) thread count; each figure is the median of
``--repeats`` runs after one warm-up (the flow's: one Euler step), in wall seconds and in the
process's CPU seconds (the steadier figure on a shared machine). RTF = seconds / audio seconds.
With ``--device cuda`` the flow (in ``--dtype``), HiFT (fp32, as upstream) and the Paraformer run on
the GPU; vq06 (onnxruntime) and melvq stay on the CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WRITERS = ROOT / "tests" / "engine" / "stepaudio"
IDS_PER_S = 41.67
PARAFORMER_LARGE = dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=50,
                        decoder_blocks=1, codes=1024)
HIFT_RELEASED = dict(base_channels=512)
F0_RELEASED = dict(cond_channels=512)
S3_V1 = dict(n_mels=128, d=1280, heads=20, layers=6, codes=4096)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class Block(torch.nn.Module):
    """Pre-LN Transformer block (Whisper's): x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn_ln, self.mlp_ln = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.out = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(d, 4 * d), torch.nn.GELU(), torch.nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_ln(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1) @ v
        x = x + self.out(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.mlp_ln(x))


class S3LikeEncoder(torch.nn.Module):
    """The stand-in vq06 network: log-mel [1, 128, T] -> codes [1, ceil(ceil(T/2)/2)]."""

    def __init__(self, n_mels: int, d: int, heads: int, layers: int, codes: int):
        super().__init__()
        self.conv1 = torch.nn.Conv1d(n_mels, d, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.blocks = torch.nn.Sequential(*(Block(d, heads) for _ in range(layers)))
        self.ln_post = torch.nn.LayerNorm(d)
        pos = torch.arange(1500)[:, None] * torch.exp(-np.log(10000) * torch.arange(0, d, 2)[None] / d)
        self.register_buffer("pos", torch.cat([pos.sin(), pos.cos()], 1))
        self.register_buffer("codebook", torch.randn(codes, d))

    def forward(self, feats: torch.Tensor, feats_length: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.gelu(self.conv2(torch.nn.functional.gelu(self.conv1(feats)))).transpose(1, 2)
        x = self.ln_post(self.blocks(x + self.pos[: x.shape[1]]))
        score = 2 * x @ self.codebook.T - (self.codebook ** 2).sum(1)
        n = torch.div(torch.div(feats_length.long() + 1, 2, rounding_mode="floor") + 1, 2, rounding_mode="floor")
        return score.argmax(-1).to(torch.int32)[:, : n[0]]


def write_vq06_standin(path: Path, seed: int = 0) -> None:
    torch.manual_seed(seed)
    model = S3LikeEncoder(**S3_V1).eval()
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 128, 400), torch.tensor([400], dtype=torch.int32)), str(path),
                          dynamo=False, input_names=["feats", "feats_length"], output_names=["indices"],
                          dynamic_axes={"feats": {2: "T"}, "indices": {1: "T_out"}}, opset_version=17)


def write_released(root: Path) -> tuple[Path, Path]:
    """Write (once) the decoder dir and the tokenizer dir at the released sizes under ``root``."""
    sys.path.insert(0, str(WRITERS))
    from tiny_flow import RELEASED, write_tiny_flow
    from tiny_hift import TINY_F0, TINY_HIFT, hift_section, tiny_hift_state
    from tiny_paraformer import write_tiny_tokenizer_vq02

    decoder, tokenizer = root / "CosyVoice-300M-25Hz", root / "Step-Audio-Tokenizer"
    if not (decoder / "hift.pt").is_file():
        hift, f0 = {**TINY_HIFT, **HIFT_RELEASED}, {**TINY_F0, **F0_RELEASED}
        write_tiny_flow(decoder, seed=0, sizes=RELEASED, hift=hift_section(hift, f0))
        torch.save(tiny_hift_state(hift, f0, seed=0), decoder / "hift.pt")
    if not (tokenizer / "speech_tokenizer_v1.onnx").is_file():
        write_tiny_tokenizer_vq02(root, seed=0, **PARAFORMER_LARGE)
        write_vq06_standin(tokenizer / "speech_tokenizer_v1.onnx")
    return decoder, tokenizer


def random_ids(groups: int, rng: np.random.Generator) -> np.ndarray:
    from engine.stepaudio.merge import merge

    return merge(rng.integers(0, 1024, 2 * groups), rng.integers(0, 4096, 3 * groups))


def speech_16k(seconds: float) -> np.ndarray:
    from engine.stepaudio.audio import load_audio, resample

    parts = []
    for path in sorted((ROOT / "engine" / "data" / "speakers").glob("*.wav")):
        wav, sr = load_audio(path)
        parts.append(resample(wav, sr, 16000))
    wav = np.concatenate(parts)
    return np.resize(wav, int(seconds * 16000)).astype(np.float32)


def load1() -> float:
    return os.getloadavg()[0]


class Timing(float):
    """Median wall seconds, with ``cpu``: the median CPU seconds of the process over the same calls."""

    cpu: float


def timed(fn, repeats: int, loads: list[float], warm=None) -> tuple[Timing, object]:
    """Median wall and CPU seconds of ``repeats`` calls of ``fn`` after one call of ``warm``
    (default ``fn``). On a shared machine the CPU seconds are the steadier figure: they count the
    work, not the waits for a core (spinning OpenMP threads inflate them a little)."""
    (warm or fn)()  # allocator, kernels, caches
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        loads.append(load1())
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    t = Timing(statistics.median(walls))
    t.cpu = statistics.median(cpus)
    return t, out


def plus(a: Timing, b: Timing) -> Timing:
    t = Timing(a + b)
    t.cpu = a.cpu + b.cpu
    return t


def bench_decode(args, decoder_dir: Path, melvq, loads: list[float]) -> list[tuple]:
    """Flow per Euler-step count, HiFT, their sums and melvq detokenize on the same 415 ids."""
    from engine.stepaudio.flow import FlowDecoder
    from engine.stepaudio.hift import HiFT

    rng = np.random.default_rng(0)
    ids, prompt_ids = random_ids(83, rng), random_ids(25, rng)
    prompt_mel = (-6 + 2 * rng.standard_normal((int(len(prompt_ids) / IDS_PER_S * 22050 / 256), 80))).astype(np.float32)
    embedding = rng.standard_normal(192).astype(np.float32)
    flow = FlowDecoder.from_dir(decoder_dir, device=args.device, dtype=DTYPES[args.dtype])
    hift = HiFT.from_dir(decoder_dir).to(args.device)
    rows, mel = [], None
    for n in args.steps:
        def run(n=n):
            return flow.inference(ids - 65536, prompt_ids - 65536, prompt_mel, embedding, n_steps=n, seed=0)
        t, out = timed(run, args.repeats, loads, warm=lambda: run(1))
        mel = out if mel is None else mel
        rows.append(("decode", f"flow, {n} Euler steps ({args.device} {args.dtype})", t, out.shape[1] * 256 / 22050))
        print(f"{rows[-1][1]}: {t:.3f} s (cpu {t.cpu:.3f} s)", flush=True)
    t_hift, wav = timed(lambda: hift.inference(mel, seed=0), args.repeats, loads)
    seconds = len(wav) / 22050
    rows.append(("decode", f"HiFT ({args.device} fp32)", t_hift, seconds))
    for n, (_, _, t, _) in zip(args.steps, rows[: len(args.steps)]):
        rows.append(("decode", f"Step-Audio decode = flow {n} + HiFT", plus(t, t_hift), seconds))
    t, out = timed(lambda: melvq.detokenize(ids), args.repeats, loads)
    rows.append(("decode", "melvq detokenize (cpu)", t, len(out) / melvq.sample_rate))
    print(f"HiFT: {t_hift:.3f} s (cpu {t_hift.cpu:.3f}); melvq detokenize: {t:.3f} s (cpu {t.cpu:.3f})", flush=True)
    return rows


def bench_encode(args, tokenizer_dir: Path, melvq, loads: list[float]) -> list[tuple]:
    """vq02, vq06 (each warmed on 1 s), their sum and melvq tokenize on the same 10 s of speech."""
    from engine.stepaudio.tokenizer import StepAudioTokenizer

    tok = StepAudioTokenizer.from_dir(tokenizer_dir, threads=args.threads)
    if args.device != "cpu":
        from engine.stepaudio.vq02 import Vq02Tokenizer

        tok.vq02 = Vq02Tokenizer.from_dir(tokenizer_dir, dither=0.0, device=args.device)
    wav16k = speech_16k(10.0)
    rows = []
    parts = [(f"vq02: Paraformer-large streaming ({args.device} fp32)", tok.vq02.codes),
             ("vq06: S3Tokenizer-v1-size stand-in ONNX (cpu)", tok.vq06.codes),
             ("melvq tokenize (cpu)", melvq.tokenize)]
    for name, fn in parts:
        t, _ = timed(lambda fn=fn: fn(wav16k), args.repeats, loads, warm=lambda fn=fn: fn(wav16k[:16000]))
        rows.append(("encode", name, t, 10.0))
        print(f"{name}: {t:.3f} s (cpu {t.cpu:.3f} s)", flush=True)
    # preprocessing (a no-op resample, peak normalisation) and the merge take milliseconds
    rows.insert(-1, ("encode", "Step-Audio encode = vq02 + vq06", plus(rows[0][2], rows[1][2]), 10.0))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 5], help="Euler step counts of the flow")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="the flow's dtype (HiFT is fp32)")
    parser.add_argument("--weights", type=Path, help="dir to keep the written checkpoints in (default: a temp dir)")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--skip-encode", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from engine.codec import load_codec

    tmp = None if args.weights else tempfile.TemporaryDirectory(prefix="stepaudio_bench_")
    root = args.weights or Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    decoder_dir, tokenizer_dir = write_released(root)
    print(f"checkpoints in {root} ({time.perf_counter() - start:.0f} s)", flush=True)

    melvq = load_codec("melvq")
    loads: list[float] = [load1()]
    rows = []  # (section, name, Timing, audio seconds)
    if not args.skip_decode:
        rows += bench_decode(args, decoder_dir, melvq, loads)
    if not args.skip_encode:
        rows += bench_encode(args, tokenizer_dir, melvq, loads)

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
          f"median of {args.repeats} after one warm-up; 1-min load average {min(loads):.2f}..{max(loads):.2f}")
    base = {s: next(t for sec, name, t, _ in rows if sec == s and name.startswith("melvq")) for s in {r[0] for r in rows}}
    print("wall: median seconds per call; cpu: median CPU seconds of the process per call; RTF = s / audio s;"
          " x melvq: cpu seconds over melvq's")
    print(f"{'':7s}| {'component':56s}| {'audio s':>7s} | {'wall s':>8s} | {'wall RTF':>8s} | {'cpu s':>8s} | "
          f"{'cpu RTF':>8s} | {'x melvq':>7s}")
    for section, name, t, audio in rows:
        print(f"{section:7s}| {name:56s}| {audio:7.2f} | {t:8.3f} | {t / audio:8.4f} | {t.cpu:8.3f} | "
              f"{t.cpu / audio:8.4f} | {t.cpu / base[section].cpu:7.1f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
