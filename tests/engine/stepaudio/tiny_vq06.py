"""A tiny ``speech_tokenizer_v1.onnx`` with the released IO contract, random weights from a seed.

Contract (as the released graph is fed by upstream and its users): inputs ``feats`` float32
``[batch, 128, T]`` and ``feats_length`` int32 ``[batch]``; output ``indices`` int32
``[batch, T']`` with ``T' = ceil(ceil(T / 2) / 2)`` (two stride-2 stages, 25 codes per second),
codes in 0..4095. The network inside is a stand-in: two stride-2 convolutions, a projection onto
4096 codes and an argmax, cut to the length ``feats_length`` implies.

    from tests.engine.stepaudio.tiny_vq06 import write_tiny_vq06_onnx
    write_tiny_vq06_onnx(tmp / "speech_tokenizer_v1.onnx", seed=0)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

N_MELS = 128
CODEBOOK = 4096
CHANNELS = 16


def tiny_vq06_model(seed: int = 0, input_names=("feats", "feats_length"), output_name: str = "indices",
                    n_mels: int = N_MELS) -> onnx.ModelProto:
    """The tiny graph; ``input_names``/``output_name``/``n_mels`` exist to build broken variants."""
    rng = np.random.default_rng(seed)
    feats, lengths = input_names
    w1 = rng.normal(0, 1 / np.sqrt(n_mels * 3), (CHANNELS, n_mels, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, CHANNELS).astype(np.float32)
    w2 = rng.normal(0, 1 / np.sqrt(CHANNELS * 3), (CHANNELS, CHANNELS, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, CHANNELS).astype(np.float32)
    codebook = rng.normal(0, 1, (CHANNELS, CODEBOOK)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w1, "conv1.weight"), (b1, "conv1.bias"), (w2, "conv2.weight"), (b2, "conv2.bias"),
        (codebook, "quantizer.codebook"), (np.array([1], np.int32), "one"),
        (np.array([2], np.int32), "two"), (np.array([0], np.int64), "zero64"),
        (np.array([1], np.int64), "axis1")]]
    conv = dict(kernel_shape=[3], strides=[2], pads=[1, 1])
    nodes = [
        helper.make_node("Conv", [feats, "conv1.weight", "conv1.bias"], ["h1"], **conv),
        helper.make_node("Tanh", ["h1"], ["a1"]),
        helper.make_node("Conv", ["a1", "conv2.weight", "conv2.bias"], ["h2"], **conv),
        helper.make_node("Transpose", ["h2"], ["h2t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["h2t", "quantizer.codebook"], ["logits"]),
        helper.make_node("ArgMax", ["logits"], ["codes64"], axis=2, keepdims=0),
        helper.make_node("Cast", ["codes64"], ["codes"], to=TensorProto.INT32),
        # output length from feats_length: ceil(ceil(L / 2) / 2)
        helper.make_node("Add", [lengths, "one"], ["l1a"]),
        helper.make_node("Div", ["l1a", "two"], ["l1"]),
        helper.make_node("Add", ["l1", "one"], ["l2a"]),
        helper.make_node("Div", ["l2a", "two"], ["l2"]),
        helper.make_node("Cast", ["l2"], ["end"], to=TensorProto.INT64),
        helper.make_node("Slice", ["codes", "zero64", "end", "axis1"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes, "speech_tokenizer_v1_tiny",
        [helper.make_tensor_value_info(feats, TensorProto.FLOAT, ["batch", n_mels, "T"]),
         helper.make_tensor_value_info(lengths, TensorProto.INT32, ["batch"])],
        [helper.make_tensor_value_info(output_name, TensorProto.INT32, ["batch", "T_out"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="stepforge-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_vq06_onnx(path, seed: int = 0, **broken) -> Path:
    """Write the tiny graph to ``path`` (e.g. ``.../Step-Audio-Tokenizer/speech_tokenizer_v1.onnx``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(tiny_vq06_model(seed, **broken), str(path))
    return path
