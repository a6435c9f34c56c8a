"""`zoo data build NAME` and `zoo data list`: the built-in dataset catalogue (zoo.data.catalogue)."""

from __future__ import annotations

from tabulate import tabulate


def add_data_parsers(dsub) -> None:
    b = dsub.add_parser("build", help="compute a catalogue dataset with a real electronic-structure code")
    b.add_argument("name", help="catalogue name, e.g. a-hfo2, md17-h2o (see `zoo data list`)")
    b.add_argument("--size", choices=["small", "medium", "paper"], default=None, help="default: small")
    b.add_argument("--engine", default=None,
                   help="build with another engine (tblite, pyscf, cp2k), by the entry's recipe for it (a-hfo2, "
                        "a-hfox, a-ptge, a-gst with cp2k: the seed's level of theory, per-image blocks); stored "
                        "beside the default build as NAME+ENGINE")
    b.add_argument("--jobs", type=int, default=1, help="structures computed in parallel (processes)")
    b.add_argument("--cache", default=None, help="cache directory (default: $ZOO_CACHE or ~/.cache/zoo/datasets)")
    b.add_argument("--overwrite", action="store_true", help="rebuild even if the dataset exists")
    b.add_argument("--unfold", action="store_true",
                   help="periodic sets: explicit per-image blocks from a supercell run (no Gamma folding; slower)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)
    ls = dsub.add_parser("list", help="the catalogue: sizes, engines, cutoffs, what is built, spectrum mode")
    ls.add_argument("--cache", default=None, help="cache directory (default: $ZOO_CACHE or ~/.cache/zoo/datasets)")
    ls.set_defaults(func=run_list)
    st = dsub.add_parser("stats", help="structure statistics of a built dataset: coordination, shortest distances, density")
    st.add_argument("name", help="catalogue name (built) or dataset directory")
    st.add_argument("--bond-cut", type=float, default=None, help="bond length cut in A (default: the entry's)")
    st.add_argument("--cache", default=None, help="cache directory (default: $ZOO_CACHE or ~/.cache/zoo/datasets)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=run_stats)


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


def run_stats(args) -> int:
    import json

    from zoo.cli.cmd_data import resolve_dataset_path
    from zoo.data.catalogue import CATALOGUE, split_variant, structure_stats
    from zoo.data.format import Dataset
    from zoo.errors import ZooError

    path = resolve_dataset_path(args.name, args.cache)
    bond_cut = args.bond_cut
    if bond_cut is None:
        entry = CATALOGUE.get(split_variant(args.name)[0].split("@")[0])
        bond_cut = entry.bond_cut if entry and entry.bond_cut else (3.0 if entry is None or entry.periodic else 1.6)
    ds = Dataset.open(path)
    out = {}
    for split, names in ds.card.splits.items():
        for n in names:
            out[n] = {"split": split, **structure_stats(ds.read(n).structure, bond_cut)}
    if not out:
        raise ZooError(f"{path}: the dataset has no structures")
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    rows = [{"structure": n, "split": s["split"], "atoms": sum(sum(h.values()) for h in s["cn_hist"].values()),
             "g/cm3": s["density_g_cm3"],
             "coordination (mean)": ", ".join(f"{k} {v:.2f}" for k, v in s["cn_mean"].items()),
             "shortest (A)": ", ".join(f"{k} {v:.2f}" for k, v in s["dmin"].items())} for n, s in out.items()]
    print(f"{ds.card.name}: bonds shorter than {bond_cut} A")
    print(tabulate(rows, headers="keys"))
    return 0
