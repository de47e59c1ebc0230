"""Run identity: what made a run directory, and claiming one for a job.

A run's ``run.json`` records what its rows depend on (spec or prompts hash, teacher id, codec
version, package versions). A job claims a run before writing: a new directory gets
``tasks.parquet`` and then ``run.json`` (its presence means the run is set up); an existing run must
have been made by the same inputs, else the job is refused before anything is written.

    teacher, codec = identify("reference", "melvq")
    claim_run(run, tasks, {"spec_hash": h, "teacher": teacher.id, ...}, check=same_spec)
"""
from __future__ import annotations

import platform
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

from engine import __version__
from engine.codec import load_codec
from engine.spec import write_tasks
from engine.teachers import make_teacher
from manifests import RunDir, RunError
from manifests.atomic import TMP_SUFFIX

VERSIONED = ("numpy", "pyarrow", "ray", "torch", "webdataset", "espeakng-loader")


def identify(teacher_spec: str, codec_spec: str):
    """``(teacher, codec)`` for the specs, built in the driver for their ids, versions and
    resources (LM teachers load their engine only when first used)."""
    codec = load_codec(codec_spec)
    return make_teacher(teacher_spec, codec=codec), codec


def package_versions() -> dict:
    """Python's and the main packages' versions, for run.json."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def claim_run(run: RunDir, tasks: list, identity: dict, check: Callable[[dict], None],
              refresh: dict | None = None) -> None:
    """Create ``run`` for ``tasks`` with ``identity`` in its run.json, or check an existing one.

    Args:
        identity: the run.json fields of a new run (stepforge version, package versions,
            creation time and an empty stage ledger are added).
        check: called with an existing run's info; raises RunError when the run was made by
            other inputs.
        refresh: run.json fields that may change between reruns (e.g. filter thresholds),
            written on every claim.
    Raises:
        RunError: ``run`` belongs to other inputs, or is a folder that is not a stepforge run.
    """
    if run.exists():
        info = run.info()
        check(info)
        if not run.tasks.exists():
            write_tasks(tasks, run.tasks)
        run.write_info({**info, **(refresh or {})})
        return
    if run.path.exists():
        setup = {".lock", run.tasks.name}  # what a setup writes before run.json, and its temporaries
        found = list(run.path.iterdir())
        prefixes = (f".{run.tasks.name}.", f".{run.run_json.name}.")
        temporaries = [p for p in found if p.name.endswith(TMP_SUFFIX) and p.name.startswith(prefixes)]
        if any(p.name not in setup and p not in temporaries for p in found):
            raise RunError(f"{run.path} exists and is not a stepforge run; refusing to write into it")
        for p in temporaries:  # a setup killed midway: set up again
            p.unlink()
    write_tasks(tasks, run.tasks)  # run.json last: its presence means the run is set up
    run.write_info({"stepforge_version": __version__, **identity, **(refresh or {}),
                    "versions": package_versions(), "created_at": utc_now(), "stages": {}})
