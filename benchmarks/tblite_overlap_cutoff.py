"""At which pair cutoff does the truncated GFN1-xTB overlap become positive definite?

    OMP_NUM_THREADS=1 python benchmarks/tblite_overlap_cutoff.py a-ptge       # first test and train cell
    OMP_NUM_THREADS=1 python benchmarks/tblite_overlap_cutoff.py a-gst --structures test-0 --json out.json

The stored blocks of a tblite set hold only pairs within the cutoff, so S(Gamma) assembled from
them is indefinite on every periodic tblite set (docs/datasets.md, "Spectrum mode"). This takes
a cell of the built dataset (or of its catalogue recipe when the dataset is not built), computes
the per-image overlap blocks S_ij(R) of every pair up to --rmax (25 A: beyond it tblite's GFN1
overlap is exactly zero for these elements; Hf-Hf 6e-11 at 18 A, Pt-Pt 6e-10 at 15 A, Ge-Ge 2e-7 at
21 A, so 16-20 A lose nothing visible) with `zoo.data.engines.tblite.overlap_images`
(tblite dimers, no SCF, no supercell), checks them against the stored Gamma-folded blocks (the
sum over images must equal them), and for each cutoff rc keeps the pairs |r_j + R - r_i| < rc:

- s_min at Gamma of S(Gamma) = sum over kept (i, j, R) of S_ij(R) (hermitized, dense);
- s_min over the 2 x 2 x 2 grid k in {0, 1/2}^3 (Gamma of a 2 x 2 x 2 supercell of the cell, so a
  check that positive definiteness holds beyond the one cell), computed from the first cutoff
  where Gamma is positive until the grid is too;
- edges per atom (explicit per-image edges, as `--unfold` stores them);
- the fraction of ||S||_F dropped (and kept, in --json), over all (i, j, R) blocks up to --rmax;
- MiB per structure of H and S blocks in float64 at that cutoff (what a build would store).

and the smallest cutoff at which S is positive definite (lowest eigenvalue above
zoo.data.physcheck.S_MIN_EIG). One process, one thread; ~0.35 ms per atom pair on one core
(a 192-atom a-HfO2 cell to 25 A: ~3 min). docs/datasets.md quotes the tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DEFAULT_CUTOFFS = (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 18, 20)
K_GRID = [(a, b, c) for a in (0, 0.5) for b in (0, 0.5) for c in (0, 0.5)]


def load_structure(name: str, split_name: str, size: str, cache):
    """(structure, stored record or None): from the built dataset, else from the catalogue recipe."""
    from zoo.data.catalogue import CATALOGUE, dataset_path, is_built
    from zoo.data.format import Dataset

    if is_built(name, size, cache):
        rec = Dataset.open(dataset_path(name, size, cache)).read(split_name)
        return rec.structure, rec
    entry = CATALOGUE[name]
    make = {n: mk for n, _, mk in entry.plan(entry, size, entry.seed)}[split_name]
    return make(), None


def s_min(norb, s_on, ei, sh, s_off, k=None) -> float:
    from zoo.physics.assembly import assemble

    m = assemble(norb, s_on, ei, sh, s_off, k=k, hermitize=True).toarray()
    return float(np.linalg.eigvalsh(m)[0])


def scan(structure, stored, cutoffs, rmax: float) -> dict:
    from zoo.data.engines.tblite import overlap_images
    from zoo.data.graph import edge_vectors_np
    from zoo.data.physcheck import S_MIN_EIG
    from zoo.physics.assembly import assemble, block_offsets
    from zoo.physics.basis import get_basis

    norb = get_basis("gfn1-xtb").norb_per_atom(structure.numbers)
    t0 = time.perf_counter()
    ei, sh, s_on, s_off = overlap_images(structure, rmax)
    out = {"n_atoms": structure.n_atoms, "n_orbitals": int(norb.sum()), "rmax_A": rmax, "pairs_to_rmax": len(ei),
           "overlap_wall_s": round(time.perf_counter() - t0, 1), "rows": []}
    if stored is not None:  # the sum over images must be tblite's folded S on every stored block
        full = assemble(norb, s_on, ei, sh, s_off).toarray()
        ref = stored.matrix("S").toarray()
        out["max_abs_diff_vs_stored"] = float(np.abs(full - ref)[ref != 0].max())
        out["stored_cutoff_A"] = float(np.linalg.norm(edge_vectors_np(stored.positions, stored.cell,
                                                                       stored.edge_index, stored.edge_shift),
                                                      axis=1).max(initial=0.0))
    d = np.linalg.norm(edge_vectors_np(structure.positions, structure.cell, ei, sh), axis=1)
    size = norb[ei[:, 0]] * norb[ei[:, 1]]
    off = block_offsets(norb[ei[:, 0]], norb[ei[:, 1]])
    norm2 = np.add.reduceat(s_off ** 2, off[:-1]) if len(ei) else np.zeros(0)
    total2 = float(s_on @ s_on + norm2.sum())
    out["gamma_pd_at"] = out["kgrid_pd_at"] = None
    for rc in cutoffs:
        keep = d < rc
        args = (norb, s_on, ei[keep], sh[keep], s_off[np.repeat(keep, size)])
        row = {"cutoff_A": rc, "s_min_gamma": s_min(*args), "edges_per_atom": round(float(keep.sum()) / len(norb), 1),
               "kept_frac_frobenius_s": float(np.sqrt((s_on @ s_on + norm2[keep].sum()) / total2)),
               "dropped_frac_frobenius_s": float(np.sqrt(norm2[~keep].sum() / total2)),
               "mib_h_and_s": round(16.0 * (size[keep].sum() + norb @ norb) / 2 ** 20, 2)}
        if row["s_min_gamma"] > S_MIN_EIG and out["kgrid_pd_at"] is None:
            row["s_min_k222"] = min(s_min(*args, k=k) for k in K_GRID)
        out["rows"].append(row)
        if out["gamma_pd_at"] is None and row["s_min_gamma"] > S_MIN_EIG:
            out["gamma_pd_at"] = rc
        if out["kgrid_pd_at"] is None and row.get("s_min_k222", -1.0) > S_MIN_EIG:
            out["kgrid_pd_at"] = rc
    return out


def print_table(title: str, res: dict) -> None:
    print(f"\n## {title}: {res['n_atoms']} atoms, {res['n_orbitals']} orbitals, {res['pairs_to_rmax']} pairs to "
          f"{res['rmax_A']:g} A in {res['overlap_wall_s']} s")
    if "max_abs_diff_vs_stored" in res:
        print(f"sum over images vs stored folded S (cutoff {res['stored_cutoff_A']:.2f} A): max |diff| "
              f"{res['max_abs_diff_vs_stored']:.1e}")
    print("| cutoff (A) | s_min Gamma | s_min k 2x2x2 | edges / atom | ||S||_F dropped | MiB H+S |")
    print("|---|---|---|---|---|---|")
    for r in res["rows"]:
        k = f"{r['s_min_k222']:.3g}" if "s_min_k222" in r else ""
        print(f"| {r['cutoff_A']:g} | {r['s_min_gamma']:.3g} | {k} | {r['edges_per_atom']:g} | "
              f"{r['dropped_frac_frobenius_s']:.1e} | {r['mib_h_and_s']:g} |")
    print(f"smallest positive definite cutoff: Gamma {res['gamma_pd_at']} A, k 2x2x2 {res['kgrid_pd_at']} A")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="tblite catalogue entry (a-hfo2, a-hfox, c-hfo2, a-ptge, a-gst)")
    p.add_argument("--structures", nargs="+", default=None,
                   help="structure names (default: the first test and the first train cell of the recipe)")
    p.add_argument("--size", default="small")
    p.add_argument("--cutoffs", type=float, nargs="+", default=list(DEFAULT_CUTOFFS))
    p.add_argument("--rmax", type=float, default=25.0, help="pairs computed up to here (A)")
    p.add_argument("--cache", default=None)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    out = {}
    if args.structures is None:
        from zoo.data.catalogue import CATALOGUE

        entry = CATALOGUE[args.dataset]
        plan = entry.plan(entry, args.size, entry.seed)
        args.structures = [next(n for n, split, _ in plan if split == s) for s in ("test", "train")]
    for n in args.structures:
        structure, stored = load_structure(args.dataset, n, args.size, args.cache)
        out[n] = scan(structure, stored, sorted(args.cutoffs), args.rmax)
        print_table(f"{args.dataset}@{args.size} {n}", out[n])
    if args.json:
        Path(args.json).write_text(json.dumps({"dataset": args.dataset, "size": args.size, **out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
