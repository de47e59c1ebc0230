"""A tiny CosyVoice flow decoder in the released layout: ``cosyvoice.yaml`` + ``flow.pt``.

``cosyvoice.yaml`` follows the structure of CosyVoice-300M's released file (HyperPyYAML tags:
``!new:`` for the flow, its encoder, length regulator, CFM with an ``omegaconf.DictConfig`` of
``cfm_params`` and the estimator, the HiFT generator with its F0 predictor; ``!name:`` for the
feature extractor; ``!ref`` for shared values), with the 25 Hz decoder's values where they are
structural (vocab 5120, 192-d speaker embedding, 80 mels, 320 estimator inputs, euler / cosine /
cfg 0.7, 4 regulator convs) and tiny widths elsewhere. ``flow.pt`` holds every parameter under
upstream's state-dict name; the names and shapes are listed here from the yaml values, independently
of the loader under test, and upstream loads the file with strict keys (goldens/make_flow.py).

    write_tiny_flow(tmp_dir, seed=0)                       # cosyvoice.yaml (+ a tiny hift:) and flow.pt
    write_tiny_flow(tmp_dir, seed=0, hift=section)         # with another hift: section (data form)
"""
from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 5120
INPUT_FRAME_RATE = 41.67
TINY = dict(input_size=16, encoder_size=32, encoder_heads=2, encoder_units=64, encoder_blocks=2,
            channels=[32, 32], head_dim=8, heads=2, n_blocks=1, mid_blocks=2, mel=80, spk=192)
# The released CosyVoice-300M-25Hz sizes (STEP_AUDIO_STACK.md): 105,399,040 parameters, 421.6 MB in
# fp32, as flow.pt's ~422 MB. For benchmarks: write_tiny_flow(dir, sizes=RELEASED) (random weights).
RELEASED = dict(input_size=512, encoder_size=512, encoder_heads=8, encoder_units=2048, encoder_blocks=6,
                channels=[256, 256], head_dim=64, heads=8, n_blocks=4, mid_blocks=12, mel=80, spk=192)
# The hift: section as yaml_config returns it (same tiny widths as tiny_hift.py's).
TINY_HIFT_SECTION = {
    "_class": "cosyvoice.hifigan.generator.HiFTGenerator", "in_channels": 80, "base_channels": 16,
    "nb_harmonics": 8, "sampling_rate": 22050, "nsf_alpha": 0.1, "nsf_sigma": 0.003, "nsf_voiced_threshold": 10,
    "upsample_rates": [8, 8], "upsample_kernel_sizes": [16, 16], "istft_params": {"n_fft": 16, "hop_len": 4},
    "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "source_resblock_kernel_sizes": [7, 11], "source_resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "lrelu_slope": 0.1, "audio_limit": 0.99,
    "f0_predictor": {"_class": "cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor", "num_class": 1,
                     "in_channels": 80, "cond_channels": 16},
}

YAML = """\
# set random seed, so that you may reproduce your result.
__set_seed1: !apply:random.seed [1986]
__set_seed2: !apply:numpy.random.seed [1986]
__set_seed3: !apply:torch.manual_seed [1986]
__set_seed4: !apply:torch.cuda.manual_seed_all [1986]

# fixed params
sample_rate: 22050
text_encoder_input_size: 512
llm_input_size: 1024
llm_output_size: 1024
spk_embed_dim: {spk}

# model params
flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: {input_size}
    output_size: {mel}
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: {vocab}
    input_frame_rate: {rate}
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        output_size: {encoder_size}
        attention_heads: {encoder_heads}
        linear_units: {encoder_units}
        num_blocks: {encoder_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: {input_size}
        use_cnn_module: False
        macaron_style: False
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: {mel}
        sampling_ratios: [1, 1, 1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: {mel}
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: {est_in}
            out_channels: {mel}
            channels: {channels}
            dropout: 0.0
            attention_head_dim: {head_dim}
            n_blocks: {n_blocks}
            num_mid_blocks: {mid_blocks}
            num_heads: {heads}
            act_fn: 'gelu'

{hift}

# processor functions
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1024
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 256
    win_size: 1024
    fmin: 0
    fmax: 8000
    center: False
"""


