"""End to end: `stepforge synthesize` with LM teachers on a tiny exported RoPE student:
``--teacher vllm:DIR`` (vLLM inside the Ray actor) and ``--teacher http:URL`` (a local
OpenAI-compatible server started by the test), into shards whose tokens deinterleave and whose
top-k arrays load."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from engine.audio import from_flac
from engine.tokens import deinterleave
from tests.conftest import CONFIGS, stepforge

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny6.yaml"
    path.write_text((CONFIGS / "tiny.yaml").read_text().replace("count: 12", "count: 6"))
    return path


def check_run(out, rows: int, k: int) -> list[dict]:
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(manifest) == rows
    assert all(r["status"] == "ok" for r in manifest), [r["error"] for r in manifest]
    samples = list(wds.WebDataset(sorted(str(p) for p in (out / "shards").glob("*.tar")),
                                  shardshuffle=False))
    assert len(samples) == rows
    for sample in samples:
        ids = np.load(io.BytesIO(sample["tokens.npy"]))
        vq02, vq06 = deinterleave(ids)  # Step-Audio layout ids, whole 2:3 groups
        assert ids.dtype == np.int32 and len(vq02) and len(vq06) * 2 == len(vq02) * 3
        topk = np.load(io.BytesIO(sample["topk.npz"]))
        assert topk["ids"].shape == topk["logprobs"].shape == (len(ids), k)
        assert topk["ids"].dtype == np.int32 and topk["logprobs"].dtype == np.float16
        wav, sr = from_flac(sample["flac"])
        assert abs(len(wav) / sr - len(ids) / 5 * 0.12) < 0.25
        assert "src.flac" not in sample  # an LM teacher has no source rendering
        meta = json.loads(sample["json"])
        assert meta["teacher_info"]["finish_reason"] in ("stop", "length")
    return manifest


def test_vllm_teacher_in_ray_actors(spec, tiny_rope_dir, tmp_path):
    out = tmp_path / "run"
    teacher = f"vllm:{tiny_rope_dir}?topk=4&max_seconds=2&kv_cache_gib=0.25&max_model_len=2048"
    proc = stepforge("synthesize", spec, "--out", out, "--teacher", teacher, "--limit", "5",
                     "--batch-size", "8", "--no-progress", check=True)
    assert "tasks/s" in proc.stdout
    manifest = check_run(out, 5, 4)
    assert all(r["teacher_id"].startswith("vllm:tiny-rope@") for r in manifest)
    assert json.loads((out / "run.json").read_text())["teacher"].startswith("vllm:tiny-rope@")


def test_http_teacher_against_a_local_server(spec, tiny_rope_dir, tmp_path):
    from engine.lm import TorchEngine
    from tests.engine.openai_server import CompletionServer

    out = tmp_path / "run"
    with CompletionServer(TorchEngine(tiny_rope_dir, num_threads=1)) as server:
        teacher = f"http:{server.url}?topk=3&max_seconds=2"
        proc = stepforge("synthesize", spec, "--out", out, "--teacher", teacher, "--no-progress",
                         check=True)
        assert len(server.requests) == 6 and "6/6" in proc.stdout  # one request per task
    manifest = check_run(out, 6, 3)
    assert all(r["teacher_id"].startswith("http:127.0.0.1:") for r in manifest)
