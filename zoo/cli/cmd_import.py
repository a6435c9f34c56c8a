"""`zoo data import FORMAT SRC DEST --name NAME` and `zoo data export FORMAT DATASET DEST`."""

from __future__ import annotations

import json


def add_data_parsers(dsub) -> None:
    from zoo.data.export import EXPORT_FORMATS
    from zoo.data.importers import list_formats

    p = dsub.add_parser("import", help="convert files written by another code into a zoo dataset")
    p.add_argument("format", choices=list_formats(), help="source format")
    p.add_argument("src", help="source file or directory")
    p.add_argument("dest", help="dataset directory to create")
    p.add_argument("--name", required=True, help="dataset name (stored in the card)")
    p.add_argument("--basis", help="named basis set (e.g. szv-molopt-sr) or JSON {element: shells}, "
                                   "e.g. '{\"Si\": \"1s1p\"}'; needed where the files do not say")
    p.add_argument("--cutoff", type=float, help="drop blocks of atom pairs farther apart than this (A)")
    p.add_argument("--splits", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   help="split fractions for many structures (default 0.8 0.1 0.1; one structure goes to all three)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.add_argument("--energy-unit", help="override the format's energy unit (hartree, eV, Ry)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="format-specific option (value parsed as JSON when it can be), e.g. -o limit=100")
    p.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    p.set_defaults(func=run_import)

    e = dsub.add_parser("export", help="write a zoo dataset in another code's format")
    e.add_argument("format", choices=list(EXPORT_FORMATS), help="target format")
    e.add_argument("dataset", help="dataset directory (or catalogue name)")
    e.add_argument("dest", help="directory to create")
    e.add_argument("--overwrite", action="store_true", help="replace DEST if it exists")
    e.set_defaults(func=run_export)


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_import(args) -> int:
    from zoo.data.importers import import_dataset
    from zoo.errors import ConfigError

    opts: dict = {}
    for kv in args.option:
        if "=" not in kv:
            raise ConfigError(f"--option expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        opts[k.strip().replace("-", "_")] = _value(v)
    if args.basis:
        opts["basis"] = _value(args.basis) if args.basis.lstrip().startswith("{") else args.basis
    if args.energy_unit:
        opts["energy_unit"] = args.energy_unit
    if args.cutoff is not None:
        opts["cutoff"] = args.cutoff
    if args.splits is not None:
        opts["splits"] = args.splits
    ds = import_dataset(args.format, args.src, args.dest, args.name, seed=args.seed, overwrite=args.overwrite, **opts)
    c = ds.card
    print(f"imported {len(ds)} structure(s) from {args.format} into {ds.path}: basis {c.basis.name}, "
          f"images {c.image_convention}, overlap {c.has_overlap}, cutoff {c.cutoff} A, "
          f"splits " + ", ".join(f"{k} {len(v)}" for k, v in c.splits.items()))
    for note in c.provenance.get("notes", []) + [c.provenance.get("splits_note", "")]:
        if note:
            print(f"note: {note}")
    return 0


def run_export(args) -> int:
    from zoo.cli.cmd_data import resolve_dataset_path
    from zoo.data.export import export_dataset
    from zoo.data.format import Dataset

    ds = Dataset.open(resolve_dataset_path(args.dataset))
    out = export_dataset(ds, args.format, args.dest, overwrite=args.overwrite)
    print(f"exported {len(ds)} structure(s) of {ds.name} as {args.format} to {out}")
    return 0