def section_text(key: str, node, indent: int = 0) -> str:
    """HyperPyYAML text of one node in yaml_config's data form (``_class`` -> ``!new:``;
    ``sampling_rate`` written as ``!ref <sample_rate>`` as the released file does)."""
    pad = " " * indent
    if isinstance(node, dict):
        tag = f" !new:{node['_class']}" if "_class" in node else ""
        body = [section_text(k, v, indent + 4) for k, v in node.items() if k != "_class"]
        return "\n".join([f"{pad}{key}:{tag}"] + body)
    if key == "sampling_rate":
        return f"{pad}{key}: !ref <sample_rate>"
    return f"{pad}{key}: {node}"


def flow_yaml(tiny: dict = TINY, hift: dict | None = None) -> str:
    return YAML.format(**tiny, vocab=VOCAB, rate=INPUT_FRAME_RATE, est_in=4 * tiny["mel"],
                       hift=section_text("hift", hift or TINY_HIFT_SECTION))


def _resnet(p: str, dim: int, out: int, t_dim: int) -> dict:
    return {f"{p}.mlp.1.weight": (out, t_dim), f"{p}.mlp.1.bias": (out,),
            f"{p}.block1.block.0.weight": (out, dim, 3), f"{p}.block1.block.0.bias": (out,),
            f"{p}.block1.block.1.weight": (out,), f"{p}.block1.block.1.bias": (out,),
            f"{p}.block2.block.0.weight": (out, out, 3), f"{p}.block2.block.0.bias": (out,),
            f"{p}.block2.block.1.weight": (out,), f"{p}.block2.block.1.bias": (out,),
            f"{p}.res_conv.weight": (out, dim, 1), f"{p}.res_conv.bias": (out,)}


def _transformer(p: str, dim: int, inner: int) -> dict:
    return {f"{p}.norm1.weight": (dim,), f"{p}.norm1.bias": (dim,),
            f"{p}.attn1.to_q.weight": (inner, dim), f"{p}.attn1.to_k.weight": (inner, dim),
            f"{p}.attn1.to_v.weight": (inner, dim), f"{p}.attn1.to_out.0.weight": (dim, inner),
            f"{p}.attn1.to_out.0.bias": (dim,), f"{p}.norm3.weight": (dim,), f"{p}.norm3.bias": (dim,),
            f"{p}.ff.net.0.proj.weight": (4 * dim, dim), f"{p}.ff.net.0.proj.bias": (4 * dim,),
            f"{p}.ff.net.2.weight": (dim, 4 * dim), f"{p}.ff.net.2.bias": (dim,)}


def _estimator(c: dict, p: str = "decoder.estimator") -> dict:
    ch, inner, t_dim, in_ch = c["channels"], c["heads"] * c["head_dim"], 4 * c["channels"][0], 4 * c["mel"]
    shapes = {f"{p}.time_mlp.linear_1.weight": (t_dim, in_ch), f"{p}.time_mlp.linear_1.bias": (t_dim,),
              f"{p}.time_mlp.linear_2.weight": (t_dim, t_dim), f"{p}.time_mlp.linear_2.bias": (t_dim,)}

    def stage(q: str, dim: int, out: int, end: str | None, kernel: int, transposed: bool = False):
        shapes.update(_resnet(f"{q}.0", dim, out, t_dim))
        for j in range(c["n_blocks"]):
            shapes.update(_transformer(f"{q}.1.{j}", out, inner))
        if end is not None:
            shapes[f"{q}.2{end}.weight"], shapes[f"{q}.2{end}.bias"] = (out, out, kernel), (out,)

    prev = in_ch
    for i, out in enumerate(ch):
        last = i == len(ch) - 1
        stage(f"{p}.down_blocks.{i}", prev, out, "" if last else ".conv", 3)
        prev = out
    for i in range(c["mid_blocks"]):
        stage(f"{p}.mid_blocks.{i}", ch[-1], ch[-1], None, 0)
    ups = ch[::-1] + [ch[0]]
    for i in range(len(ups) - 1):
        last = i == len(ups) - 2
        stage(f"{p}.up_blocks.{i}", 2 * ups[i], ups[i + 1], "" if last else ".conv", 3 if last else 4)
    shapes.update({f"{p}.final_block.block.0.weight": (ups[-1], ups[-1], 3), f"{p}.final_block.block.0.bias": (ups[-1],),
                   f"{p}.final_block.block.1.weight": (ups[-1],), f"{p}.final_block.block.1.bias": (ups[-1],),
                   f"{p}.final_proj.weight": (c["mel"], ups[-1], 1), f"{p}.final_proj.bias": (c["mel"],)})
    return shapes


