"""CER per language and dialect, and seconds per utterance, of the packaged Whisper models.

    python -m bench.asr_multilingual RUN [--models tiny.en base] [--threads 2] [--limit 40] [--pack]

RUN is a synthesized run (e.g. ``stepforge synthesize pipelines/configs/builtin.yaml --out RUN``).
Every speech row is transcribed one utterance per 30 s window (the seed-tts-eval protocol, greedy)
by each model that can read its language (``--pack``: the filter job's packed windows instead), and scored with :func:`filters.cer.error_rate` (the
seed-tts-eval normalisation). Timings include no model load; one model at a time on ``--threads``.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np


def load_rows(run_path: str, limit: int) -> list[dict]:
    """Speech rows of the run with their audio (float32 [samples] at 16 kHz), at most ``limit``
    per (lang, dialect)."""
    from engine.audio import from_flac
    from manifests import RunDir, read_sample

    run = RunDir(run_path)
    rows, seen = [], defaultdict(int)
    for row in run.journal_table().to_pylist():
        key = (row["lang"], row["dialect"])
        if row["status"] != "ok" or row["style"] != "speech" or seen[key] >= limit:
            continue
        seen[key] += 1
        wav, _ = from_flac(read_sample(run.path / row["shard"], int(row["offset"]))["flac"])
        rows.append({**row, "audio": wav})
    return rows


def score(model: str, rows: list[dict], threads: int, pack: bool = False, max_cer: float = 0.35) -> dict:
    """{(lang, dialect): (mean CER, median CER, share <= max_cer, seconds per utterance, n)} for
    the rows ``model`` can read."""
    from filters.cer import error_rate
    from filters.whisper import WhisperASR

    asr = WhisperASR(model, cpu_threads=threads, batch_size=1, pack=pack)
    groups = defaultdict(list)
    for row in rows:
        if asr.supports(row["lang"]):
            groups[(row["lang"], row["dialect"])].append(row)
    out = {}
    for key, group in sorted(groups.items()):
        start = time.perf_counter()
        texts = asr.transcribe([r["audio"] for r in group], key[0])
        per_utt = (time.perf_counter() - start) / len(group)
        cers = [error_rate(r["text"], t, key[0]) for r, t in zip(group, texts)]
        cers = np.array(cers)
        out[key] = (float(np.mean(cers)), float(np.median(cers)), float(np.mean(cers <= max_cer)), per_utt, len(group))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=40, help="rows per (lang, dialect)")
    parser.add_argument("--langs", nargs="+", default=None, help="only these languages")
    parser.add_argument("--pack", action="store_true")
    parser.add_argument("--max-cer", type=float, default=0.35)
    args = parser.parse_args()
    rows = [r for r in load_rows(args.run, args.limit) if args.langs is None or r["lang"] in args.langs]
    print(f"{'model':<10}{'lang':<6}{'dialect':<20}{'n':>4}{'mean CER':>10}{'median':>8}"
          f"{f'<= {args.max_cer}':>9}{'s / utt':>9}")
    for model in args.models:
        for (lang, dialect), (mean, median, share, per_utt, n) in score(
                model, rows, args.threads, args.pack, args.max_cer).items():
            print(f"{model:<10}{lang:<6}{dialect:<20}{n:>4}{mean:>10.3f}{median:>8.3f}{share:>9.0%}{per_utt:>9.2f}")


if __name__ == "__main__":
    main()
