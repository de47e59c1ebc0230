"""The distillation recipe: filtered shards -> a Step-Audio-TTS-style student, with DeepSpeed.

What ``stepforge distill RUN --out STUDENT`` launches (it writes STUDENT/distill.yaml first):

    DS_ACCELERATOR=cpu deepspeed --num_gpus 1 --module distill.recipe --config STUDENT/distill.yaml

One file, four steps: ``setup`` (process group, student, data, loss, DeepSpeed engine, resume from
the latest checkpoint), ``train`` (packed micro-batches, periodic eval on held-out rows),
``save_checkpoint`` (DeepSpeed state with optimizer and data cursor) and ``cleanup`` (export the HF
dir that the LM engine loads, train.json). Across nodes the same recipe runs inside Ray Train
workers (:func:`ray_train_loop`). The checks that refuse bad input before training live in
:mod:`distill.preflight`, the exports in :mod:`distill.exporter`, the state and checkpoint layout in
:mod:`distill.checkpoints`, the logs in :mod:`distill.metrics`.

STUDENT/ after a run: config.json + model.safetensors (+ remote code), checkpoints/step-NNNNNNN/,
checkpoints/latest, checkpoints/best-NNNNNNN/ (with ``train.export: best``), logs/metrics.jsonl
(one line per logged step and per eval), logs/tb/ (TensorBoard), train.json, heldout.jsonl
(prompts for the student eval), distill.yaml (the resolved config).
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from distill.checkpoints import CheckpointDir, TrainState
from distill.config import load_resolved, model_fingerprint
from distill.data import DataError, PackPlan
from distill.exporter import BestTracker, StudentExporter
from distill.losses import DistillLoss
from distill.metrics import MetricsLog, MetricWindow
from distill.preflight import build_data, check_checkpoint, student_text
from engine.models import build_student as fresh_student, load_student
from manifests.atomic import write_json


SHM_DIR = Path("/dev/shm")


def release_shm_buffer(rank: int, world: int) -> None:
    """Remove the name of this rank's DeepSpeed CPU all-reduce buffer from /dev/shm.

    DeepSpeed's CPU communicator (ops/csrc/cpu/comm/shm.cpp) makes one 69 MB shared-memory file
    per rank, ``deepspeed_allreduce_buffer_{uid}_{MASTER_ADDR}_{MASTER_PORT}_{rank}``, and never
    removes it: every CPU run left one behind, in memory, until reboot (129 of them, 8.4 GB, had
    piled up on a development machine). ``init_distributed`` returns once this rank has mapped
    every peer's buffer; after a barrier all ranks have, so the names can go. The memory stays
    mapped while the ranks run and returns to the system when they end, by kill -9 included.
    """
    if world > 1:
        torch.distributed.barrier()
    name = "_".join(["deepspeed_allreduce_buffer", str(os.getuid()), os.environ.get("MASTER_ADDR", ""),
                     os.environ.get("MASTER_PORT", ""), str(rank)])
    (SHM_DIR / name).unlink(missing_ok=True)


class DistillRecipe:
    """One rank's share of a distillation run: ``setup()``, ``train()``, ``cleanup()``.

    Args:
        cfg: a validated config (:func:`distill.config.load_config`).
        runs: the run dirs whose accepted rows it trains on.
        out: STUDENT, where checkpoints, logs and the exported student go.
    """

    def __init__(self, cfg: dict, runs: list[str], out: str | Path):
        self.cfg, self.runs, self.out = cfg, [str(r) for r in runs], Path(out)
        self.state = TrainState()
        self.checkpoints = CheckpointDir(self.out / "checkpoints")
        self.best = BestTracker(self.checkpoints.root, self.state, cfg["train"]["export"] == "best")

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Process group, student, data, loss, optimizer, DeepSpeed engine; then resume from
        checkpoints/latest (if any) and open the logs."""
        import deepspeed

        deepspeed.init_distributed(dist_backend=None, verbose=False)
        self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        release_shm_buffer(self.rank, self.world)
        self.on_gpu = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if self.on_gpu else "cpu")
        torch.manual_seed(self.cfg["train"]["seed"])
        student = build_student(self.cfg)
        student.model.set_dropout(self.cfg["train"]["dropout"])
        self._setup_data(student)
        loss_fn = DistillLoss(self.layout, eot_id=self.tokenizer.eot, kd_ratio=self.cfg["loss"]["kd_ratio"],
                              restricted=self.cfg["loss"]["restricted_head"])
        module = DistillModule(student, loss_fn)
        optim, self.scheduler = build_optimizer(module, self.cfg)
        self.engine, _, _, _ = deepspeed.initialize(
            model=module, optimizer=optim, lr_scheduler=self.scheduler,
            config=ds_config(self.cfg, self.world, self.on_gpu))
        self.exporter = StudentExporter(self.engine.module.student, self.cfg["train"]["zero_stage"], self.rank)
        self.metrics = MetricsLog(self.out / "logs", writer=self.rank == 0)
        self._resume()
        self.metrics.open(self.cfg)

    def _setup_data(self, student: nn.Module) -> None:
        self.tokenizer, self.layout = student_text(student.config, self.cfg["student"]["init"])
        self.train_rows, self.heldout, self.plan = build_data(self.cfg, self.runs, self.tokenizer,
                                                              self.layout, self.world)
        d = self.cfg["data"]
        self.eval_plan = (PackPlan(self.heldout, d["max_tokens"], 0, share_prefix=d["share_prefix"])
                          if len(self.heldout) else None)

    def _resume(self) -> None:
        """Continue from the latest checkpoint (its student must be this config's); the metrics
        log and the best-* dirs go back to what that checkpoint recorded."""
        tag = self.checkpoints.latest()
        if tag is None:
            if self.rank == 0:  # killed before its first checkpoint: the log starts over with the steps
                self.metrics.trim(0)
                self.best.drop_unrecorded()
            return
        check_checkpoint(self.checkpoints.root / tag, self.cfg)
        _, client = self.engine.load_checkpoint(str(self.checkpoints.root), tag)
        self.state.restore(client["state"])
        if self.rank == 0:
            self.metrics.trim(self.state.step)
            self.best.drop_unrecorded()
            print(f"resumed from {tag}: step {self.state.step}, epoch {self.state.epoch}, "
                  f"pack {self.state.pack}", flush=True)

    # -- train ---------------------------------------------------------------------------------
    def train(self) -> None:
        """Optimizer steps up to ``train.steps``; logs, held-out evals (each new best exported)
        and checkpoints on their schedules, and all three at the last step."""
        t = self.cfg["train"]
        batches = self._micro_batches()
        window = MetricWindow()
        while self.state.step < t["steps"]:
            self._optimizer_step(batches, window)
            step = self.state.step
            last = step == t["steps"]
            if step % t["log_every"] == 0 or last:
                lr = self.scheduler.get_last_lr()[0]
                self.metrics.log(step, window.summary(self.world, lr, self.state.epoch))
                window = MetricWindow()
            if self.eval_plan is not None and (step % t["eval_every"] == 0 or last):
                metrics = self.evaluate()
                self.metrics.log(step, metrics)
                if self.best.is_new_best(metrics["eval_loss"]):
                    self.exporter.export(self.best.record(metrics["eval_loss"]))
            if step % t["save_every"] == 0 or last:
                self.save_checkpoint()

    def _optimizer_step(self, batches, window: MetricWindow) -> None:
        """``train.grad_accum`` micro-batches, forward and backward; DeepSpeed steps the optimizer
        at the last one."""
        start = time.perf_counter()
        for _ in range(self.cfg["train"]["grad_accum"]):
            batch = self._to_device(next(batches))
            out = self.engine(batch)
            self.engine.backward(out["loss"])
            self.engine.step()
            window.add(out, int(batch["input_ids"].numel()))
        self.state.step += 1
        wall = time.perf_counter() - start
        self.state.wall_s += wall
        window.wall += wall

    def _micro_batches(self):
        """Packed batches from the saved cursor on, across epochs; advances the cursor."""
        while True:
            for batch in self.plan.batches(self.state.epoch, self.rank, self.world, self.state.pack):
                self.state.pack += 1
                yield batch
            self.state.epoch += 1
            self.state.pack = 0

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss and token accuracy per stream on the held-out rows."""
        self.engine.eval()
        window = MetricWindow()
        for batch in self.eval_plan.batches(0):
            out = self.engine(self._to_device(batch))
            window.add(out, int(batch["input_ids"].numel()))
        self.engine.train()
        s = window.summary(1, None, None)
        return {"eval_loss": s["loss"], "eval_acc_vq02": s["acc_vq02"], "eval_acc_vq06": s["acc_vq06"],
                "eval_tokens": s["loss_tokens"]}

    # -- save_checkpoint -----------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """DeepSpeed state (weights, optimizer, scheduler) plus the :class:`TrainState` (data
        cursor, best step); ``latest`` moves only when every file is written, so a kill mid-save
        resumes from the one before. Then best-* dirs the state no longer names go."""
        tag = self.checkpoints.tag(self.state.step)
        if self.rank == 0:
            self.checkpoints.clear(tag)
        torch.distributed.barrier()
        self.engine.save_checkpoint(str(self.checkpoints.root), tag,
                                    client_state={"state": self.state.as_dict()}, save_latest=False)
        torch.distributed.barrier()
        if self.rank == 0:
            stamp = {"step": self.state.step, "student": self.cfg["student"],
                     "fingerprint": model_fingerprint(self.cfg), "runs": self.runs}
            self.checkpoints.commit(tag, stamp, keep=self.cfg["train"]["keep_checkpoints"])
            self.best.drop_unrecorded()
        torch.distributed.barrier()

    # -- cleanup -------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Export STUDENT (:meth:`StudentExporter.export_final`: the best held-out step's weights
        with ``train.export: best``, else the last step's), write train.json, close the logs and
        the process group."""
        exported = self.exporter.export_final(self.out, self.state, self.best)
        if self.rank == 0:
            print(f"exported the step-{exported['step']} student ({exported['rule']})", flush=True)
            write_json(self.out / "train.json", self._summary(exported))
            self.metrics.close()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()

    def _summary(self, exported: dict) -> dict:
        """train.json: what was trained, on what, and which step STUDENT holds."""
        return {
            "status": "done", "step": self.state.step, "epochs": self.state.epoch,
            "wall_s": round(self.state.wall_s, 2), "world": self.world,
            "fingerprint": model_fingerprint(self.cfg), "runs": self.runs, "init": self.cfg["student"]["init"],
            "train_rows": len(self.train_rows), "heldout_rows": len(self.heldout),
            "codec": self.train_rows.codec_version,
            "parameters": sum(p.numel() for p in self.engine.module.student.parameters()),
            "exported": exported,
            "last": self.metrics.last()}


