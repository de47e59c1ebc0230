"""The ``stepforge`` command line.

    stepforge synthesize SPEC.yaml --out RUN [--teacher reference] [--limit N]
    stepforge eval STUDENT --prompts PROMPTS.jsonl --out EVAL
    stepforge codec train|encode|decode ...

Each subcommand lives in ``pipelines/commands/<name>.py`` with ``register(subparsers)``, which adds
its parser and sets ``func``. Expected failures (bad input) raise ``UserError`` or a ValueError
subclass; the CLI prints one line and exits 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("synthesize", "filter", "distill", "eval", "codec")

from manifests.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepforge", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"pipelines.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (UserError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("STEPFORGE_DEBUG"):
            raise
        print(f"stepforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"stepforge {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Run the package module, not this __main__ copy, so the UserError that commands import
    # from pipelines.cli is the one caught above.
    from pipelines.cli import main as package_main

    sys.exit(package_main())
