"""`zoo data ...`: dataset inspection (info), and the groups other modules add
(build/list from the catalogue, import/export, partition-info)."""

from __future__ import annotations

import importlib
import json

from tabulate import tabulate

# modules that add `zoo data` sub-commands: each has add_data_parsers(data_subparsers)
DATA_COMMAND_MODULES: list[str] = ["zoo.cli.cmd_catalogue", "zoo.cli.cmd_partition", "zoo.cli.cmd_import", "zoo.cli.cmd_check"]


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="build, import, inspect datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    info = dsub.add_parser("info", help="the card and per-structure atoms / edges / non-zeros")
    info.add_argument("path", help="dataset directory (or a catalogue name once built)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=run_info)
    st = dsub.add_parser("structure", help="write a catalogue structure (no labels computed) or a supercell of a file",
                         description="NAME is a catalogue entry (its recipe's cell for --split, e.g. the 3,000-atom "
                                     "a-HfO2 melt-quench with --size paper) or a structure file; --repeat makes a "
                                     "supercell of either.")
    st.add_argument("name", help="catalogue name (a-hfo2, a-ptge, a-gst, c-hfo2, ...) or a structure file")
    st.add_argument("--size", choices=["small", "medium", "paper"], default=None, help="catalogue size (default: small)")
    st.add_argument("--split", default="test", help="which split's cell of the catalogue entry (default: test)")
    st.add_argument("--index", type=int, default=0, help="which cell of that split (default: 0)")
    st.add_argument("--repeat", default=None, metavar="A,B,C", help="replicate the cell A x B x C times")
    st.add_argument("-o", "--output", required=True, help="output structure file (.extxyz by default; .cif, .vasp, ...)")
    st.set_defaults(func=run_structure)
    for mod in DATA_COMMAND_MODULES:
        # Only a sub-command module that is itself absent from this build is skipped. An ImportError
        # raised inside it (a missing dependency, a broken import) propagates as itself: swallowing it
        # used to drop the sub-command, so argparse answered "invalid choice" and hid the real fault.
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        m.add_data_parsers(dsub)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])


def resolve_dataset_path(name_or_path: str, cache: str | None = None):
    """A dataset directory, or a built catalogue dataset by name (in `cache`, default the usual one)."""
    from pathlib import Path

    path = Path(name_or_path)
    if path.exists():
        return path
    try:
        from zoo.data.catalogue import dataset_path
    except ModuleNotFoundError as exc:  # a build without the catalogue; an ImportError inside it propagates
        if exc.name != "zoo.data.catalogue":
            raise
        return path
    return dataset_path(name_or_path, cache=cache)


def run_info(args) -> int:
    from zoo.data.format import Dataset

    ds = Dataset.open(resolve_dataset_path(args.path), validate=False)
    card = ds.card.to_json()
    per = []
    for name, s in ds.card.structures.items():
        split = ",".join(k for k, v in ds.card.splits.items() if name in v)
        per.append({"name": name, "split": split, "atoms": s.get("n_atoms"), "edges": s.get("n_edges"),
                    "nnz_h": s.get("nnz_h")})
    if args.json:
        print(json.dumps({"card": card, "hash": ds.card.hash(), "structures": per}, indent=1))
        return 0
    lot = ds.card.level_of_theory
    print(f"dataset  {ds.name}  ({ds.path})")
    print(f"theory   {', '.join(f'{k}={v}' for k, v in lot.items())}")
    print(f"basis    {ds.card.basis.name}: " + ", ".join(f"{s}={ls}" for s, ls in ds.card.basis.to_json()['shells'].items()))
    print(f"cutoff   {ds.card.cutoff} A   images: {ds.card.image_convention}   overlap: {ds.card.has_overlap}   "
          f"spinful: {ds.card.spinful}   hash: {ds.card.hash()}")
    print(f"splits   " + ", ".join(f"{k}: {len(v)}" for k, v in ds.card.splits.items()))
    print(tabulate(per, headers="keys"))
    return 0


def run_structure(args) -> int:
    """`zoo data structure NAME|FILE [--size S] [--repeat a,b,c] -o FILE`."""
    import time
    from pathlib import Path

    from zoo.data.big import catalogue_structure, describe, parse_repeat, repeat_structure, write_structure
    from zoo.data.structure_io import read_structure

    t0 = time.time()
    reps = parse_repeat(args.repeat) if args.repeat else None  # a bad --repeat fails before minutes of melt-quench
    if Path(args.name).is_file():
        st = read_structure(args.name)
    else:
        st = catalogue_structure(args.name, args.size, args.split, args.index)
    if reps:
        st = repeat_structure(st, reps, args.name)
    out = write_structure(st, args.output)
    print(f"{out}: {describe(st)}  ({time.time() - t0:.1f} s)")
    return 0
