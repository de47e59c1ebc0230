"""``stepforge eval STUDENT --prompts PROMPTS.jsonl --out EVAL``: generate held-out prompts with a
distilled student through the LM engine, decode them with the codec, run the teacher's filters,
and compare the student's CER/WER, SS and accept rate with the teacher's (EVAL/eval.json).

--samples K generates each prompt K times (seeded) and --teacher SPEC has the teacher voice the
same prompts and seeds in the same eval; eval.json's "stats" gives each mean with its 95% CI and
the student/teacher ratio with its own (a paired bootstrap over prompts).

Resumable: a rerun generates only prompts without a manifest row; an EVAL made for another
student, other prompts or another engine / --max-seconds / sampling is refused.

--list FILE.lst (repeatable, with or without --prompts) adds a seed-tts-eval test list: each
``utt|prompt_text|prompt_wav|target_text`` line is a clone prompt, and eval.json["lists"] gives
the list's WER/CER (mean of per-utterance rates, seed-tts-eval's normalisation) and SS.
"""
from __future__ import annotations

from pipelines.eval_lists import format_lists
from pipelines.eval_report import format_table
from pipelines.eval_stats import format_stats
from pipelines.evaluate import evaluate_student


def register(sub) -> None:
    p = sub.add_parser("eval", help="score a distilled student against its teacher",
                       description=__doc__.split("\n")[0])
    p.add_argument("student", help="student checkpoint dir (written by distill export)")
    p.add_argument("--prompts", default=None,
                   help="JSONL: one task per line (engine Task fields) with optional teacher scores")
    p.add_argument("--list", action="append", default=[], metavar="FILE.lst[:LANG]",
                   help="a seed-tts-eval test list (utt|prompt_text|prompt_wav|target_text, wavs relative to "
                        "it; LANG default: the texts'); repeatable; eval.json gives each list's WER/CER and SS "
                        "as seed-tts-eval computes them")
    p.add_argument("--out", required=True, help="eval run directory (created, or resumed)")
    p.add_argument("--engine", default="auto", choices=("auto", "torch", "vllm"),
                   help="LM engine (auto: vllm on CUDA or for a RoPE student when installed, else torch)")
    p.add_argument("--filter-config", default=None,
                   help="filter YAML over the teacher run's thresholds (default: those, else the defaults)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N prompts")
    p.add_argument("--max-seconds", type=float, default=None, help="audio length cap per prompt (default 30)")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default 0.7, upstream's; 0 = greedy)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest ids (default: all)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus mass (default 1: off)")
    p.add_argument("--codec", default="melvq",
                   help="codec that decodes the student's tokens: melvq (shipped), stepaudio:MODEL_PATH, or the weights file its "
                        "corpus was tokenized with (checked against STUDENT/train.json)")
    p.add_argument("--samples", type=int, default=1,
                   help="seeded generations per prompt (default 1); eval.json gives means with 95%% CIs over prompts")
    p.add_argument("--teacher", default=None,
                   help="teacher spec (e.g. reference) that voices the same prompts and seeds through the codec in "
                        "this eval (EVAL/teacher), the ratio's denominator; default: the prompts' corpus scores")
    p.add_argument("--ray-address", default=None, help="join this Ray cluster instead of starting one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args) -> int:
    report = evaluate_student(args.student, args.prompts, args.out, engine=args.engine,
                              filter_config=args.filter_config, limit=args.limit,
                              max_seconds=args.max_seconds, progress=not args.no_progress,
                              sampling={"temperature": args.temperature, "top_k": args.top_k,
                                        "top_p": args.top_p},
                              ray_address=args.ray_address, codec=args.codec, samples=args.samples,
                              teacher=args.teacher, lists=args.list)
    print(format_table(report["aggregate"]))
    if report["lists"]:
        print(format_lists(report["lists"]))
    print(format_stats(report["stats"]))
    print(f"eval: {report['n_prompts']}/{report['n_prompts_in_file']} prompts scored; "
          f"{report['run']}/eval.json")
    return 0
