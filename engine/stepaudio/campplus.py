"""CAM++ speaker embedding of a prompt, as the CosyVoice frontend computes it: ``campplus.onnx``
(onnxruntime, CPU) on the mean-removed Kaldi fbank (80 bins, dither 0) of the 16 kHz prompt.

    campplus = CampPlus(decoder_dir / "campplus.onnx")
    emb = campplus(fbank)          # float32 [frames, 80] (mean removed here) -> float32 [192]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import torch

from engine.errors import MissingModel
from manifests.errors import UserError

FBANK_BINS = 80


class CampPlus:
    """One onnxruntime session over ``campplus.onnx``; its first input takes ``[1, frames, 80]``
    float32 and its first output is the embedding (upstream's contract, by position)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingModel(f"{self.path}: no such file (the CosyVoice decoder dir of Step-Audio-TTS-3B has it)")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), sess_options=options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as e:  # truncated or not ONNX: onnxruntime raises its own error types
            raise UserError(f"{self.path}: not a loadable ONNX model ({' '.join(str(e).split())[:200]})") from None
        inp = self.session.get_inputs()[0]
        shape = inp.shape  # dynamic axes come as names (str) or None
        if inp.type != "tensor(float)" or len(shape) != 3 or isinstance(shape[2], int) and shape[2] != FBANK_BINS:
            raise UserError(f"{self.path}: input {inp.name!r} is {inp.type} {shape}, expected float [batch, frames, {FBANK_BINS}]")
        self.input_name = inp.name

    def __call__(self, fbank: np.ndarray) -> np.ndarray:
        """Embedding of one prompt: Kaldi fbank ``[frames, 80]`` -> float32 ``[dim]`` (192)."""
        feats = np.asarray(fbank, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != FBANK_BINS or feats.shape[0] < 1:
            raise ValueError(f"CampPlus: fbank must be [frames, {FBANK_BINS}], got {list(feats.shape)}")
        x = torch.from_numpy(feats)
        x = x - x.mean(dim=0, keepdim=True)
        out = self.session.run(None, {self.input_name: x[None].numpy()})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)
