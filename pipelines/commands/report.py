"""``stepforge report RUN``: write RUN/report.html, a self-contained page (plots and audio under
RUN/report/) with the run's yields, scores, rejections, durations, throughput, training curve,
student-vs-teacher table and audio samples."""
from __future__ import annotations

from pipelines.report import write_report


def register(sub) -> None:
    p = sub.add_parser("report", help="write RUN/report.html", description=__doc__.split("\n")[0])
    p.add_argument("run", help="run directory")
    p.add_argument("--student", help="student dir for the training curve (default: RUN/student when present)")
    p.add_argument("--eval", dest="eval_dir",
                   help="eval dir or eval.json for the student-vs-teacher table (default: RUN/eval, then "
                        "STUDENT/eval.json)")
    p.add_argument("--compare", action="append", default=[], metavar="STUDENT|EVAL",
                   help="another student dir or eval dir to compare with the run's students (repeatable)")
    p.set_defaults(func=main)


def main(args) -> int:
    path = write_report(args.run, student=args.student, eval_dir=args.eval_dir, compare=args.compare)
    print(f"report: {path}")
    return 0