# -- the pieces setup assembles ------------------------------------------------------------------

class TrainingHead(nn.Linear):
    """``lm_head`` that can also return the distillation loss, so that under ZeRO-3 its weight is
    gathered by its own forward hook and the loss never needs full-vocabulary logits."""

    def forward(self, x: torch.Tensor, batch: dict | None = None, loss_fn=None):
        if batch is None:
            return super().forward(x)
        return loss_fn(x, self.weight, batch)


class DistillModule(nn.Module):
    """The student plus its loss: ``forward(batch) -> loss dict`` (what DeepSpeed wraps)."""

    def __init__(self, student: nn.Module, loss_fn):
        super().__init__()
        head = TrainingHead(student.lm_head.in_features, student.lm_head.out_features, bias=False,
                            device="meta")
        head.weight = student.lm_head.weight
        student.lm_head = head
        self.student, self.loss_fn = student, loss_fn

    def forward(self, batch: dict) -> dict:
        hidden = self.student.model(batch["input_ids"], cu_seqlens=batch["cu_seqlens"],
                                    shared_prefix=batch.get("shared_prefix", 0))
        return self.student.lm_head(hidden, batch, self.loss_fn)


def build_student(cfg: dict) -> nn.Module:
    """The student in training mode: ``student.init`` loaded, or a fresh preset."""
    s = cfg["student"]
    if not s["init"]:
        return fresh_student(s["arch"], s["preset"], seed=cfg["train"]["seed"], **s["overrides"]).train()
    try:
        model = load_student(s["init"], dtype=torch.float32)
    except (ValueError, OSError) as exc:
        raise DataError(f"student.init: {exc}") from None
    kind = "step1" if model.config.model_type == "step1" else "llama"
    if kind != s["arch"]:
        raise DataError(f"student.init {s['init']} is a {kind} checkpoint but student.arch is "
                        f"{s['arch']}")
    return model.train()


