"""The distillation recipe: filtered shards -> a Step-Audio-TTS-style student, with DeepSpeed.

What ``stepforge distill RUN --out STUDENT`` launches (it writes STUDENT/distill.yaml first):

    DS_ACCELERATOR=cpu deepspeed --num_gpus 1 --module distill.recipe --config STUDENT/distill.yaml

One file, four steps: ``setup`` (process group, student, data, loss, DeepSpeed engine, resume from
the latest checkpoint), ``train`` (packed micro-batches, periodic eval on held-out rows),
``save_checkpoint`` (DeepSpeed state with optimizer and data cursor) and ``cleanup`` (export the HF
dir that the LM engine loads). Across nodes the same recipe runs inside Ray Train workers
(:func:`ray_train_loop`).

STUDENT/ after a run: config.json + model.safetensors (+ remote code), checkpoints/step-NNNNNNN/,
logs/metrics.jsonl (one line per logged step and per eval), logs/tb/ (TensorBoard), train.json,
heldout.jsonl (prompts for the student eval), distill.yaml (the resolved config).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from distill.config import load_config, model_fingerprint
from distill.data import Corpus, DataError, PackPlan, SequenceBuilder

STAMP = "stepforge.json"  # beside each DeepSpeed checkpoint: what it is and where the data was


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
    from engine.models import build_student as fresh, load_student

    s = cfg["student"]
    if s["init"]:
        try:
            model = load_student(s["init"], dtype=torch.float32)
        except (ValueError, OSError) as exc:
            raise DataError(f"student.init: {exc}") from None
        kind = "step1" if model.config.model_type == "step1" else "llama"
        if kind != s["arch"]:
            raise DataError(f"student.init {s['init']} is a {kind} checkpoint but student.arch is "
                            f"{s['arch']}")
        return model.train()
    return fresh(s["arch"], s["preset"], seed=cfg["train"]["seed"], **s["overrides"]).train()


def student_config(cfg: dict):
    """The student's model config without building the model (cheap checks in the driver)."""
    from engine.models import LlamaStudentConfig, Step1Config
    from engine.models.export import model_type

    s = cfg["student"]
    cls = Step1Config if s["arch"] == "step1" else LlamaStudentConfig
    if not s["init"]:
        return cls.preset(s["preset"], **s["overrides"])
    try:
        kind = model_type(s["init"])
    except ValueError as exc:
        raise DataError(f"student.init: {exc}") from None
    if (kind == "step1") != (s["arch"] == "step1"):
        raise DataError(f"student.init {s['init']} is a {kind or 'non-student'} checkpoint but "
                        f"student.arch is {s['arch']}")
    return cls.from_pretrained(s["init"])


def student_text(model_config, init: str | None):
    """(tokenizer, layout) of the student."""
    from engine.lm.text_tokenizer import load_tokenizer

    return load_tokenizer(init, model_config.to_dict())


def build_data(cfg: dict, runs: list[str], tokenizer, layout, world: int):
    """``(train, heldout, plan)`` for this config on ``world`` ranks.

    Raises:
        DataError: the runs cannot feed this student, or cannot fill one optimizer step.
    """
    d = cfg["data"]
    corpus = Corpus.load(runs, SequenceBuilder(layout, tokenizer))
    train, heldout = corpus.split(d["heldout"], cfg["train"]["seed"])
    plan = PackPlan(train, d["max_tokens"], cfg["train"]["seed"], d["buffer"], d["share_prefix"])
    have, need = plan.steps_per_epoch(world), cfg["train"]["grad_accum"]
    if have < need:
        raise DataError(f"{len(train)} training rows pack into {have} micro-batch(es) per rank per "
                        f"epoch on {world} rank(s), fewer than train.grad_accum={need}; lower "
                        "train.grad_accum or data.max_tokens")
    return train, heldout, plan


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


