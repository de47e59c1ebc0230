"""A tiny ``campplus.onnx`` with the released IO contract, built with the ``onnx`` helper API.

Contract (as upstream's frontend calls it: the first input, the first output): input ``input``
float32 ``[batch, frames, 80]`` (mean-removed Kaldi fbank of the 16 kHz prompt; batch and frames
dynamic), output ``output`` float32 ``[batch, 192]``. Inside, a small nonlinear net over the
frames: ``mean_t(relu(x W1 + b1)) ++ max_t(tanh(x W2)) -> W3 + b3``, seeded.

    write_tiny_campplus(cosyvoice_dir / "campplus.onnx", seed=0)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FBANK_BINS = 80
EMBED_DIM = 192
HIDDEN = 24


def tiny_campplus(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.3, (FBANK_BINS, HIDDEN)).astype(np.float32)
    b1 = rng.normal(0, 0.1, HIDDEN).astype(np.float32)
    w2 = rng.normal(0, 0.3, (FBANK_BINS, HIDDEN)).astype(np.float32)
    w3 = rng.normal(0, 0.5, (2 * HIDDEN, EMBED_DIM)).astype(np.float32)
    b3 = rng.normal(0, 0.1, EMBED_DIM).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"), (b3, "b3"))]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["r1"]),
        helper.make_node("ReduceMean", ["r1"], ["m1"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["input", "w2"], ["h2"]),
        helper.make_node("Tanh", ["h2"], ["t2"]),
        helper.make_node("ReduceMax", ["t2"], ["m2"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["m1", "m2"], ["pooled"], axis=1),
        helper.make_node("MatMul", ["pooled", "w3"], ["e"]),
        helper.make_node("Add", ["e", "b3"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "campplus_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "frames", FBANK_BINS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", EMBED_DIM])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="stepforge-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_campplus(path: str | Path, seed: int = 0) -> Path:
    """Write the tiny CAM++ graph to ``path`` (e.g. ``DECODER_DIR/campplus.onnx``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_campplus(seed), str(path))
    return path
