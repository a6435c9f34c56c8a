"""`zoo perf`."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("perf", help="(not available yet in this build)")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.errors import ZooError

    raise ZooError("'zoo perf' is not available in this build yet")
