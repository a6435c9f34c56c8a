"""`zoo data check DATASET [--strict | --repair [--output DIR]] [--json]`: physics validation.

Reports, per structure, non-hermitian H/S blocks, missing reverse edges, blocks beyond the
card's cutoff and S that is not positive definite (see zoo.data.physcheck). Exit code 0 when
every structure passes (or was repaired), 1 when findings remain.
"""

from __future__ import annotations

import json


def add_data_parsers(dsub) -> None:
    p = dsub.add_parser("check", help="physics validation: hermiticity, reverse edges, cutoff, S positive definite")
    p.add_argument("dataset", help="dataset directory or catalogue name")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--strict", action="store_true", help="stop with an error at the first finding")
    mode.add_argument("--repair", action="store_true",
                      help="write a repaired dataset (symmetrize, drop edges beyond the cutoff, add missing reverse "
                           "edges); in place unless --output is given")
    p.add_argument("--output", "-o", default=None, help="with --repair: write the repaired dataset here")
    p.add_argument("--tol", type=float, default=None, help="hermiticity tolerance (Hartree; default 1e-6)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_check)


def _print(reports, as_json: bool, header: str = "") -> None:
    if as_json:
        return
    if header:
        print(header)
    for r in reports:
        print(f"  {r.name}: {r.summary()}")


def run_check(args) -> int:
    from zoo.cli.cmd_data import resolve_dataset_path
    from zoo.data.physcheck import DEFAULT_TOL, check_dataset, repair_dataset
    from zoo.errors import ConfigError

    tol = DEFAULT_TOL if args.tol is None else args.tol
    if not tol >= 0:
        raise ConfigError(f"--tol must be a non-negative number, got {args.tol}")
    if args.output is not None and not args.repair:
        raise ConfigError("--output only makes sense with --repair")
    path = resolve_dataset_path(args.dataset)
    if args.repair:
        out, before, after = repair_dataset(path, args.output, tol)
        n_fixed = sum(not r.ok for r in before)
        if args.json:
            print(json.dumps({"dataset": str(out), "repaired": n_fixed,
                              "before": [r.to_json() for r in before], "after": [r.to_json() for r in after]},
                             indent=1, default=float))
        else:
            _print([r for r in before if not r.ok], False,
                   f"repaired {n_fixed} of {len(before)} structures -> {out}")
        return 0
    reports = check_dataset(path, tol, strict=args.strict)
    bad = [r for r in reports if not r.ok]
    if args.json:
        print(json.dumps({"dataset": str(path), "structures": len(reports), "failing": len(bad),
                          "reports": [r.to_json() for r in reports]}, indent=1, default=float))
    else:
        print(f"{len(reports) - len(bad)} of {len(reports)} structures pass the physics check ({path})")
        _print(bad, False)
    return 1 if bad else 0
