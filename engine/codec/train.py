"""Training recipe for the melvq codec: render speech, k-means the codebooks, fit the decoder.

    stepforge codec train --out engine/codec/weights/melvq.npz --seed 0

Deterministic for a given config and seed on a given thread count (the recipe pins torch to
``threads``): rerunning it reproduces the shipped weights byte for byte.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from manifests.errors import UserError

from . import corpus, mel, weights
from .quantize import F02, F06, DualCodebook


@dataclass(frozen=True)
class TrainConfig:
    utterances: int = 4000      # eSpeak renderings (~4.4 h of speech)
    seed: int = 0
    vq02_size: int = 1024
    vq06_size: int = 4096
    q: int = 20                 # mel-cepstra per frame that the codebooks quantise
    kmeans_iters: int = 60      # Lloyd iterations (10 -> 60: the round trip loses 5 WER points less)
    first: str = "vq06"         # the stream that quantises the cepstra; the other takes the residual
    decoder_steps: int = 3000
    batch: int = 32             # segments per decoder step
    segment_groups: int = 40    # 4.8 s segments
    channels: int = 256
    emb: int = 32
    dilations: tuple[int, ...] = (1, 1)  # +-3 groups of context; +-9 learned the training sentences
    lr: float = 2e-3
    smooth: float = 1.0         # decode-time smoothing of the log-mel (sigma, frames)
    threads: int = 2


def render_mels(cfg: TrainConfig, progress=None) -> list[np.ndarray]:
    """Log-mels ``[12 * N_i, 80]`` of ``cfg.utterances`` seeded eSpeak renderings."""
    renderings = corpus.training_renderings(cfg.utterances, cfg.seed)
    return corpus.render_all(renderings, workers=cfg.threads, transform=mel.log_mel, progress=progress)


def check_corpus_size(frames: int, cfg: TrainConfig) -> None:
    """UserError naming the flags when ``frames`` rendered frames are too few for k-means to
    fill each codebook (each needs at least as many blocks as it has codes)."""
    for name, size, per_code in (("vq02", cfg.vq02_size, F02), ("vq06", cfg.vq06_size, F06)):
        if frames // per_code < size:
            raise UserError(f"--utterances {cfg.utterances} give {frames // per_code} {name} blocks, fewer than "
                            f"--{name}-size {size}; render more utterances or use a smaller codebook")


def fit_codebook(ceps: np.ndarray, cfg: TrainConfig, progress=None) -> DualCodebook:
    """k-means both codebooks on cepstra ``[frames, q]``; rounded to the float16 that ships."""
    check_corpus_size(len(ceps), cfg)
    report = (lambda name, i, err: progress(name, i + 1, cfg.kmeans_iters, err)) if progress else None
    book = DualCodebook.fit(ceps, (cfg.vq02_size, cfg.vq06_size), cfg.kmeans_iters, cfg.seed, report,
                            first=cfg.first)
    # Quantise the decoder's inputs exactly as the shipped file will.
    return DualCodebook(book.vq02.astype(np.float16).astype(np.float32),
                        book.vq06.astype(np.float16).astype(np.float32), book.first)


def _segments(mels: list[np.ndarray], book: DualCodebook, cfg: TrainConfig):
    """Cut the coded corpus into equal segments: (recon, codes02, codes06, target) tensors."""
    import torch

    target = np.concatenate(mels)
    codes02, codes06 = book.encode(mel.cepstra(target, book.q))
    recon = book.reconstruct(codes02, codes06)
    groups = len(target) // mel.FRAMES_PER_GROUP
    seg = max(1, min(cfg.segment_groups, groups))
    n = groups // seg
    frames = n * seg * mel.FRAMES_PER_GROUP
    return (torch.from_numpy(recon[:frames].reshape(n, seg * 12, -1)),
            torch.from_numpy(codes02[: n * seg * 2].reshape(n, -1)).long(),
            torch.from_numpy(codes06[: n * seg * 3].reshape(n, -1)).long(),
            torch.from_numpy(target[:frames].reshape(n, seg * 12, -1)))


def train_decoder(mels: list[np.ndarray], book: DualCodebook, cfg: TrainConfig, progress=None):
    """Fit the conv decoder (L1 on log-mel, AdamW, one-cycle LR); returns it in eval mode."""
    import torch

    from .decoder import build_decoder

    torch.manual_seed(cfg.seed)
    recon, codes02, codes06, target = _segments(mels, book, cfg)
    net = build_decoder(decoder_config(cfg), book.q, (cfg.vq02_size, cfg.vq06_size))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.decoder_steps, 2),
                                                pct_start=0.05)
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.decoder_steps):
        idx = torch.randint(len(recon), (cfg.batch,), generator=gen)
        loss = (net(recon[idx], codes02[idx], codes06[idx]) - target[idx]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress("decoder", step + 1, cfg.decoder_steps, loss.item())
    return net.eval()


def decoder_config(cfg: TrainConfig) -> dict:
    return {"n_mels": mel.N_MELS, "channels": cfg.channels, "emb": cfg.emb, "dilations": list(cfg.dilations),
            "smooth": cfg.smooth}


def train(cfg: TrainConfig, out, progress=None) -> str:
    """Run the whole recipe and write the weights file to ``out``; returns its short sha256.

    Args:
        progress: optional ``progress(stage, done, total, value=None)`` callback.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        mels = render_mels(cfg, progress)
        book = fit_codebook(mel.cepstra(np.concatenate(mels), cfg.q), cfg, progress)
        net = train_decoder(mels, book, cfg, progress)
    finally:
        torch.set_num_threads(threads)
    tensors = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    config = {"codebook": {"first": book.first}, "decoder": decoder_config(cfg), "train": dataclasses.asdict(cfg)}
    return weights.save(out, {"vq02": book.vq02, "vq06": book.vq06}, tensors, config)
