"""`zoo report`."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="(not available yet in this build)")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.errors import ZooError

    raise ZooError("'zoo report' is not available in this build yet")
