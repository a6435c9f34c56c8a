"""`zoo data build NAME` and `zoo data list`: the built-in dataset catalogue (zoo.data.catalogue)."""

from __future__ import annotations

from tabulate import tabulate


def add_data_parsers(dsub) -> None:
    b = dsub.add_parser("build", help="compute a catalogue dataset with a real electronic-structure code")
    b.add_argument("name", help="catalogue name, e.g. a-hfo2, md17-h2o (see `zoo data list`)")
    b.add_argument("--size", choices=["small", "medium", "paper"], default=None, help="default: small")
    b.add_argument("--engine", default=None, help="override the entry's engine (tblite, pyscf)")
    b.add_argument("--jobs", type=int, default=1, help="structures computed in parallel (processes)")
    b.add_argument("--cache", default=None, help="cache directory (default: $ZOO_CACHE or ~/.cache/zoo/datasets)")
    b.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    b.add_argument("--unfold", action="store_true",
                   help="periodic sets: explicit per-image blocks from a supercell run (no Gamma folding; slower)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)
    ls = dsub.add_parser("list", help="the catalogue: sizes, engines, cutoffs, and what is built")
    ls.add_argument("--cache", default=None, help="cache directory (default: $ZOO_CACHE or ~/.cache/zoo/datasets)")
    ls.set_defaults(func=run_list)


def run_build(args) -> int:
    import time

    from zoo.data.catalogue import build

    t0 = time.time()
    path = build(args.name, args.size, cache=args.cache, jobs=args.jobs, engine=args.engine, progress=not args.quiet,
                 overwrite=args.overwrite, unfold=args.unfold)
    print(f"{args.name}: {path}  ({time.time() - t0:.1f} s)")
    return 0


def run_list(args) -> int:
    from zoo.data.catalogue import cache_dir, catalogue_table

    print(f"cache: {cache_dir(args.cache)}")
    print(tabulate(catalogue_table(args.cache), headers="keys"))
    return 0