def build_optimizer(module: nn.Module, cfg: dict):
    """``(AdamW, LambdaLR)``: weight decay on matrices only; the :func:`lr_lambda` schedule."""
    t = cfg["train"]
    decay = [p for p in module.parameters() if p.ndim >= 2]
    rest = [p for p in module.parameters() if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                               {"params": rest, "weight_decay": 0.0}], lr=t["lr"], betas=tuple(t["betas"]))
    return optim, torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(cfg))


def lr_lambda(cfg: dict):
    """Linear warmup, then cosine from lr to lr * min_lr_ratio at ``train.steps``."""
    t = cfg["train"]
    warm, total, floor = t["warmup_steps"], t["steps"], t["min_lr_ratio"]

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
    return f


def ds_config(cfg: dict, world: int, on_gpu: bool) -> dict:
    """The DeepSpeed config for ``cfg`` on ``world`` ranks (precision ``auto``: bf16 on GPU)."""
    t = cfg["train"]
    precision = t["precision"] if t["precision"] != "auto" else ("bf16" if on_gpu else "fp32")
    out = {
        "train_micro_batch_size_per_gpu": 1,  # one packed row of up to data.max_tokens tokens
        "gradient_accumulation_steps": t["grad_accum"],
        "train_batch_size": t["grad_accum"] * world,
        "gradient_clipping": t["clip"],
        "zero_optimization": {"stage": t["zero_stage"]},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if precision == "bf16":
        out["bf16"] = {"enabled": True}
    elif precision == "fp16":
        out["fp16"] = {"enabled": True, "initial_scale_power": 12}
    return out


# -- entry points --------------------------------------------------------------------------------

def run_recipe(config_path: str | Path) -> None:
    """setup / train / cleanup for the resolved config STUDENT/distill.yaml."""
    cfg, runs, out = load_resolved(config_path)
    recipe = DistillRecipe(cfg, runs, out)
    recipe.setup()
    recipe.train()
    recipe.cleanup()


def ray_train_loop(loop_config: dict) -> None:
    """Ray Train worker entry (TorchTrainer): Ray has set up the process group; DeepSpeed joins it."""
    import ray.train

    ctx = ray.train.get_context()
    os.environ.setdefault("LOCAL_RANK", str(ctx.get_local_rank()))
    os.environ.setdefault("RANK", str(ctx.get_world_rank()))
    os.environ.setdefault("WORLD_SIZE", str(ctx.get_world_size()))
    run_recipe(loop_config["config"])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="distillation recipe (launched by `stepforge distill`)")
    p.add_argument("--config", required=True, help="resolved config (STUDENT/distill.yaml)")
    p.add_argument("--local_rank", type=int, default=None, help="set by the deepspeed launcher")
    args = p.parse_args(argv)
    run_recipe(args.config)


if __name__ == "__main__":
    main()
