"""Paraformer (FunASR) ASR for Chinese, the recogniser of the seed-tts-eval zh protocol.

    asr = ParaformerASR("/models/paraformer-zh")      # a local FunASR model dir
    asr.transcribe([wav], "zh")                      # float32 [samples] at 16 kHz -> ["今天天气很好"]

Nothing is downloaded: the model dir must already be on disk (``disable_update``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import MissingModel, MissingPackage

HINT = "Paraformer needs `pip install funasr` and a local model dir (asr.<lang>.model in the ASR config)"


class ParaformerASR:
    """Args:
        model: local FunASR Paraformer dir (model.pt / config.yaml as FunASR saves them).
        device: "cpu" or "cuda". batch_size_s: seconds of audio per FunASR batch.
    """

    def __init__(self, model: str = "", device: str = "cpu", batch_size_s: int = 300):
        if not model or not Path(model).expanduser().is_dir():
            raise MissingModel(f"{HINT}; model dir {model or '(not set)'!r} does not exist")
        try:
            from funasr import AutoModel
        except ImportError:
            raise MissingPackage(f"{HINT}; funasr is not installed") from None
        self.model = AutoModel(model=str(Path(model).expanduser()), device=device,
                               disable_update=True, disable_pbar=True, log_level="ERROR")
        self.name = f"paraformer:{Path(model).name}"
        self.batch_size_s = batch_size_s

    def transcribe(self, batch: list[np.ndarray], lang: str) -> list[str]:
        if not batch:
            return []
        results = self.model.generate(input=[np.asarray(w, np.float32) for w in batch],
                                      batch_size_s=self.batch_size_s)
        # FunASR separates Chinese characters with spaces; normalisation drops them anyway
        return [r.get("text", "") for r in results]
