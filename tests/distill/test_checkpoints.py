"""distill.checkpoints, distill.exporter, distill.metrics: the training state as checkpoints save
it, the checkpoint dir, best-step tracking, exports into a STUDENT dir, the metrics log's trim."""
from __future__ import annotations

import json

import pytest

from distill.checkpoints import CheckpointDir, TrainState, read_stamp
from distill.exporter import BestTracker
from distill.metrics import MetricsLog


def test_the_state_saves_the_keys_checkpoints_always_had():
    state = TrainState(step=7, epoch=1, pack=3, wall_s=2.5, best_loss=1.25, best_step=4)
    assert state.as_dict() == {"step": 7, "epoch": 1, "pack": 3, "tokens": 0, "wall_s": 2.5,
                               "best_loss": 1.25, "best_step": 4}
    assert list(TrainState().as_dict()) == ["step", "epoch", "pack", "tokens", "wall_s", "best_loss",
                                            "best_step"]
    resumed = TrainState()
    resumed.restore(state.as_dict())
    assert resumed == state
    old = TrainState()  # a checkpoint written before best-step export
    old.restore({"step": 50, "epoch": 2, "pack": 9, "tokens": 0, "wall_s": 10.0})
    assert (old.step, old.epoch, old.pack, old.best_loss, old.best_step) == (50, 2, 9, None, 0)


def test_commit_moves_latest_and_keeps_the_newest_steps(tmp_path):
    ckpts = CheckpointDir(tmp_path / "checkpoints")
    assert ckpts.latest() is None
    for step in (4, 8, 12):
        (ckpts.root / ckpts.tag(step)).mkdir(parents=True)
        ckpts.commit(ckpts.tag(step), {"step": step}, keep=2)
        assert ckpts.latest() == f"step-{step:07d}"
    assert sorted(p.name for p in ckpts.root.iterdir()) == ["latest", "step-0000008", "step-0000012"]
    assert read_stamp(ckpts.root / "step-0000012") == {"step": 12}
    assert read_stamp(ckpts.root / "step-0000004") is None


def test_best_tracker_keeps_the_recorded_best_until_a_checkpoint_records_a_new_one(tmp_path):
    state = TrainState()
    best = BestTracker(tmp_path, state, enabled=True)
    assert best.chosen() is None and best.is_new_best(9.0)
    state.step = 8
    assert best.record(2.0) == tmp_path / "best-0000008"
    (tmp_path / "best-0000008").mkdir()
    best.drop_unrecorded()  # the checkpoint of step 8 recorded it
    assert not best.is_new_best(2.0) and not best.is_new_best(2.5) and best.is_new_best(1.5)
    state.step = 16
    best.record(1.5)
    (tmp_path / "best-0000016").mkdir()
    # Killed before step 16's checkpoint: the resumed state names step 8 again.
    resumed = TrainState()
    resumed.restore({"step": 8, "best_loss": 2.0, "best_step": 8})
    BestTracker(tmp_path, resumed, enabled=True).drop_unrecorded()
    assert [p.name for p in tmp_path.iterdir()] == ["best-0000008"]
    assert BestTracker(tmp_path, resumed, enabled=True).chosen() == tmp_path / "best-0000008"
    assert BestTracker(tmp_path, resumed, enabled=False).chosen() is None  # train.export: last
    assert not BestTracker(tmp_path, TrainState(), enabled=False).is_new_best(0.1)


def test_export_into_keeps_what_else_the_dir_holds(tmp_path):
    from engine.models import build_student, load_student
    from engine.models.export import EXPORT_TMP, copy_into, export_into

    out = tmp_path / "STUDENT"
    (out / "checkpoints").mkdir(parents=True)
    (out / "train.json").write_text("{}")
    first = build_student("step1", "tiny", seed=0, num_hidden_layers=1)
    export_into(first, out)
    second = build_student("step1", "tiny", seed=1, num_hidden_layers=1)
    export_into(second, tmp_path / "best")
    copy_into(tmp_path / "best", out)
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "best" / "model.safetensors").read_bytes()
    assert (out / "checkpoints").is_dir() and (out / "train.json").read_text() == "{}"
    assert not (out / EXPORT_TMP).exists()
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 1
    assert load_student(out).config.num_hidden_layers == 1


def test_trim_drops_lines_past_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path / "logs", writer=True)
    log.open({"logging": {"tensorboard": False, "wandb": None}})
    for step in (1, 2, 3):
        log.log(step, {"loss": 1.0 / step, "acc_vq02": None})
    log.log(2, {"eval_loss": 0.5})
    log.trim(2)
    lines = [json.loads(x) for x in log.path.read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 2, "eval_loss": 0.5}]
    assert log.last() == {"step": 2, "loss": 0.5, "eval_loss": 0.5}
    silent = MetricsLog(tmp_path / "other", writer=False)
    silent.open({"logging": {"tensorboard": True, "wandb": None}})
    silent.log(1, {"loss": 1.0})
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("seen", [[], ["best-0000004"]])
def test_drop_unrecorded_without_a_best_removes_every_best_dir(tmp_path, seen):
    for name in seen:
        (tmp_path / name).mkdir()
    BestTracker(tmp_path, TrainState(step=4), enabled=True).drop_unrecorded()
    assert not list(tmp_path.glob("best-*"))
