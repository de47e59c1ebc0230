"""A tiny random Step-Audio-Tokenizer (vq02 side) in exactly the released layout.

    write_tiny_tokenizer_vq02(root)  ->  root/Step-Audio-Tokenizer/linguistic_tokenizer.npy
        root/Step-Audio-Tokenizer/dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-
        16k-vocab8501-online/{config.yaml, configuration.json, model.pt, am.mvn, tokens.json,
        seg_dict}

config.yaml has the released structure (ParaformerStreaming, SANMEncoderChunkOpt with
``pe_online``, ParaformerSANMDecoder, CifPredictorV2, WavFrontendOnline with LFR 7/6 on 80 mels)
with tiny encoder/decoder sizes; model.pt is a plain state dict with FunASR's key names for the
encoder, the decoder and the predictor (the ASR head our loader ignores but the release holds).
The same seed always writes the same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

PARAFORMER_DIR = ("dengcunqin/"
                  "speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online")
TINY = {"output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 3,
        "decoder_blocks": 2, "codes": 24, "tokens": ["<blank>", "<s>", "</s>", "你", "好", "a",
                                                     "b", "@@", "<unk>"]}


def config(output_size: int, heads: int, units: int, blocks: int, dec_blocks: int) -> dict:
    """The released config.yaml's structure with the given sizes."""
    return {
        "model": "ParaformerStreaming",
        "model_conf": {"ctc_weight": 0.0, "lsm_weight": 0.1, "length_normalized_loss": True,
                       "predictor_weight": 1.0, "predictor_bias": 1, "sampling_ratio": 0.75},
        "encoder": "SANMEncoderChunkOpt",
        "encoder_conf": {"output_size": output_size, "attention_heads": heads,
                         "linear_units": units, "num_blocks": blocks, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "attention_dropout_rate": 0.1,
                         "input_layer": "pe_online", "pos_enc_class": "SinusoidalPositionEncoder",
                         "normalize_before": True, "kernel_size": 11, "sanm_shfit": 0,
                         "selfattention_layer_type": "sanm", "chunk_size": [12, 15],
                         "stride": [8, 10], "pad_left": [0, 0],
                         "encoder_att_look_back_factor": [4, 4],
                         "decoder_att_look_back_factor": [1, 1]},
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {"attention_heads": heads, "linear_units": units,
                         "num_blocks": dec_blocks, "dropout_rate": 0.1,
                         "positional_dropout_rate": 0.1, "self_attention_dropout_rate": 0.1,
                         "src_attention_dropout_rate": 0.1, "att_layer_num": dec_blocks,
                         "kernel_size": 11, "sanm_shfit": 5},
        "predictor": "CifPredictorV2",
        "predictor_conf": {"idim": output_size, "threshold": 1.0, "l_order": 1, "r_order": 1,
                           "tail_threshold": 0.45},
        "frontend": "WavFrontendOnline",
        "frontend_conf": {"fs": 16000, "window": "hamming", "n_mels": 80, "frame_length": 25,
                          "frame_shift": 10, "lfr_m": 7, "lfr_n": 6},
        "specaug": "SpecAugLFR",
        "specaug_conf": {"apply_time_warp": False, "time_warp_window": 5,
                         "time_warp_mode": "bicubic", "apply_freq_mask": True,
                         "freq_mask_width_range": [0, 30], "lfr_rate": 6, "num_freq_mask": 1,
                         "apply_time_mask": True, "time_mask_width_range": [0, 12],
                         "num_time_mask": 1},
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": "<unk>", "split_with_space": True},
        "ctc_conf": {"dropout_rate": 0.0, "ctc_type": "builtin", "reduce": True,
                     "ignore_nan_grad": True},
        "normalize": None,
    }


