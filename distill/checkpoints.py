"""The training state and the checkpoint directory of a distillation run.

    state = TrainState()                          # step, data cursor, best held-out loss
    ckpts = CheckpointDir(Path("STUDENT/checkpoints"))
    tag = ckpts.tag(state.step)                   # "step-0000050"
    ...  # DeepSpeed writes ckpts.root / tag with client_state={"state": state.as_dict()}
    ckpts.commit(tag, stamp, keep=2)              # stepforge.json, then `latest`, then pruning
    ckpts.latest()                                # "step-0000050": what a rerun resumes from

STUDENT/checkpoints holds ``step-NNNNNNN/`` (DeepSpeed's files plus ``stepforge.json``: the step,
the student section and its fingerprint, the runs), ``latest`` (a file naming the last complete
step dir) and ``best-NNNNNNN/`` (an HF export of the lowest held-out loss, distill.exporter).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from manifests.atomic import atomic_path, write_json

STAMP = "stepforge.json"  # beside each DeepSpeed checkpoint: what it is and where the data was
LATEST = "latest"


@dataclass
class TrainState:
    """Where a run stands; every checkpoint saves it (``as_dict``) and a resume restores it.

    The dict is the checkpoint's ``client_state["state"]``, with these keys in this order;
    checkpoints written before best-step export lack ``best_loss``/``best_step``.
    """

    step: int = 0           # optimizer steps done
    epoch: int = 0          # the data epoch the cursor is in
    pack: int = 0           # packs this rank has taken from that epoch
    tokens: int = 0         # not counted; kept so the saved dict has the keys it always had
    wall_s: float = 0.0     # training time (forward, backward, step) over all sessions
    best_loss: float | None = None  # the lowest held-out loss so far (train.export: best)
    best_step: int = 0              # its step; 0: none yet

    def as_dict(self) -> dict:
        return asdict(self)

    def restore(self, saved: dict) -> None:
        """Take the values a checkpoint saved; fields it lacks keep their current value."""
        for f in fields(self):
            if f.name in saved:
                setattr(self, f.name, saved[f.name])


class CheckpointDir:
    """STUDENT/checkpoints: names step dirs, reads and moves ``latest``, prunes old steps.

    Args:
        root: the checkpoints folder (created on the first commit).
    """

    def __init__(self, root: Path):
        self.root = Path(root)

    @staticmethod
    def tag(step: int) -> str:
        return f"step-{step:07d}"

    def latest(self) -> str | None:
        """The tag ``latest`` names (the last complete checkpoint), or None before the first."""
        path = self.root / LATEST
        return path.read_text().strip() if path.is_file() else None

    def clear(self, tag: str) -> None:
        """Remove a step dir about to be rewritten (left by a kill before its commit)."""
        shutil.rmtree(self.root / tag, ignore_errors=True)

    def commit(self, tag: str, stamp: dict, keep: int) -> None:
        """Mark ``tag`` complete: its stamp, then ``latest`` moves to it, then all but the
        ``keep`` newest step dirs go (never ``tag``). A kill before ``latest`` moves resumes from
        the previous checkpoint."""
        write_json(self.root / tag / STAMP, stamp)
        with atomic_path(self.root / LATEST) as tmp:
            tmp.write_text(tag)
        tags = sorted(p.name for p in self.root.glob("step-*") if p.is_dir())
        for old in tags[:-keep]:
            if old != tag:
                shutil.rmtree(self.root / old, ignore_errors=True)


def read_stamp(tag_dir: Path) -> dict | None:
    """The ``stepforge.json`` of a step dir, or None when it has no readable one."""
    try:
        return json.loads((Path(tag_dir) / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return None