def flow_shapes(c: dict = TINY) -> dict[str, tuple]:
    """Every ``flow.pt`` key with its shape, as upstream's MaskedDiffWithXvec names them."""
    d, i, mel, units = c["encoder_size"], c["input_size"], c["mel"], c["encoder_units"]
    shapes = {"input_embedding.weight": (VOCAB, i), "spk_embed_affine_layer.weight": (mel, c["spk"]),
              "spk_embed_affine_layer.bias": (mel,), "encoder.embed.out.0.weight": (d, i),
              "encoder.embed.out.0.bias": (d,), "encoder.embed.out.1.weight": (d,), "encoder.embed.out.1.bias": (d,)}
    for b in range(c["encoder_blocks"]):
        p = f"encoder.encoders.{b}"
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            shapes[f"{p}.self_attn.{name}.weight"], shapes[f"{p}.self_attn.{name}.bias"] = (d, d), (d,)
        shapes[f"{p}.self_attn.linear_pos.weight"] = (d, d)
        shapes[f"{p}.self_attn.pos_bias_u"] = shapes[f"{p}.self_attn.pos_bias_v"] = (c["encoder_heads"], d // c["encoder_heads"])
        shapes.update({f"{p}.feed_forward.w_1.weight": (units, d), f"{p}.feed_forward.w_1.bias": (units,),
                       f"{p}.feed_forward.w_2.weight": (d, units), f"{p}.feed_forward.w_2.bias": (d,),
                       f"{p}.norm_ff.weight": (d,), f"{p}.norm_ff.bias": (d,),
                       f"{p}.norm_mha.weight": (d,), f"{p}.norm_mha.bias": (d,)})
    shapes.update({"encoder.after_norm.weight": (d,), "encoder.after_norm.bias": (d,),
                   "encoder_proj.weight": (mel, d), "encoder_proj.bias": (mel,)})
    for k in range(4):
        shapes.update({f"length_regulator.model.{3 * k}.weight": (mel, mel, 3), f"length_regulator.model.{3 * k}.bias": (mel,),
                       f"length_regulator.model.{3 * k + 1}.weight": (mel,), f"length_regulator.model.{3 * k + 1}.bias": (mel,)})
    shapes.update({"length_regulator.model.12.weight": (mel, mel, 1), "length_regulator.model.12.bias": (mel,)})
    shapes.update(_estimator(c))
    return shapes


def tiny_flow_state(c: dict = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights from ``seed``: 1/sqrt(fan-in) filters, norms near identity, small biases."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in flow_shapes(c).items():
        norm = any(f".{k}." in name for k in ("norm1", "norm3", "norm_ff", "norm_mha", "after_norm", "out.1", "block.1")) \
            or (name.startswith("length_regulator") and int(name.split(".")[2]) % 3 == 1)
        if norm and name.endswith("weight"):
            state[name] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("bias") or "pos_bias" in name:
            state[name] = 0.1 * torch.randn(shape, generator=g)
        elif name == "input_embedding.weight":
            state[name] = torch.randn(shape, generator=g)
        else:
            if len(shape) == 3 and ".up_blocks." in name and name.endswith(".2.conv.weight"):
                fan_in = shape[0] * shape[2] // 2  # ConvTranspose1d [in, out, k], stride 2
            else:
                fan_in = shape[1] * (shape[2] if len(shape) == 3 else 1)
            state[name] = torch.randn(shape, generator=g) / fan_in ** 0.5
    return state


def write_tiny_flow(cosyvoice_dir: str | Path, seed: int = 0, hift: dict | None = None,
                    sizes: dict = TINY) -> Path:
    """Write ``cosyvoice.yaml`` (with ``hift`` as its ``hift:`` section, data form, default the
    tiny one above) and a seeded ``flow.pt`` of ``sizes`` into ``cosyvoice_dir``; returns the dir."""
    root = Path(cosyvoice_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "cosyvoice.yaml").write_text(flow_yaml(sizes, hift), encoding="utf-8")
    torch.save(tiny_flow_state(sizes, seed), root / "flow.pt")
    return root
