"""``stepforge distill RUN [RUN ...] --out STUDENT``: train a student on the accepted rows.

Checks everything it can in this process (the config, then ``distill.preflight``: runs, token
layout, batch sizes, an existing checkpoint's architecture), writes STUDENT/distill.yaml and
STUDENT/heldout.jsonl, then runs ``distill/recipe.py`` through the ``deepspeed`` launcher (or Ray
Train with ``--ray-address``), which exports the student; then scores it on the held-out prompts
(STUDENT/eval.json). A rerun resumes from the latest checkpoint; a finished student is not
retrained.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from distill.config import load_config, model_fingerprint, write_resolved
from manifests import RunDir
from manifests.atomic import atomic_path
from manifests.errors import UserError
from pipelines.actor_pool import worker_failure


class TrainingFailed(RuntimeError):
    """The training processes exited with an error (their traceback is in the output above)."""


def register(sub) -> None:
    p = sub.add_parser("distill", help="distill the accepted rows of runs into a student",
                       description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (synthesized and filtered)")
    p.add_argument("--out", required=True, help="student directory (created, or resumed)")
    p.add_argument("--config", default=None, help="distill YAML (default: built-in defaults, tiny student)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (overrides train.steps)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs (processes) on this node (default: all; CPU: 1 process)")
    p.add_argument("--ray-address", default=None,
                   help="train with Ray Train on this cluster ('local' starts one here)")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (with --ray-address)")
    p.add_argument("--no-eval", action="store_true", help="skip the student eval after training")
    p.set_defaults(func=main)


def main(args) -> int:
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}")
    overrides = list(args.set) + ([f"train.steps={args.steps}"] if args.steps else [])
    cfg = load_config(args.config, overrides)
    if cfg["student"]["init"]:  # relative to where the command runs, like the run dirs
        cfg["student"]["init"] = str(Path(cfg["student"]["init"]).resolve())
    out = Path(args.out)
    runs = [str(Path(r).resolve()) for r in args.runs]
    world = _world(args)
    with RunDir(out).lock():  # the same exclusive lock a run directory takes
        config, heldout = prepare(cfg, runs, out, world)
        if _finished(cfg, out):
            print(f"distill: {out} is already trained to step {cfg['train']['steps']}; nothing to train")
        elif args.ray_address:
            train_on_ray(config, args.ray_address, args.workers)
        else:
            train_local(config, world)
        if not (out / "config.json").is_file():
            raise TrainingFailed(f"training ended without exporting a student into {out}")
        if cfg["eval"]["student_eval"] and not args.no_eval and heldout:
            _student_eval(cfg, out)
    _print_result(out)
    return 0


def _world(args) -> int:
    import torch

    if args.ray_address:
        return args.workers
    if torch.cuda.is_available():
        return args.gpus or torch.cuda.device_count()
    return 1


def prepare(cfg: dict, runs: list[str], out: Path, world: int) -> tuple[Path, int]:
    """Every check that needs no training process (:func:`distill.preflight.preflight`); writes
    STUDENT/distill.yaml, heldout.jsonl and split.json. Returns the resolved config's path and the
    number of held-out rows."""
    from distill.data import SPLIT_FILE, write_split  # torch
    from distill.preflight import preflight

    ready = preflight(cfg, runs, out, world)
    config = write_resolved(cfg, runs, out, world)
    ready.heldout.write_prompts(out / "heldout.jsonl")
    write_split(out / SPLIT_FILE, ready.train, ready.heldout)
    print(f"distill: {len(ready.train)} training rows ({ready.plan.steps_per_epoch(world)} packed "
          f"micro-batches per epoch), {len(ready.heldout)} held out; student {cfg['student']['arch']} "
          f"{cfg['student']['init'] or cfg['student']['preset']}, "
          f"{ready.model_config.num_parameters() / 1e6:.2f}M parameters", flush=True)
    return config, len(ready.heldout)


def _finished(cfg: dict, out: Path) -> bool:
    try:
        info = json.loads((out / "train.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (info.get("status") == "done" and info.get("fingerprint") == model_fingerprint(cfg)
            and info.get("step", 0) >= cfg["train"]["steps"] and (out / "config.json").is_file())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_local(config: Path, world: int) -> None:
    """Run the recipe through the deepspeed launcher (one process per GPU; one on CPU)."""
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which("deepspeed")
    if launcher is None:
        raise UserError("the deepspeed launcher is not installed (pip install deepspeed)")
    cmd = [launcher, "--num_gpus", str(world), "--master_port", str(_free_port()),
           "--module", "distill.recipe", "--config", str(config)]
    print("distill: " + " ".join(cmd), flush=True)
    code = subprocess.call(cmd, env=env)
    if code != 0:
        raise TrainingFailed(f"training exited with status {code} (its traceback is above); rerun to "
                             "resume from the latest checkpoint")


def train_on_ray(config: Path, address: str, workers: int) -> None:
    """The same recipe in Ray Train workers (TorchTrainer; DeepSpeed joins Ray's process group)."""
    import ray
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from distill.recipe import ray_train_loop  # torch

    on_gpu = torch.cuda.is_available()
    env = {} if on_gpu else {"DS_ACCELERATOR": "cpu"}
    ray.init(address=None if address == "local" else address,
             runtime_env={"env_vars": env}, ignore_reinit_error=True, log_to_driver=True)
    trainer = TorchTrainer(
        ray_train_loop, train_loop_config={"config": str(config.resolve())},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=on_gpu),
        torch_config=TorchConfig(backend="nccl" if on_gpu else "gloo"),
        run_config=RunConfig(storage_path=str((config.parent / "ray").resolve()), name="distill"))
    try:
        trainer.fit()
    except Exception as exc:  # Ray wraps the worker's error: bad input as its line, else its traceback
        raise worker_failure(exc) from None
    finally:
        ray.shutdown()


def _student_eval(cfg: dict, out: Path) -> None:
    from pipelines.evaluate import evaluate_student  # torch (the LM engines)

    e = cfg["eval"]
    evaluate_student(out, out / "heldout.jsonl", out / "eval", max_seconds=e["max_seconds"],
                     limit=e["limit"], sampling=e["sampling"], progress=False)
    with atomic_path(out / "eval.json") as tmp:
        shutil.copyfile(out / "eval" / "eval.json", tmp)


def _print_result(out: Path) -> None:
    print(f"student: {out} (load with torch:{out})")
    if (out / "eval.json").is_file():
        print(f"eval: {out / 'eval.json'}")
