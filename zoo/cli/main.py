"""`zoo` entry point. Each command group lives in its own module exposing
`add_parser(subparsers)` which registers sub-commands with `set_defaults(func=...)`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from zoo import __version__
from zoo.errors import ZooError

# command modules, in `zoo --help` order
COMMAND_MODULES = [
    "zoo.cli.cmd_models",
    "zoo.cli.cmd_data",
    "zoo.cli.cmd_bench",
    "zoo.cli.cmd_leaderboard",
    "zoo.cli.cmd_predict",
    "zoo.cli.cmd_perf",
    "zoo.cli.cmd_report",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoo", description="A model zoo for machine-learned electronic Hamiltonians.")
    p.add_argument("--version", action="version", version=f"zoo {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        importlib.import_module(mod).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    # SIGTERM (batch schedulers, `kill`) takes the Ctrl-C path: builds stop their workers, files stay whole
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        rc = args.func(args)
    except ZooError as exc:
        print(f"zoo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `zoo leaderboard ... | head`: the reader left; stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's exit-time flush would raise again
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(rc or 0)


def _terminate_as_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
