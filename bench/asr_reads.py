"""Packed vs alone Whisper reads of a run's rows: how often does packing reject a row by mistake?

    python -m bench.asr_reads RUN [--max-cer 0.35] [--rows N] [--all]

Reads the rows of a filtered RUN twice with the embedded English tiny.en: packed (as the filter
job does, ``batch_size`` rows a call) and each row alone in its window. By default only the rows
whose stored transcript fails ``--max-cer`` (the rows the filter rejected for CER, or that an eval
scored above it) are read, which is where a wrong read costs a row; ``--all`` reads every row.
Prints, over those rows: how many each read passes, how many pass alone but not packed, which
read is better how often, the mean and median WER of each read and of the better one, the time
of the alone reads, and the worst packed reads beside their alone reads.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def load_rows(run_path: Path, max_cer: float, every: bool, limit: int | None) -> list[dict]:
    from engine.audio import from_flac
    from manifests import RunDir, read_sample

    run = RunDir(run_path)
    rows = [r for r in run.read_manifest().to_pylist() if r.get("cer") is not None and r.get("lang") == "en"]
    if not every:
        rows = [r for r in rows if r["cer"] > max_cer]
    rows = rows[:limit] if limit else rows
    for row in rows:
        row["wav"] = from_flac(read_sample(run.path / row["shard"], row["offset"])["flac"])[0]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--max-cer", type=float, default=0.35)
    parser.add_argument("--rows", type=int, default=None, help="at most this many rows")
    parser.add_argument("--all", action="store_true", help="every scored English row, not only those above --max-cer")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per packed call (the filter job's default)")
    args = parser.parse_args()

    from filters.asr import DEFAULT_ASR, load_asr
    from filters.cer import error_rate

    rows = load_rows(args.run, args.max_cer, args.all, args.rows)
    if not rows:
        raise SystemExit(f"{args.run}: no scored English rows to read")
    asr = load_asr({**DEFAULT_ASR["en"], "cpu_threads": 2})
    wavs = [r["wav"] for r in rows]
    start = time.perf_counter()
    packed = [t for k in range(0, len(wavs), args.batch_size) for t in asr.transcribe(wavs[k:k + args.batch_size], "en")]
    packed_s = time.perf_counter() - start
    start = time.perf_counter()
    alone = asr.transcribe_alone(wavs, "en")
    alone_s = time.perf_counter() - start

    p = np.array([error_rate(r["text"], t, "en") for r, t in zip(rows, packed)])
    a = np.array([error_rate(r["text"], t, "en") for r, t in zip(rows, alone)])
    best = np.minimum(p, a)
    ok = args.max_cer
    print(f"{args.run}: {len(rows)} rows ({'all scored' if args.all else f'stored CER > {ok}'})")
    print(f"packed reads: {packed_s:.0f} s ({packed_s / len(rows):.2f} s a row); alone: {alone_s:.0f} s "
          f"({alone_s / len(rows):.2f} s a row)")
    print(f"pass CER <= {ok}: packed {(p <= ok).sum()}, alone {(a <= ok).sum()}, better read {(best <= ok).sum()}; "
          f"alone but not packed {((a <= ok) & (p > ok)).sum()}")
    print(f"alone read better for {(a < p).sum()} rows, worse for {(a > p).sum()}, equal for {(a == p).sum()}")
    for name, x in (("packed", p), ("alone", a), ("better", best)):
        print(f"WER {name:6s} mean {x.mean():.3f} median {np.median(x):.3f} max {x.max():.2f}")
    for k in np.argsort(-p)[:8]:
        print(f"  {p[k]:5.2f} {a[k]:5.2f} | {rows[k]['text']} | packed: {packed[k][:70]} | alone: {alone[k][:70]}")


if __name__ == "__main__":
    main()