class DistillRecipe:
    """Args: cfg (a :func:`distill.config.load_config` dict), runs (run dirs), out (STUDENT)."""

    def __init__(self, cfg: dict, runs: list[str], out: str | Path):
        self.cfg, self.runs, self.out = cfg, [str(r) for r in runs], Path(out)
        self.ckpt_dir = self.out / "checkpoints"
        self.logs = self.out / "logs"
        # best_*: the lowest held-out loss so far and its step, whose weights wait in best_dir().
        self.state = {"step": 0, "epoch": 0, "pack": 0, "tokens": 0, "wall_s": 0.0,
                      "best_loss": None, "best_step": 0}
        self.writer = self.wandb = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self) -> None:
        import deepspeed

        deepspeed.init_distributed(dist_backend=None, verbose=False)
        self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.on_gpu = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if self.on_gpu else "cpu")
        torch.manual_seed(self.cfg["train"]["seed"])
        student = build_student(self.cfg)
        student.model.set_dropout(self.cfg["train"]["dropout"])
        self._setup_data(student)
        from distill.losses import DistillLoss

        loss_fn = DistillLoss(self.layout, eot_id=self.tokenizer.eot, kd_ratio=self.cfg["loss"]["kd_ratio"],
                              restricted=self.cfg["loss"]["restricted_head"])
        module = DistillModule(student, loss_fn)
        t = self.cfg["train"]
        decay = [p for p in module.parameters() if p.ndim >= 2]
        rest = [p for p in module.parameters() if p.ndim < 2]
        optim = torch.optim.AdamW([{"params": decay, "weight_decay": t["weight_decay"]},
                                   {"params": rest, "weight_decay": 0.0}], lr=t["lr"], betas=tuple(t["betas"]))
        sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_lambda(self.cfg))
        self.engine, _, _, _ = deepspeed.initialize(
            model=module, optimizer=optim, lr_scheduler=sched,
            config=ds_config(self.cfg, self.world, self.on_gpu))
        self.scheduler = sched
        self._resume()
        self._open_logs()

    def _setup_data(self, student: nn.Module) -> None:
        self.tokenizer, self.layout = student_text(student.config, self.cfg["student"]["init"])
        self.train_rows, self.heldout, self.plan = build_data(self.cfg, self.runs, self.tokenizer,
                                                              self.layout, self.world)
        max_tokens = self.cfg["data"]["max_tokens"]
        share = self.cfg["data"]["share_prefix"]
        self.eval_plan = PackPlan(self.heldout, max_tokens, 0, share_prefix=share) if len(self.heldout) else None

    # -- checkpoints -----------------------------------------------------------------------------
    def _resume(self) -> None:
        """Continue from the latest checkpoint (its student must be this config's); trim the
        metrics log to that step so the curve continues from it."""
        latest = self.ckpt_dir / "latest"
        if not latest.is_file():
            return
        tag = latest.read_text().strip()
        check_checkpoint(self.ckpt_dir / tag, self.cfg)
        _, client = self.engine.load_checkpoint(str(self.ckpt_dir), tag)
        self.state.update(client["state"])
        if self.rank == 0:
            trim_metrics(self.logs / "metrics.jsonl", self.state["step"])
            self._drop_other_bests()
            print(f"resumed from {tag}: step {self.state['step']}, epoch {self.state['epoch']}, "
                  f"pack {self.state['pack']}", flush=True)

    def save_checkpoint(self) -> None:
        """DeepSpeed state (weights, optimizer, scheduler) plus the data cursor; ``latest`` moves
        only when every file is written, so a kill mid-save resumes from the one before."""
        tag = f"step-{self.state['step']:07d}"
        if self.rank == 0:
            shutil.rmtree(self.ckpt_dir / tag, ignore_errors=True)
        torch.distributed.barrier()
        self.engine.save_checkpoint(str(self.ckpt_dir), tag, client_state={"state": dict(self.state)},
                                    save_latest=False)
        torch.distributed.barrier()
        if self.rank == 0:
            stamp = {"step": self.state["step"], "student": self.cfg["student"],
                     "fingerprint": model_fingerprint(self.cfg), "runs": self.runs}
            (self.ckpt_dir / tag / STAMP).write_text(json.dumps(stamp, indent=1))
            tmp = self.ckpt_dir / "latest.tmp"
            tmp.write_text(tag)
            os.replace(tmp, self.ckpt_dir / "latest")
            tags = sorted(p.name for p in self.ckpt_dir.glob("step-*") if p.is_dir())
            for old in tags[: -self.cfg["train"]["keep_checkpoints"]]:
                if old != tag:
                    shutil.rmtree(self.ckpt_dir / old, ignore_errors=True)
            self._drop_other_bests()
        torch.distributed.barrier()

    def best_dir(self, step: int) -> Path:
        return self.ckpt_dir / f"best-{step:07d}"

    def _keep_if_best(self, eval_loss: float) -> None:
        """With ``train.export: best``, export the weights of a new lowest held-out loss to
        best_dir(step). The previous best stays until a checkpoint records the new one, so a kill
        in between resumes with the best its state names."""
        if self.cfg["train"]["export"] != "best":
            return
        best = self.state["best_loss"]
        if best is not None and eval_loss >= best:
            return
        self.state.update(best_loss=eval_loss, best_step=self.state["step"])
        self._export(self.best_dir(self.state["step"]))

    def _drop_other_bests(self) -> None:
        """Remove best-* exports other than the one the current state names (rank 0)."""
        keep = self.best_dir(self.state["best_step"]).name if self.state["best_step"] else None
        for d in self.ckpt_dir.glob("best-*"):
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)

    def _export(self, out: Path) -> None:
        """The student's HF dir into ``out`` (rank 0), gathering ZeRO-3 shards first."""
        student = self.engine.module.student
        if self.cfg["train"]["zero_stage"] == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(student.parameters()), modifier_rank=None):
                if self.rank == 0:
                    export_student(student, out)
        elif self.rank == 0:
            export_student(student, out)

    # -- training ---------------------------------------------------------------------------------
    def _micro_batches(self):
        """Packed batches from the saved cursor on, across epochs; advances the cursor."""
        while True:
            gen = self.plan.batches(self.state["epoch"], self.rank, self.world, self.state["pack"])
            for batch in gen:
                self.state["pack"] += 1
                yield batch
            self.state["epoch"] += 1
            self.state["pack"] = 0

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def train(self) -> None:
        t = self.cfg["train"]
        batches = self._micro_batches()
        window = _Window()
        while self.state["step"] < t["steps"]:
            start = time.perf_counter()
            for _ in range(t["grad_accum"]):
                batch = self._to_device(next(batches))
                out = self.engine(batch)
                self.engine.backward(out["loss"])
                self.engine.step()
                window.add(out, int(batch["input_ids"].numel()))
            self.state["step"] += 1
            wall = time.perf_counter() - start
            self.state["wall_s"] += wall
            window.wall += wall
            step = self.state["step"]
            if step % t["log_every"] == 0 or step == t["steps"]:
                self._log(window.summary(self.world, self.scheduler.get_last_lr()[0], self.state["epoch"]))
                window = _Window()
            if self.eval_plan is not None and (step % t["eval_every"] == 0 or step == t["steps"]):
                metrics = self.evaluate()
                self._log(metrics)
                self._keep_if_best(metrics["eval_loss"])
            if step % t["save_every"] == 0 or step == t["steps"]:
                self.save_checkpoint()

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Loss and token accuracy per stream on the held-out rows."""
        self.engine.eval()
        window = _Window()
        for batch in self.eval_plan.batches(0):
            out = self.engine(self._to_device(batch))
            window.add(out, int(batch["input_ids"].numel()))
        self.engine.train()
        s = window.summary(1, None, None)
        return {"eval_loss": s["loss"], "eval_acc_vq02": s["acc_vq02"], "eval_acc_vq06": s["acc_vq06"],
                "eval_tokens": s["loss_tokens"]}

    # -- logging ------------------------------------------------------------------------------------
    def _open_logs(self) -> None:
        if self.rank != 0:
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        if self.cfg["logging"]["tensorboard"]:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.logs / "tb"))
            except ImportError:
                print("tensorboard is not installed (pip install tensorboard): no TensorBoard logs", flush=True)
        project = self.cfg["logging"]["wandb"]
        if project:
            try:
                import wandb

                self.wandb = wandb.init(project=project, config=self.cfg, dir=str(self.logs), resume="allow")
            except ImportError:
                print("wandb is not installed (pip install wandb): not logging to Weights & Biases", flush=True)

    def _log(self, metrics: dict) -> None:
        if self.rank != 0:
            return
        step = self.state["step"]
        record = {"step": step, **{k: v for k, v in metrics.items() if v is not None}}
        with open(self.logs / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(" ".join(f"{k} {_fmt(v)}" for k, v in record.items()), flush=True)
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                if self.writer is not None:
                    self.writer.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(record, step=step)

    # -- cleanup -----------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Export the student (rank 0): the best held-out step's weights with ``train.export:
        best`` (the last step's without held-out rows), else the last step's; close logs and the
        process group."""
        student = self.engine.module.student
        best = self.state["best_step"] if self.cfg["train"]["export"] == "best" else 0
        if best:
            if self.rank == 0:
                copy_student(self.best_dir(best), self.out)
        else:
            self._export(self.out)
        if self.rank == 0:
            from manifests.atomic import write_json

            exported = {"step": best or self.state["step"],
                        "eval_loss": self.state["best_loss"] if best else None,
                        "rule": "lowest held-out loss" if best else "last step"}
            print(f"exported the step-{exported['step']} student ({exported['rule']})", flush=True)

            write_json(self.out / "train.json", {
                "status": "done", "step": self.state["step"], "epochs": self.state["epoch"],
                "wall_s": round(self.state["wall_s"], 2), "world": self.world,
                "fingerprint": model_fingerprint(self.cfg), "runs": self.runs,
                "train_rows": len(self.train_rows), "heldout_rows": len(self.heldout),
                "codec": self.train_rows.codec_version,
                "parameters": sum(p.numel() for p in student.parameters()),
                "exported": exported,
                "last": last_metrics(self.logs / "metrics.jsonl")})
            if self.writer is not None:
                self.writer.close()
            if self.wandb is not None:
                self.wandb.finish()
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


