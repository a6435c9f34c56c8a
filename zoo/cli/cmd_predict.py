"""`zoo predict`."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="(not available yet in this build)")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.errors import ZooError

    raise ZooError("'zoo predict' is not available in this build yet")
