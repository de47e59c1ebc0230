"""``stepforge codec train|encode|decode``: a speech codec (melvq, or the released Step-Audio stack) on files.

    stepforge codec train --out engine/codec/weights/melvq.npz --seed 0
    stepforge codec encode IN.wav OUT.npy [--format npy|txt] [--codec melvq|WEIGHTS.npz|stepaudio:DIR]
    stepforge codec decode IN.npy|IN.txt OUT.wav|OUT.flac [--codec ...] [--voice PROMPT.wav] [--music]

encode writes int32 interleaved Step-Audio LM ids (``.npy``) or ``<audio_N>`` text; decode reads
either (by content) and writes the codec's audio: 16 kHz for melvq, 22.05 kHz for stepaudio
(``--voice``: the prompt wav to speak like, ``--music``: the CosyVoice-300M-25Hz-Music decoder).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from engine import tokens
from engine.audio import read_audio
from engine.codec import load_codec, tokenize_audio, weights
from engine.codec.train import TrainConfig, train as train_codec
from manifests.errors import UserError


CODEC_HELP = ("'melvq' (shipped), a melvq weights file, or stepaudio:MODEL_PATH[?options] (the released "
              "Step-Audio-Tokenizer + Step-Audio-TTS-3B dirs)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("codec", help="train the melvq codec, or encode/decode audio with a codec",
                                   description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="codec_command", required=True, metavar="ACTION")
    _add_train(sub)
    enc = sub.add_parser("encode", help="audio file -> interleaved Step-Audio ids")
    enc.add_argument("input", help="audio file (any format soundfile reads; resampled to 16 kHz)")
    enc.add_argument("output", help="OUT.npy (int32 ids) or OUT.txt with --format txt")
    enc.add_argument("--format", choices=("npy", "txt"), default=None,
                     help="output format (default: from the output suffix, else npy)")
    enc.add_argument("--codec", default="melvq", help=CODEC_HELP)
    enc.set_defaults(func=encode)
    dec = sub.add_parser("decode", help="interleaved Step-Audio ids -> audio (16 kHz melvq, 22.05 kHz stepaudio)")
    dec.add_argument("input", help="IN.npy (integer ids) or a text file of <audio_N> tokens")
    dec.add_argument("output", help="OUT.wav or OUT.flac")
    dec.add_argument("--codec", default="melvq", help=CODEC_HELP)
    dec.add_argument("--voice", default=None, help="stepaudio: voice prompt wav (default: the codec's voice)")
    dec.add_argument("--music", action="store_true", help="stepaudio: decode with the Music decoder (rap, humming)")
    dec.set_defaults(func=decode)


_TRAIN_OPTIONS = {  # flag -> help; defaults live in engine.codec.train.TrainConfig
    "seed": "random seed (default 0)",
    "utterances": "eSpeak renderings to train on (default 4000, ~4.4 h of speech)",
    "vq02-size": "vq02 codebook size (default 1024; small values for quick tests)",
    "vq06-size": "vq06 codebook size (default 4096)",
    "kmeans-iters": "Lloyd iterations per codebook (default 60)",
    "decoder-steps": "decoder training steps (default 3000)",
    "channels": "decoder width (default 256)",
}


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train codec weights from eSpeak-rendered speech")
    train.add_argument("--out", required=True, help="weights file to write (.npz)")
    train.add_argument("--force", action="store_true",
                       help="retrain even if OUT already holds weights trained with these settings")
    for flag, text in _TRAIN_OPTIONS.items():
        train.add_argument(f"--{flag}", type=int, default=None, help=text)
    train.add_argument("--first", choices=("vq06", "vq02"), default=None,
                       help="the stream that quantises the cepstra, the other taking the residual "
                            "(default vq06; weights up to melvq-1+554c77d0 put vq02 first)")
    train.set_defaults(func=train_command)


def train_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    overrides = {f.replace("-", "_"): getattr(args, f.replace("-", "_")) for f in (*_TRAIN_OPTIONS, "first")}
    for flag in ("utterances", "vq02-size", "vq06-size", "channels"):
        value = overrides[flag.replace("-", "_")]
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be at least 1, got {value}")
    cfg = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    if not args.force and _trained_with(args.out, cfg):
        print(f"{args.out} is up to date (same settings); --force retrains")
        return 0
    bars: dict[str, tqdm] = {}

    def progress(stage, done, total, value=None):
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage, unit="step")
        bar = bars[stage]
        bar.update(done - bar.n)
        if value is not None:
            bar.set_postfix(loss=f"{value:.3f}")

    digest = train_codec(cfg, args.out, progress)
    for bar in bars.values():
        bar.close()
    print(f"wrote {args.out} (melvq-1+{digest})")
    return 0


def _trained_with(path, cfg) -> bool:
    """Whether ``path`` is a weights file written by a finished run with exactly ``cfg``."""
    if not Path(path).exists():
        return False
    try:
        _, _, config = weights.load(path)
    except ValueError:
        return False
    return config.get("train") == json.loads(json.dumps(dataclasses.asdict(cfg)))


def encode(args: argparse.Namespace) -> int:
    wav, sr = read_audio(args.input)  # UserError naming the file when unreadable
    if wav.size == 0:
        raise UserError(f"{args.input}: no audio samples")
    ids = tokenize_audio(load_codec(args.codec), wav, sr)
    fmt = args.format or ("txt" if Path(args.output).suffix == ".txt" else "npy")
    if fmt == "txt":
        Path(args.output).write_text(tokens.to_audio_string(ids) + "\n", encoding="utf-8")
    else:
        with open(args.output, "wb") as f:  # a file object: np.save would append ".npy" to a bare name
            np.save(f, ids.astype(np.int32))
    print(f"{args.output}: {len(ids)} ids ({tokens.duration_seconds(len(ids)):.2f} s)")
    return 0


def read_ids(path) -> np.ndarray:
    """Ids from a ``.npy`` array or a ``<audio_N>`` text file. Raises UserError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if raw.startswith(b"\x93NUMPY"):
            with open(path, "rb") as f:
                ids = np.load(f, allow_pickle=False)
            if ids.dtype.kind not in "iu":
                raise ValueError(f"ids must be integers, not {ids.dtype}")
            ids = ids.reshape(-1)
        else:
            ids = np.asarray(tokens.from_audio_string("".join(raw.decode("utf-8").split())), np.int64)
        tokens.check_audio_ids(ids)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: bad audio ids ({exc})") from None
    return ids


def decode(args: argparse.Namespace) -> int:
    import soundfile as sf

    ids = read_ids(args.input)
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".wav", ".flac"):
        raise UserError(f"{args.output}: output must end in .wav or .flac")
    codec = load_codec(args.codec)
    if codec.name == "stepaudio":
        voice = codec.voice(args.voice) if args.voice else None
        wav = codec.detokenize(ids, voice=voice, music=args.music)
    elif args.voice or args.music:
        raise UserError("--voice and --music need a stepaudio codec (--codec stepaudio:MODEL_PATH)")
    else:
        wav = codec.detokenize(ids)
    sf.write(args.output, np.clip(wav, -1, 1), codec.sample_rate, subtype="PCM_16")
    print(f"{args.output}: {len(wav) / codec.sample_rate:.2f} s")
    return 0
