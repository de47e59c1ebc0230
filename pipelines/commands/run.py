"""``stepforge run PIPELINE.yaml --out RUN``: synthesize -> filter -> distill -> eval -> report,
resumable and incremental; a rerun runs only the stages whose fingerprint changed (run.json).

Exit status: 0 done; 1 a bug (traceback); 2 bad input (one line per problem); 3 RUN is in use by
another run (without --wait); 4 a stage failed (the ledger records which; rerun to resume);
130 interrupted (rerun to resume).
"""
from __future__ import annotations

import sys
import traceback

from manifests import RunDir
from manifests.errors import UserError, storage_error
from pipelines.pipeline_config import load_pipeline
from pipelines.runner import RunBusy, run_pipeline

EXIT_BUSY = 3
EXIT_STAGE_FAILED = 4


def register(sub) -> None:
    p = sub.add_parser("run", help="a whole pipeline (synthesize, filter, distill, eval, report) on one run",
                       description=__doc__.split("\n")[0])
    p.add_argument("pipeline", help="pipeline YAML (see pipelines/configs/pipeline_tiny.yaml)")
    p.add_argument("--out", required=True, help="run directory (created, resumed or grown)")
    p.add_argument("--wait", action="store_true", help="wait while another process holds RUN instead of exiting 3")
    p.add_argument("--ray-address", default=None, help="run every stage on this Ray cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=main)


def main(args) -> int:
    pipeline = load_pipeline(args.pipeline)
    try:
        ledger = run_pipeline(pipeline, RunDir(args.out), ray_address=args.ray_address,
                              progress=not args.no_progress, wait=args.wait)
    except RunBusy as exc:
        print(f"stepforge run: busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a stage's own bad-input error stays exit 2 (cli); others are stage failures
        if isinstance(exc, UserError) or storage_error(exc) is not None:  # a full disk too: one line, exit 2
            raise
        traceback.print_exc()
        print(f"stepforge run: a stage failed ({type(exc).__name__}); see {args.out}/run.json "
              "\"pipeline\"; rerun the same command to resume", file=sys.stderr)
        return EXIT_STAGE_FAILED
    for name, entry in ledger.items():
        print(f"run: {name}: {entry.get('status')} ({entry.get('did')})")
    print(f"run: {args.out} (ledger in {args.out}/run.json \"pipeline\")")
    return 0
