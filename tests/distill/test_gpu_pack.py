"""bench/gpu_distill.py: the tokens-only copy of a run that travels to a GPU machine trains the
same sequences as the run itself, and a student comes back from its tar parts intact."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from bench import gpu_distill
from distill.data import Corpus, SequenceBuilder, load_sample
from distill.preflight import student_text
from engine.models import build_student, export, load_student
from manifests import RunDir


def sequences(run, config):
    tokenizer, layout = student_text(config, None)
    corpus = Corpus.load([run], SequenceBuilder(layout, tokenizer))
    # keys are RUN_NAME/task: compare by task
    return {r.key.split("/", 1)[1]: corpus.builder.build(r, load_sample(r)).input_ids for r in corpus.rows}, corpus


def test_tokens_only_copy_trains_the_same_sequences(filtered_run, tmp_path):
    thin = tmp_path / "thin"
    gpu_distill.pack(filtered_run, thin)

    before, after = RunDir(filtered_run).current_table(), RunDir(thin).current_table()
    cols = ["id", "attempt", "accepted", "n_tokens", "reject_reason"]
    assert after.select(cols).to_pylist() == before.select(cols).to_pylist()
    assert json.loads((thin / "run.json").read_text())["codec"] == RunDir(filtered_run).info()["codec"]
    for shard in (thin / "shards").glob("*.tar"):
        with tarfile.open(shard) as tar:
            exts = {m.name.split(".", 1)[1] for m in tar.getmembers()}
        assert exts <= set(gpu_distill.KEEP), exts
    size = lambda d: sum(p.stat().st_size for p in (d / "shards").glob("*.tar"))  # noqa: E731
    assert size(thin) < size(filtered_run) / 4

    config = build_student("step1", "tiny", num_hidden_layers=1).config
    want, corpus = sequences(filtered_run, config)
    got, _ = sequences(thin, config)
    assert len(corpus) > 0 and got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]))

    with pytest.raises(SystemExit, match="exists"):
        gpu_distill.pack(filtered_run, thin)


def test_student_parts_unpack_to_the_same_weights(tmp_path):
    model = build_student("step1", "tiny", seed=3, num_hidden_layers=1)
    student = export(model, tmp_path / "student")
    (student / "train.json").write_text(json.dumps({"step": 7}))
    (student / "checkpoints").mkdir()
    (student / "checkpoints" / "big.pt").write_bytes(b"x" * 1000)
    out = tmp_path / "out"
    out.mkdir()
    parts = gpu_distill.write_parts(student, out, "s")
    (out / "gpu_distill.json").write_text(json.dumps({"s": {"parts": parts, "step": 7}}))

    gpu_distill.unpack(out, tmp_path / "back")
    back = tmp_path / "back" / "s"
    assert not (back / "checkpoints").exists() and json.loads((back / "train.json").read_text())["step"] == 7
    loaded = load_student(back)
    assert next(loaded.parameters()).dtype == torch.float32
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value.to(torch.bfloat16).float(), rtol=0, atol=0)
