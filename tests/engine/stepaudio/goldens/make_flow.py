"""Make the flow-decoder goldens by running UPSTREAM Step-Audio cosyvoice code (never committed here).

What it runs (github:stepfun-ai/Step-Audio at a52b94d85d418cd5bc736d696d310c990befbc79, its
``cosyvoice/`` tree): ``MaskedDiffWithXvec`` built from the tiny ``cosyvoice.yaml`` of
``tests/engine/stepaudio/tiny_flow.py`` (seed 0) -- ``ConformerEncoder``, ``InterpolateRegulator``,
``ConditionalCFM`` with ``cfm_params`` as an ``omegaconf.DictConfig`` and ``ConditionalDecoder``,
instantiated directly with the yaml's kwargs (read with engine.stepaudio.yaml_config, so no
hyperpyyaml) -- and ``load_state_dict(torch.load("flow.pt"), strict=True)``, which checks every
key name and shape of the tiny ``flow.pt``.

fp32: upstream casts the estimator's first ResNet input to bf16 (``x.to(torch.bfloat16)`` in
``ConditionalDecoder.forward``'s down loop, for its bf16 GPU run). The script loads
``cosyvoice/flow/decoder.py`` with those three ``torch.bfloat16`` casts replaced by the input's own
dtype (asserted to be exactly three) and nothing else changed, so all goldens but ``mel_bf16`` are fp32.

Noise: upstream draws ``z = torch.randn_like(mu)``; the script replaces ``torch.randn_like`` during
the call with the documented stepforge noise, ``torch.randn((1, 80, frames),
generator=torch.Generator().manual_seed(seed))`` (float32), so both sides integrate the same z.

Goldens (goldens/flow/*.npy, float32 unless noted): inputs ``token`` / ``prompt_token`` (int64),
``prompt_feat`` [31, 80], ``embedding`` [192]; ``encoded`` [1, 38, 80] (encoder + encoder_proj);
``regulated`` [1, 82, 80] (length regulator on ``encoded``); ``spks`` [1, 80]; the estimator's single
call on random ``est_x``, ``est_mu``, ``est_cond`` [2, 80, 37], ``est_mask`` [2, 1, 37], ``est_t`` [2],
``est_spks`` [2, 80] -> ``est_out``; ``solved`` [1, 80, 82] (ConditionalCFM.forward, 10 steps, on
``regulated``, ``spks`` and the prompt cond, seed 0); ``mel`` [80, 51] (flow.inference, seed 0) and
``mel_noprompt`` [80, 51] (no prompt tokens or mel, seed 1); ``mel_bf16`` [80, 51]: upstream as
released (unpatched decoder.py, the flow cast to bf16, bf16 prompt mel and embedding as tts.py
passes them; seed 0), for the bf16 path (tolerance 1e-2).

Run (from the repository root; upstream checkout and deps outside the repository):

    mkdir -p /root/upstream_c/Step-Audio
    git --git-dir=$(fetch github:stepfun-ai/Step-Audio) archive HEAD cosyvoice \\
        | tar -x -C /root/upstream_c/Step-Audio
    .venv/bin/pip install --target /root/upstream_c/site --no-deps diffusers==0.30.3 omegaconf==2.3.0 \\
        antlr4-python3-runtime==4.9.3 conformer==0.3.2
    PYTHONPATH=/root/upstream_c/site .venv/bin/python tests/engine/stepaudio/goldens/make_flow.py \\
        --upstream /root/upstream_c/Step-Audio
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
OUT = HERE / "flow"


def noise(frames: int, seed: int) -> torch.Tensor:
    return torch.randn((1, 80, frames), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def load_decoder(upstream: Path, name: str, fp32: bool):
    """Load upstream's cosyvoice/flow/decoder.py as module ``name``; with ``fp32`` its three bf16
    casts are made dtype-preserving (nothing else changes)."""
    path = upstream / "cosyvoice" / "flow" / "decoder.py"
    text = path.read_text()
    assert text.count("torch.bfloat16") == 3, "upstream decoder.py changed: review the fp32 patch"
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    sys.modules[name] = module
    exec(compile(text.replace("torch.bfloat16", "x.dtype") if fp32 else text, str(path), "exec"),  # noqa: S102
         module.__dict__)
    return module


def kwargs(node: dict) -> dict:
    return {k: v for k, v in node.items() if not k.startswith("_")}


def build(upstream: Path, cosyvoice_dir: Path, fp32: bool = True):
    """Upstream's flow on the tiny checkpoint: fp32 (bf16 casts neutralised) or as released
    (``fp32=False``: the unpatched decoder, the model cast to bf16 as CosyVoice.__init__ does)."""
    if str(upstream) not in sys.path:
        sys.path.insert(0, str(upstream))
    ConditionalDecoder = load_decoder(upstream, "cosyvoice.flow.decoder" if fp32 else "upstream_decoder_bf16",
                                      fp32).ConditionalDecoder
    from omegaconf import DictConfig

    from cosyvoice.flow.flow import MaskedDiffWithXvec
    from cosyvoice.flow.flow_matching import ConditionalCFM
    from cosyvoice.flow.length_regulator import InterpolateRegulator
    from cosyvoice.transformer.encoder import ConformerEncoder
    from engine.stepaudio.yaml_config import read_hyperpyyaml

    flow = read_hyperpyyaml(cosyvoice_dir / "cosyvoice.yaml")["flow"]
    cfm = flow["decoder"]
    decoder = ConditionalCFM(cfm["in_channels"], DictConfig(cfm["cfm_params"]["content"]), cfm["n_spks"],
                             cfm["spk_emb_dim"], estimator=ConditionalDecoder(**kwargs(cfm["estimator"])))
    model = MaskedDiffWithXvec(**{k: v for k, v in kwargs(flow).items()
                                  if k not in ("encoder", "length_regulator", "decoder")},
                               encoder=ConformerEncoder(**kwargs(flow["encoder"])),
                               length_regulator=InterpolateRegulator(**kwargs(flow["length_regulator"])),
                               decoder=decoder)
    model.load_state_dict(torch.load(cosyvoice_dir / "flow.pt", map_location="cpu", weights_only=True), strict=True)
    return model.eval() if fp32 else model.to(torch.bfloat16).eval()


def with_noise(fn, z: torch.Tensor):
    real = torch.randn_like

    def fixed(like, *args, **kw):
        assert like.shape == z.shape, (like.shape, z.shape)
        return z.to(like.dtype).clone()

    torch.randn_like = fixed
    try:
        return fn()
    finally:
        torch.randn_like = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="dir holding upstream's cosyvoice/")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tests.engine.stepaudio.tiny_flow import write_tiny_flow

    OUT.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build(args.upstream, write_tiny_flow(Path(tmp), seed=0))
        model_bf16 = build(args.upstream, Path(tmp), fp32=False)
    rng = np.random.default_rng(0)
    out["token"], out["prompt_token"] = rng.integers(0, 5120, 25), rng.integers(0, 5120, 13)
    out["prompt_feat"] = (rng.normal(size=(31, 80)) * 2 - 5).astype(np.float32)
    out["embedding"] = rng.normal(size=192).astype(np.float32)
    token, prompt = torch.from_numpy(out["token"])[None], torch.from_numpy(out["prompt_token"])[None]
    feat, emb = torch.from_numpy(out["prompt_feat"])[None], torch.from_numpy(out["embedding"])[None]
    with torch.inference_mode():
        ids = torch.cat([prompt, token], dim=1)
        h, _ = model.encoder.inference(model.input_embedding(ids), torch.tensor([ids.shape[1]]))
        h = model.encoder_proj(h)
        n_target = int(25 / model.input_frame_rate * 22050 / 256)
        reg, _ = model.length_regulator.inference(h[:, :13], h[:, 13:], 31, n_target)
        spks = model.spk_embed_affine_layer(torch.nn.functional.normalize(emb, dim=1))
        out.update(encoded=h.numpy(), regulated=reg.numpy(), spks=spks.numpy())

        est = {"x": rng.normal(size=(2, 80, 37)), "mu": rng.normal(size=(2, 80, 37)),
               "cond": rng.normal(size=(2, 80, 37)), "spks": rng.normal(size=(2, 80)), "t": np.array([0.3, 0.85])}
        est = {k: torch.from_numpy(v.astype(np.float32)) for k, v in est.items()}
        mask = torch.ones(2, 1, 37)
        out["est_out"] = model.decoder.estimator(est["x"], mask, est["mu"], est["t"], est["spks"], est["cond"]).numpy()
        out.update({f"est_{k}": v.numpy() for k, v in est.items()}, est_mask=mask.numpy())

        total = 31 + n_target
        cond = torch.zeros(1, total, 80)
        cond[:, :31] = feat
        solved = with_noise(lambda: model.decoder(mu=reg.transpose(1, 2).contiguous(), mask=torch.ones(1, 1, total),
                                                  spks=spks, cond=cond.transpose(1, 2), n_timesteps=10), noise(total, 0))
        out["solved"] = solved.numpy()

        def infer(p_tok, p_feat):
            return model.inference(token=token, token_len=torch.tensor([25]), prompt_token=p_tok,
                                   prompt_token_len=torch.tensor([p_tok.shape[1]]), prompt_feat=p_feat,
                                   prompt_feat_len=torch.tensor([p_feat.shape[1]]), embedding=emb)

        out["mel"] = with_noise(lambda: infer(prompt, feat), noise(total, 0))[0].numpy()
        out["mel_noprompt"] = with_noise(lambda: infer(prompt[:, :0], feat[:, :0]), noise(n_target, 1))[0].numpy()
        # as released: bf16 model, bf16 prompt mel and embedding (tts.py casts both)
        out["mel_bf16"] = with_noise(lambda: model_bf16.inference(
            token=token, token_len=torch.tensor([25]), prompt_token=prompt, prompt_token_len=torch.tensor([13]),
            prompt_feat=feat.to(torch.bfloat16), prompt_feat_len=torch.tensor([31]),
            embedding=emb.to(torch.bfloat16)), noise(total, 0))[0].float().numpy()
    for name, value in out.items():
        value = value.astype(np.int64) if value.dtype.kind == "i" else value.astype(np.float32)
        np.save(OUT / f"{name}.npy", value)
    total_bytes = sum(p.stat().st_size for p in OUT.glob("*.npy"))
    print(f"wrote {len(out)} goldens to {OUT} ({total_bytes / 1024:.0f} KiB); mel {out['mel'].shape}")


if __name__ == "__main__":
    main()
