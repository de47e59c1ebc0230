"""Training metrics: running sums between log lines, and the logs they go to.

    window = MetricWindow()
    window.add(loss_dict, tokens=4096)             # per micro-batch
    log = MetricsLog(Path("STUDENT/logs"), writer=True)
    log.open(cfg)                                  # TensorBoard / W&B when configured and installed
    log.log(step, window.summary(world=1, lr=1e-3, epoch=0))
    log.close()

``logs/metrics.jsonl`` holds one JSON line per logged step and per eval (``{"step": N, ...}``),
printed to stdout as well; TensorBoard (``logs/tb``) and W&B mirror the numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from manifests.atomic import atomic_path

LOSS_KEYS = ("loss", "ce", "kl", "acc_vq02", "acc_vq06")


class MetricWindow:
    """Running sums of the loss dicts (``distill.losses.DistillLoss`` results) between two log
    lines; ``wall`` is added by the caller."""

    def __init__(self):
        self.n = self.tokens = self.loss_tokens = 0
        self.sums: dict[str, float] = {}
        self.wall = 0.0

    def add(self, out: dict, tokens: int) -> None:
        """One micro-batch's loss dict; ``tokens`` the batch's tokens (with padding-free packing,
        all of them)."""
        self.n += 1
        self.tokens += tokens
        self.loss_tokens += int(out["n_tokens"])
        for key in LOSS_KEYS:
            value = out.get(key)
            if torch.is_tensor(value):
                value = value.detach().item()
            if value is not None:
                self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def summary(self, world: int, lr, epoch) -> dict:
        """Means per micro-batch, loss tokens, lr, epoch and tokens/s over ``world`` ranks."""
        s = {k: v / max(1, self.n) for k, v in self.sums.items()}
        s.update(loss_tokens=self.loss_tokens, lr=lr, epoch=epoch)
        s.setdefault("acc_vq02", None), s.setdefault("acc_vq06", None)
        if self.wall:
            s["tokens_per_s"] = round(self.tokens * world / self.wall, 1)
        return s


class MetricsLog:
    """logs/metrics.jsonl plus optional TensorBoard and W&B; a no-op where ``writer`` is False
    (every rank but 0).

    Args:
        folder: STUDENT/logs.
        writer: whether this process writes.
    """

    def __init__(self, folder: Path, writer: bool):
        self.folder, self.writer = Path(folder), writer
        self.path = self.folder / "metrics.jsonl"
        self.tb = self.wandb = None

    def open(self, cfg: dict) -> None:
        """Create the folder; start TensorBoard / W&B as ``cfg["logging"]`` asks."""
        if not self.writer:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if cfg["logging"]["tensorboard"]:
            self.tb = _tensorboard(self.folder / "tb")
        if cfg["logging"]["wandb"]:
            self.wandb = _wandb(cfg, self.folder)

    def log(self, step: int, metrics: dict) -> None:
        """Append ``{"step": step, **metrics}`` (None values left out) and print it."""
        if not self.writer:
            return
        record = {"step": step, **{k: v for k, v in metrics.items() if v is not None}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join(f"{k} {_fmt(v)}" for k, v in record.items()), flush=True)
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(record, step=step)

    def trim(self, step: int) -> None:
        """Drop lines past ``step`` (written after the checkpoint a resume starts from), so the
        curve continues from it."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))

    def last(self) -> dict:
        """Every logged key's latest value (train.json's ``last``)."""
        out: dict = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                out.update(json.loads(line))
        return out

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("tensorboard is not installed (pip install tensorboard): no TensorBoard logs", flush=True)
        return None
    return SummaryWriter(str(folder))


def _wandb(cfg: dict, folder: Path):
    try:
        import wandb
    except ImportError:
        print("wandb is not installed (pip install wandb): not logging to Weights & Biases", flush=True)
        return None
    return wandb.init(project=cfg["logging"]["wandb"], config=cfg, dir=str(folder), resume="allow")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
