"""`zoo leaderboard DATASET`: render a leaderboard CSV."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="print a dataset's leaderboard (best per column marked)")
    p.add_argument("dataset", help="dataset name (leaderboards/<dataset>.csv) or a CSV path")
    p.add_argument("--sort", default=None, metavar="COL", help="sort by this column (ascending; errors first best)")
    p.add_argument("--format", default="md", choices=["md", "csv"])
    p.add_argument("--all", action="store_true", help="every column, not just the summary")
    p.add_argument("--leaderboard-dir", default="leaderboards")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from zoo.bench.leaderboard import leaderboard_path, render

    path = Path(args.dataset)
    if not (path.suffix == ".csv" and path.is_file()):
        path = leaderboard_path(args.dataset, args.leaderboard_dir)
    print(render(path, sort=args.sort, fmt=args.format, all_columns=args.all))
    return 0
