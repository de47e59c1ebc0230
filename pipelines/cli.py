"""The ``stepforge`` command line.

    stepforge synthesize SPEC.yaml --out RUN [--teacher reference] [--limit N]
    stepforge eval STUDENT --prompts PROMPTS.jsonl --out EVAL
    stepforge serve STUDENT [--host 127.0.0.1] [--port 8000]
    stepforge codec train|encode|decode ...
    stepforge verify RUN [--repair]

Each subcommand lives in ``pipelines/commands/<name>.py`` with ``register(subparsers)``, which adds
its parser and sets ``func``. Bad input (a file, flag, config value or run directory that cannot be
used) raises ``manifests.errors.UserError`` or a subclass: the CLI prints it as one line and exits 2.
Any other exception is a bug: it propagates with its traceback (exit 1). ``STEPFORGE_DEBUG=1`` shows
the traceback of a UserError too.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from manifests.errors import UserError, storage_error

COMMANDS = ("synthesize", "filter", "distill", "eval", "serve", "codec", "verify", "run", "report", "runs")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepforge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pipelines.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``stepforge`` command; returns its exit status (2: bad input, 130: interrupted).

    Args:
        argv: list[str], the arguments after ``stepforge`` (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        if os.environ.get("STEPFORGE_DEBUG"):
            raise
        print(f"stepforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only or denied where no writer named the file
        error = storage_error(exc)
        if error is None or os.environ.get("STEPFORGE_DEBUG"):
            raise
        print(f"stepforge {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stepforge {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