def encoder_shapes(input_size: int, d: int, units: int, blocks: int, kernel: int = 11) -> dict:
    """FunASR's SANMEncoderChunkOpt state-dict keys and shapes."""
    shapes = {}
    for prefix, size_in in [("encoders0.0", input_size)] + [(f"encoders.{i}", d)
                                                            for i in range(blocks - 1)]:
        p = f"encoder.{prefix}."
        shapes.update({
            p + "self_attn.linear_out.weight": (d, d), p + "self_attn.linear_out.bias": (d,),
            p + "self_attn.linear_q_k_v.weight": (3 * d, size_in),
            p + "self_attn.linear_q_k_v.bias": (3 * d,),
            p + "self_attn.fsmn_block.weight": (d, 1, kernel),
            p + "feed_forward.w_1.weight": (units, d), p + "feed_forward.w_1.bias": (units,),
            p + "feed_forward.w_2.weight": (d, units), p + "feed_forward.w_2.bias": (d,),
            p + "norm1.weight": (size_in,), p + "norm1.bias": (size_in,),
            p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
    shapes.update({"encoder.after_norm.weight": (d,), "encoder.after_norm.bias": (d,)})
    return shapes


def head_shapes(d: int, units: int, blocks: int, vocab: int, kernel: int = 11) -> dict:
    """The decoder (ParaformerSANMDecoder) and predictor (CifPredictorV2) keys and shapes."""
    shapes = {"decoder.embed.0.weight": (vocab, d), "decoder.after_norm.weight": (d,),
              "decoder.after_norm.bias": (d,), "decoder.output_layer.weight": (vocab, d),
              "decoder.output_layer.bias": (vocab,)}
    for i in range(blocks):
        p = f"decoder.decoders.{i}."
        shapes.update({
            p + "self_attn.fsmn_block.weight": (d, 1, kernel),
            p + "src_attn.linear_q.weight": (d, d), p + "src_attn.linear_q.bias": (d,),
            p + "src_attn.linear_k_v.weight": (2 * d, d), p + "src_attn.linear_k_v.bias": (2 * d,),
            p + "src_attn.linear_out.weight": (d, d), p + "src_attn.linear_out.bias": (d,),
            p + "feed_forward.w_1.weight": (units, d), p + "feed_forward.w_1.bias": (units,),
            p + "feed_forward.w_2.weight": (d, units), p + "feed_forward.norm.weight": (units,),
            p + "feed_forward.norm.bias": (units,),
            p + "norm1.weight": (d,), p + "norm1.bias": (d,), p + "norm2.weight": (d,),
            p + "norm2.bias": (d,), p + "norm3.weight": (d,), p + "norm3.bias": (d,)})
    p = "decoder.decoders3.0."
    shapes.update({p + "feed_forward.w_1.weight": (units, d), p + "feed_forward.w_1.bias": (units,),
                   p + "feed_forward.w_2.weight": (d, units),
                   p + "feed_forward.norm.weight": (units,), p + "feed_forward.norm.bias": (units,),
                   p + "norm1.weight": (d,), p + "norm1.bias": (d,)})
    shapes.update({"predictor.cif_conv1d.weight": (d, d, 3), "predictor.cif_conv1d.bias": (d,),
                   "predictor.cif_output.weight": (1, d), "predictor.cif_output.bias": (1,)})
    return shapes


def random_state(shapes: dict, gen: torch.Generator) -> dict:
    """Weights that keep activations O(1): fan-in scaled matrices, norms near 1."""
    state = {}
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=gen)
        elif "norm" in name:
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            t = torch.randn(shape, generator=gen) / fan_in ** 0.5
        state[name] = t.contiguous()
    return state


def am_mvn(shift: np.ndarray, scale: np.ndarray) -> str:
    """A Kaldi nnet1 text file of <AddShift> and <Rescale> as FunASR releases am.mvn."""
    dim = len(shift)

    def vec(v):
        return " ".join(f"{x:.6f}" for x in v)
    return (f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {vec(shift)} ]\n<Rescale> {dim} {dim}\n"
            f"<LearnRateCoef> 0 [ {vec(scale)} ]\n</Nnet>\n")


def write_tiny_tokenizer_vq02(root, seed: int = 0, **sizes) -> Path:
    """Write ``root/Step-Audio-Tokenizer`` (vq02 files only) and return that directory.

    ``sizes`` overrides TINY's output_size, attention_heads, linear_units, num_blocks,
    decoder_blocks, codes."""
    s = {**TINY, **sizes}
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok = Path(root) / "Step-Audio-Tokenizer"
    pdir = tok / PARAFORMER_DIR
    pdir.mkdir(parents=True, exist_ok=True)
    d, units = s["output_size"], s["linear_units"]
    cfg = config(d, s["attention_heads"], units, s["num_blocks"], s["decoder_blocks"])
    (pdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    (pdir / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "auto-speech-recognition", "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"}, "model_name_in_hub": {"ms": "", "hf": ""},
        "file_path_metas": {"init_param": "model.pt", "config": "config.yaml",
                            "tokenizer_conf": {"token_list": "tokens.json", "seg_dict": "seg_dict"},
                            "frontend_conf": {"cmvn_file": "am.mvn"}}}, indent=4), encoding="utf-8")
    tokens = s["tokens"]
    (pdir / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False), encoding="utf-8")
    (pdir / "seg_dict").write_text("你好 你 好\nab a@@ b\n", encoding="utf-8")
    input_size = 80 * 7
    shift = -rng.uniform(8.0, 14.0, input_size)
    scale = rng.uniform(0.15, 0.35, input_size)
    (pdir / "am.mvn").write_text(am_mvn(shift, scale), encoding="utf-8")
    shapes = encoder_shapes(input_size, d, units, s["num_blocks"])
    shapes.update(head_shapes(d, units, s["decoder_blocks"], len(tokens)))
    torch.save(random_state(shapes, gen), pdir / "model.pt")
    centroids = rng.normal(0.0, 1.0, (s["codes"], d)).astype(np.float32)
    np.save(tok / "linguistic_tokenizer.npy", centroids)
    return tok
