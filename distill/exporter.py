"""What STUDENT ends up holding: the best held-out step's weights or the last step's.

    best = BestTracker(Path("STUDENT/checkpoints"), state, enabled=cfg["train"]["export"] == "best")
    exporter = StudentExporter(engine.module.student, zero_stage=2, rank=0)
    if best.is_new_best(eval_loss):                   # after each held-out eval
        exporter.export(best.record(eval_loss))       # -> checkpoints/best-NNNNNNN/
    ...                                               # a checkpoint records state.best_step
    best.drop_unrecorded()                            # after each checkpoint and on resume
    exported = exporter.export_final(Path("STUDENT"), state, best)  # the train.json "exported"

With ``train.export: best`` each new lowest held-out loss is exported to ``best-STEP`` at once;
the previous best stays until a checkpoint records the new one, so a kill in between resumes with
the best that its state names, and the final export copies that dir. Without held-out rows, or
with ``train.export: last``, the final export is the last step's weights.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from torch import nn

from distill.checkpoints import TrainState
from engine.models.export import copy_into, export_into


class BestTracker:
    """The lowest held-out loss (kept in the :class:`TrainState`) and its ``best-STEP`` dir.

    Args:
        root: STUDENT/checkpoints, where the best-STEP dirs live.
        state: the run's state; ``best_loss``/``best_step`` are read and set in it.
        enabled: ``train.export == "best"``; otherwise no eval loss is ever a new best.
    """

    def __init__(self, root: Path, state: TrainState, enabled: bool):
        self.root, self.state, self.enabled = Path(root), state, enabled

    def dir(self, step: int) -> Path:
        return self.root / f"best-{step:07d}"

    def is_new_best(self, eval_loss: float) -> bool:
        best = self.state.best_loss
        return self.enabled and (best is None or eval_loss < best)

    def record(self, eval_loss: float) -> Path:
        """Make ``eval_loss`` at the current step the best; returns the dir to export it into."""
        self.state.best_loss, self.state.best_step = eval_loss, self.state.step
        return self.dir(self.state.step)

    def chosen(self) -> Path | None:
        """The best-STEP dir the final export copies, or None (export the last step)."""
        return self.dir(self.state.best_step) if self.enabled and self.state.best_step else None

    def drop_unrecorded(self) -> None:
        """Remove every best-* dir but the one the state names (rank 0; call once a checkpoint
        has recorded the state, and on resume: a dir exported after the last checkpoint is not
        the best of the state that resumes)."""
        keep = self.dir(self.state.best_step).name if self.state.best_step else None
        for d in self.root.glob("best-*"):
            if d.name != keep:
                shutil.rmtree(d, ignore_errors=True)


class StudentExporter:
    """Writes the student of a DeepSpeed engine as an HF dir (``engine.models.export``).

    Every rank calls :meth:`export` (under ZeRO-3 the shards are gathered first, a collective);
    rank 0 writes.

    Args:
        student: the trained model (``engine.module.student``).
        zero_stage: ``train.zero_stage``.
        rank: this process's rank.
    """

    def __init__(self, student: nn.Module, zero_stage: int, rank: int):
        self.student, self.zero_stage, self.rank = student, zero_stage, rank

    def export(self, out: Path) -> None:
        """The student's current weights into ``out`` (:func:`engine.models.export.export_into`)."""
        if self.zero_stage != 3:
            if self.rank == 0:
                export_into(self.student, out)
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(self.student.parameters()), modifier_rank=None):
            if self.rank == 0:
                export_into(self.student, out)

    def export_final(self, out: Path, state: TrainState, best: BestTracker) -> dict:
        """Export STUDENT at the end of training: the best step's dir when there is one, else
        the last step's weights. Returns train.json's ``exported`` record (step, eval_loss, rule)."""
        chosen = best.chosen()
        if chosen is None:
            self.export(out)
            return {"step": state.step, "eval_loss": None, "rule": "last step"}
        if self.rank == 0:
            copy_into(chosen, out)
        return {"step": state.best_step, "eval_loss": state.best_loss, "rule": "lowest held-out loss"}
