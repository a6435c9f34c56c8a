"""How far a GFN1-xTB relaxation moves an amorphous recipe's cell, and at what cost per step.

    python benchmarks/gfn1_relaxation.py a-ptge --atoms 192 --seed 31 --steps 45

Builds one cell with the recipe's classical stage only (`gfn1_steps=0`), then runs fixed-cell
FIRE with GFN1-xTB forces (tblite, as `zoo.data.covalent.gfn1_relax`) and prints, every
`--every` steps, the energy change, the largest force, the seconds per step and the
coordination statistics. docs/datasets.md quotes its a-ptge output. Run with OpenBLAS preloaded
(LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

RECIPES = {"a-ptge": ("amorphous_ptge2", 2.9), "a-gst": ("amorphous_gst", 3.2)}


def main(argv: list[str] | None = None) -> int:
    from ase.optimize import FIRE
    from tblite.ase import TBLite

    from zoo.data import covalent

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", choices=sorted(RECIPES))
    ap.add_argument("--atoms", type=int, default=192, help="a-ptge: atoms; a-gst: formula units (7 atoms each)")
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--steps", type=int, default=45)
    ap.add_argument("--every", type=int, default=5)
    args = ap.parse_args(argv)
    fn, bond_cut = RECIPES[args.recipe]
    t0 = time.perf_counter()
    atoms = getattr(covalent, fn)(args.atoms, args.seed, gfn1_steps=0)
    print(f"classical stage: {time.perf_counter() - t0:.0f} s, {len(atoms)} atoms", flush=True)
    atoms.calc = TBLite(method="GFN1-xTB", electronic_temperature=1000.0, max_iterations=300, verbosity=0)
    opt = FIRE(atoms, logfile=None)
    e0, t1 = None, time.perf_counter()
    for k, _ in enumerate(opt.irun(fmax=0.05, steps=args.steps)):
        if k % args.every:
            continue
        e = atoms.get_potential_energy()
        e0 = e if e0 is None else e0
        stats = covalent.coordination_stats(atoms, bond_cut)
        pairs = {p: d for p, d in stats["dmin"].items()}
        print(f"step {k:4d}  E-E0 {e - e0:9.3f} eV  fmax {np.linalg.norm(atoms.get_forces(), axis=1).max():6.3f} eV/A  "
              f"{(time.perf_counter() - t1) / (k + 1):5.1f} s/step  CN {stats['cn_mean']}  dmin {pairs}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