class _Window:
    """Running sums of the loss dicts between two log lines."""

    def __init__(self):
        self.n = self.tokens = self.loss_tokens = 0
        self.sums: dict[str, float] = {}
        self.wall = 0.0

    def add(self, out: dict, tokens: int) -> None:
        self.n += 1
        self.tokens += tokens
        self.loss_tokens += int(out["n_tokens"])
        for key in ("loss", "ce", "kl", "acc_vq02", "acc_vq06"):
            value = out.get(key)
            if torch.is_tensor(value):
                value = value.detach().item()
            if value is not None:
                self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def summary(self, world: int, lr, epoch) -> dict:
        s = {k: v / max(1, self.n) for k, v in self.sums.items()}
        s.update(loss_tokens=self.loss_tokens, lr=lr, epoch=epoch)
        s.setdefault("acc_vq02", None), s.setdefault("acc_vq06", None)
        if self.wall:
            s["tokens_per_s"] = round(self.tokens * world / self.wall, 1)
        return s


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def export_student(student: nn.Module, out: Path) -> None:
    """Write the HF dir into ``out``: into a temp dir first, then each file moved in, config.json
    last (its presence means a complete student)."""
    from engine.models import export

    tmp = _fresh_tmp(out)
    export(student, tmp)
    _move_in(tmp, out)


