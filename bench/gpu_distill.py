"""Students distilled on a GPU machine from a run's token data alone, then evaluated here.

A filtered run is mostly audio (runs/en_basic: 372 MB of shards, 6 MB of it ids). The GPU machine
needs only the ids, so ``pack`` writes a tokens-only copy of the run: the same run layout, the same
rows, verdicts and lineage, its shards holding each sample's ``json``, ``tokens.npy`` (and
``topk.npz`` where the teacher gave one), so ``stepforge distill`` trains on it unchanged.
``variants`` writes one distill YAML per student to try, from a pipeline's resolved distill
section. On the GPU machine ``train`` runs ``stepforge distill`` for each within a time budget (the
step time from ``--timings`` or a short probe run; the steps are cut to fit, and with ``--deadline``
a run still going is stopped and its best held-out export kept) and writes each student, without
its checkpoints and with its weights in bf16, as tar parts of at most 15 MiB. Back here
``unpack`` joins the parts into student dirs (weights back in float32) for ``stepforge eval``.

    python -m bench.gpu_distill pack runs/en_basic gpu/en_basic
    python -m bench.gpu_distill variants pipelines/configs/en_basic.yaml gpu/variants
    python -m bench.gpu_distill train gpu/en_basic gpu/variants --out $OUT --budget 300    # there
    python -m bench.gpu_distill unpack FILES_AT --out runs/gpu_students
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

KEEP = ("json", "tokens.npy", "topk.npz")
PART_BYTES = 15 << 20
PROBE_STEPS = 40

# name -> (distill YAML sections merged over the pipeline's, share of the time budget)
VARIANTS = {
    # 13.6M parameters; the system turn repeated per sequence so that each layer's attention over a
    # pack is one fused Triton call (bench/gpu_step.py), 16,384 tokens per pack (~23 sequences)
    "medium": ({"student": {"overrides": {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 6,
                                          "num_attention_heads": 6}},
                "data": {"share_prefix": False, "max_tokens": 16384},
                "train": {"steps": 1500, "lr": 2.0e-3, "dropout": 0.1}}, 1.0),
}


# -- here: a tokens-only copy of a run ------------------------------------------------------------

def pack(run: Path, dest: Path) -> None:
    import pyarrow.parquet as pq

    from manifests import RunDir
    from manifests.shards import read_sample, sample_key, shard_index

    src, out = RunDir(run), RunDir(dest)
    if out.exists():
        raise SystemExit(f"{dest} exists; remove it first")
    out.path.mkdir(parents=True)
    shutil.copyfile(src.tasks, out.tasks)
    shutil.copytree(src.filter_journal, out.filter_journal)
    rows_total = samples_total = 0
    for part in src.journal_parts():
        rows = pq.read_table(part).to_pylist()
        samples = []
        for r in rows:
            if not r["shard"]:
                continue
            key = sample_key(r["id"], r["attempt"] or 0)
            members = read_sample(src.path / r["shard"], r["offset"], key=key)
            samples.append((key, {k: v for k, v in members.items() if k in KEEP}))
        out.commit_shard(shard_index(part.stem + ".tar"), samples, rows)
        rows_total, samples_total = rows_total + len(rows), samples_total + len(samples)
    info = src.info()
    info["tokens_only_copy_of"] = str(run)
    out.write_info(info)
    out.consolidate()
    size = sum(p.stat().st_size for p in out.path.rglob("*") if p.is_file())
    print(f"pack: {rows_total} rows, {samples_total} samples -> {dest} ({size / 1e6:.1f} MB)")


def variants(pipeline: Path, dest: Path) -> None:
    from distill.config import resolve
    from pipelines.pipeline_config import load_pipeline

    base = load_pipeline(pipeline).distill
    dest.mkdir(parents=True, exist_ok=True)
    for name, (sections, share) in VARIANTS.items():
        cfg = resolve([base, sections])  # merged and validated as a distill YAML's layers are
        cfg["budget_share"] = share
        (dest / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        print(f"variants: {dest / name}.yaml")


# -- there: train each variant within its share of the budget -------------------------------------

def distill(run: Path, config: Path, out: Path, steps: int, log, *extra: str, deadline: float | None = None) -> int:
    """``stepforge distill``; past ``deadline`` (a monotonic time) the whole launch is stopped
    (SIGTERM to its process group) and -15 returned."""
    cmd = [sys.executable, "-m", "pipelines.cli", "distill", str(run), "--out", str(out), "--config", str(config),
           "--steps", str(steps), "--no-eval", *extra]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=None if deadline is None else max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.write("stopped at the deadline\n")
        return -15


def stopped_student(student: Path, codec: str | None) -> dict | None:
    """A student stopped before its end: its latest best-STEP export (the lowest held-out loss so
    far) copied into ``student`` with a train.json that says so; None when it has none yet."""
    best = sorted((student / "checkpoints").glob("best-*"))
    best = [d for d in best if (d / "config.json").is_file()]
    if not best:
        return None
    for path in best[-1].iterdir():
        if path.is_file():
            shutil.copyfile(path, student / path.name)
    step = int(best[-1].name.split("-")[1])
    lines = [json.loads(x) for x in (student / "logs" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [x for x in lines if "eval_loss" in x]
    info = {"status": "stopped at the deadline", "step": step, "codec": codec,
            "exported": {"step": step, "eval_loss": next((x["eval_loss"] for x in evals if x.get("step") == step), None),
                         "rule": "lowest held-out loss before the deadline"},
            "last": lines[-1] if lines else None, "logged_steps": max((x.get("step", 0) for x in lines), default=0)}
    (student / "train.json").write_text(json.dumps(info, indent=1))
    return info


def train(run: Path, folder: Path, out: Path, budget: float, scratch: Path, min_steps: int = 100,
          probe_only: bool = False, timings: dict | None = None, deadline: float | None = None,
          extra: tuple = ()) -> None:
    """Each variant: a probe of PROBE_STEPS steps (kept in ``scratch``, so a second call on the
    same machine skips it) gives the step time and the startup cost; then the real run gets the
    steps its share of ``budget`` allows (at most its ``train.steps``)."""
    from manifests import RunDir

    summary = {}
    t0 = time.monotonic()
    log = open(out / "distill.log", "a")
    for config in sorted(folder.glob("*.yaml")):
        name = config.stem
        cfg = yaml.safe_load(config.read_text())
        share = cfg.pop("budget_share", 1.0 / len(VARIANTS))
        clean = scratch / f"{name}.yaml"
        clean.write_text(yaml.safe_dump(cfg, sort_keys=False))
        probe = scratch / f"probe_{name}"
        timing = probe / "probe_timing.json"
        if name in (timings or {}) and not timing.is_file():  # measured by an earlier call (--timings)
            probe.mkdir(parents=True, exist_ok=True)
            timing.write_text(json.dumps({k: timings[name][k] for k in ("s_per_step", "startup_s")}))
        if not timing.is_file():
            shutil.rmtree(probe, ignore_errors=True)
            start = time.monotonic()
            code = distill(run, clean, probe, PROBE_STEPS, log, "--set", "train.warmup_steps=5", "--set",
                           "train.eval_every=1000", "--set", "train.save_every=1000")
            if code == 0:
                wall = json.loads((probe / "train.json").read_text())["wall_s"]
                timing.write_text(json.dumps({"s_per_step": wall / PROBE_STEPS,
                                              "startup_s": time.monotonic() - start - wall}))
            else:
                summary[name] = {"probe_rc": code}
                (out / "gpu_distill.json").write_text(json.dumps(summary, indent=1))
                continue
        entry = json.loads(timing.read_text())
        steps = max(0, min(cfg["train"]["steps"],
                           int((budget * share - entry["startup_s"]) / entry["s_per_step"] / 1.1)))
        entry["steps_planned"] = steps
        print(f"train: {name}: {entry['s_per_step'] * 1000:.1f} ms/step, startup {entry['startup_s']:.0f} s "
              f"-> {steps} steps", flush=True)
        if not probe_only and steps >= min_steps:
            start = time.monotonic()
            student = scratch / name
            shutil.rmtree(student, ignore_errors=True)
            warmup = min(cfg["train"]["warmup_steps"], steps // 10)
            stop = None if deadline is None else t0 + deadline * share
            entry["rc"] = distill(run, clean, student, steps, log, "--set", f"train.warmup_steps={warmup}",
                                  *extra, deadline=stop)
            info = None
            if entry["rc"] == 0:
                info = json.loads((student / "train.json").read_text())
            elif entry["rc"] == -15:
                info = stopped_student(student, RunDir(run).info().get("codec"))
            if info is not None:
                entry.update({k: info.get(k) for k in ("status", "step", "wall_s", "parameters", "train_rows",
                                                        "heldout_rows", "exported", "last", "logged_steps")})
                entry["parts"] = write_parts(student, out, name)
            entry["wall_s_total"] = time.monotonic() - start
        summary[name] = entry
        (out / "gpu_distill.json").write_text(json.dumps(summary, indent=1))
    log.close()


def write_parts(student: Path, out: Path, name: str) -> list[str]:
    """The student dir without checkpoints, weights in bf16, as tar parts of at most 15 MiB."""
    import torch
    from safetensors.torch import load_file, save_file

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(student.rglob("*")):
            rel = path.relative_to(student)
            if not path.is_file() or (rel.parts[0] in ("checkpoints", "logs") and rel.name != "metrics.jsonl"):
                continue
            if path.suffix == ".safetensors":
                state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(path).items()}
                tmp = path.with_suffix(".bf16")
                save_file(state, str(tmp), metadata={"format": "pt"})
                tar.add(tmp, arcname=str(rel))
                tmp.unlink()
            else:
                tar.add(path, arcname=str(rel))
    data = buf.getvalue()
    names = []
    for i in range(0, len(data), PART_BYTES):
        names.append(f"{name}.tar.{i // PART_BYTES:02d}")
        (out / names[-1]).write_bytes(data[i:i + PART_BYTES])
    return names


# -- here: join the parts into student dirs -------------------------------------------------------

def unpack(folder: Path, dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    summary = json.loads((folder / "gpu_distill.json").read_text())
    for name, entry in summary.items():
        if not entry.get("parts"):
            print(f"unpack: {name}: no student (probe rc {entry.get('probe_rc')}, rc {entry.get('rc')})")
            continue
        data = b"".join((folder / p).read_bytes() for p in entry["parts"])
        student = dest / name
        student.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(student, filter="data")
        for path in student.glob("*.safetensors"):
            state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in load_file(path).items()}
            save_file(state, str(path), metadata={"format": "pt"})
        config = json.loads((student / "config.json").read_text())
        config["torch_dtype"] = config["dtype"] = "float32"
        (student / "config.json").write_text(json.dumps(config, indent=2))
        print(f"unpack: {student} (step {entry.get('step')}, {entry.get('parameters')} parameters)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("run", type=Path)
    a.add_argument("dest", type=Path)
    a = sub.add_parser("variants")
    a.add_argument("pipeline", type=Path)
    a.add_argument("dest", type=Path)
    a = sub.add_parser("train")
    a.add_argument("run", type=Path)
    a.add_argument("variants", type=Path)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--budget", type=float, default=300.0, help="seconds for all variants together")
    a.add_argument("--scratch", type=Path, default=Path("/tmp/gpu_distill"))
    a.add_argument("--min-steps", type=int, default=100, help="skip a variant that cannot get this many steps")
    a.add_argument("--probe-only", action="store_true", help="time each variant, train none")
    a.add_argument("--deadline", type=float, default=None,
                   help="seconds for all variants: each is stopped at its share and its best export so far kept")
    a.add_argument("--set", action="append", default=[], help="passed to every `stepforge distill` run")
    a.add_argument("--timings", type=Path, default=None,
                   help="gpu_distill.json of an earlier --probe-only call: its timings instead of probes")
    a = sub.add_parser("unpack")
    a.add_argument("folder", type=Path)
    a.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.run, args.dest)
    elif args.cmd == "variants":
        variants(args.pipeline, args.dest)
    elif args.cmd == "train":
        args.out.mkdir(parents=True, exist_ok=True)
        args.scratch.mkdir(parents=True, exist_ok=True)
        timings = json.loads(args.timings.read_text()) if args.timings and args.timings.is_file() else None
        extra = tuple(x for kv in args.set for x in ("--set", kv))
        train(args.run, args.variants, args.out, args.budget, args.scratch, args.min_steps, args.probe_only, timings,
              args.deadline, extra)
    else:
        unpack(args.folder, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
