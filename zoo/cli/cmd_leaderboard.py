"""`zoo leaderboard DATASET` (one dataset, seeds aggregated) and `zoo leaderboard --compare` (models x datasets)."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("leaderboard", help="print a dataset's leaderboard, or the models x datasets comparison",
                       description="One dataset: runs that differ only by seed are aggregated (mean ± std, n); the "
                                   "best value is marked within each comparison class (dataset recipe, budget) among "
                                   "default-preset runs. --compare: models x datasets over every CSV in the "
                                   "leaderboard directory; --write regenerates its README.md and charts.")
    p.add_argument("dataset", nargs="?", help="dataset name (leaderboards/<dataset>.csv) or a CSV path")
    p.add_argument("--sort", default=None, metavar="COL", help="sort by this column (ascending; errors first best)")
    p.add_argument("--format", default="md", choices=["md", "csv"])
    p.add_argument("--all", action="store_true", help="every column, not just the summary")
    p.add_argument("--runs", action="store_true", help="one line per run instead of per configuration")
    p.add_argument("--compare", action="store_true", help="models x datasets over every leaderboard CSV")
    p.add_argument("--metric", default="total", metavar="NAME",
                   help="--compare figure: total, node, edge, eig_mae, eig_mae_occ, eig_mae_ef2 or a column name")
    p.add_argument("--write", action="store_true",
                   help="with --compare: regenerate <leaderboard-dir>/README.md and its PNG charts")
    p.add_argument("--runs-dir", default="runs", help="run folders, for the parity plots of --write")
    p.add_argument("--leaderboard-dir", default="leaderboards")
    p.set_defaults(func=run)


def run(args) -> int:
    import shlex
    from pathlib import Path

    from zoo.errors import ZooError

    if args.compare:
        if args.dataset:
            raise ZooError("zoo leaderboard --compare covers every dataset; give no DATASET")
        if args.write:
            from zoo.bench.reports import write_comparison

            command = "zoo leaderboard --compare --write"
            if args.leaderboard_dir != "leaderboards":
                command += f" --leaderboard-dir {shlex.quote(str(args.leaderboard_dir))}"
            if args.runs_dir != "runs":
                command += f" --runs-dir {shlex.quote(str(args.runs_dir))}"
            for path in write_comparison(args.leaderboard_dir, runs_dir=args.runs_dir, command=command):
                print(path)
            return 0
        from zoo.bench.leaderboard import build_comparison, render_comparison

        print(render_comparison(build_comparison(args.leaderboard_dir, args.metric), fmt=args.format))
        return 0
    if args.write:
        raise ZooError("--write goes with --compare")
    if not args.dataset:
        raise ZooError("zoo leaderboard: name a DATASET, or pass --compare")
    from zoo.bench.leaderboard import leaderboard_path, render

    path = Path(args.dataset)
    if not (path.suffix == ".csv" and path.is_file()):
        path = leaderboard_path(args.dataset, args.leaderboard_dir)
    print(render(path, sort=args.sort, fmt=args.format, all_columns=args.all, runs=args.runs))
    return 0