def copy_student(src: Path, out: Path) -> None:
    """Copy an exported HF dir into ``out`` the way :func:`export_student` writes one."""
    tmp = _fresh_tmp(out)
    shutil.copytree(src, tmp)
    _move_in(tmp, out)


def _fresh_tmp(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _move_in(tmp: Path, out: Path) -> None:
    (out / "config.json").unlink(missing_ok=True)
    for f in sorted(tmp.iterdir(), key=lambda p: p.name == "config.json"):
        os.replace(f, out / f.name)
    tmp.rmdir()


def check_checkpoint(tag_dir: Path, cfg: dict) -> dict:
    """The checkpoint's stamp; DataError when it was trained with another student section."""
    try:
        stamp = json.loads((tag_dir / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        raise DataError(f"{tag_dir} is not a stepforge checkpoint (no readable {STAMP})") from None
    if stamp.get("fingerprint") != model_fingerprint(cfg):
        raise DataError(f"{tag_dir} was trained as student {stamp.get('student')}, not "
                        f"{cfg['student']}; use another --out or the same student section")
    return stamp


def trim_metrics(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)


def last_metrics(path: Path) -> dict:
    out: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            out.update(json.loads(line))
    return out


def run_recipe(config_path: str | Path) -> None:
    """setup / train / save / cleanup for the resolved config STUDENT/distill.yaml."""
    data = yaml.safe_load(Path(config_path).read_text())
    cfg = load_config(config_path)
    recipe = DistillRecipe(cfg, data["runs"], data["out"])
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
