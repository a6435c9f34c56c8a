"""`zoo report RUN_DIR`: re-render a run's plots."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="re-render a run folder's plots (parity, error vs distance, spectra)")
    p.add_argument("run_dir")
    p.set_defaults(func=run)


def run(args) -> int:
    from zoo.bench.reports import render

    for path in render(args.run_dir):
        print(path)
    return 0
