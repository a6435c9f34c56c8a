"""What a pair cutoff keeps of CP2K's per-image matrices, and what one CP2K run costs.

    OMP_NUM_THREADS=1 python benchmarks/cp2k_images.py                       # 12-atom m-HfO2, a-hfo2+cp2k recipe
    OMP_NUM_THREADS=1 python benchmarks/cp2k_images.py --dataset a-gst --cutoffs 6 9 12 --json out.json

Runs CP2K once on a cell (default: `monoclinic_hfo2()`, or --split/--index of the dataset's own
recipe, e.g. the 192-atom a-hfo2 small test cell) with the dataset's CP2K recipe (per-image
blocks, `zoo.data.catalogue.entries.seed_cp2k`), keeps the run's files, and cuts the same files at
each cutoff (`zoo.data.engines.cp2k_images.images_to_record`): edges, the fraction of ||H||_F
dropped, the largest dropped |H| and |S|, and the lowest eigenvalue of S(Gamma) assembled from
the kept blocks. Also prints the run's own measurements (SCF steps, CP2K wall and CPU seconds,
peak memory, images, the farthest pair CP2K lists). docs/datasets.md quotes the default run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    from zoo.data.catalogue import CATALOGUE
    from zoo.data.catalogue.spectrum import lowest_s_eigenvalue
    from zoo.data.engines import get_engine
    from zoo.data.engines.cp2k_engine import PROJECT
    from zoo.data.engines.cp2k_images import images_to_record, wrapped_positions
    from zoo.data.format import Structure
    from zoo.data.structures import monoclinic_hfo2

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="a-hfo2", help="catalogue entry whose CP2K recipe is used (default a-hfo2)")
    p.add_argument("--split", default=None,
                   help="compute the dataset's own cell of this split (default: m-HfO2, 12 atoms)")
    p.add_argument("--index", type=int, default=0, help="which cell of --split")
    p.add_argument("--size", default="small")
    p.add_argument("--cutoffs", type=float, nargs="+", default=[4, 5, 6, 7, 8, 10, 12])
    p.add_argument("--workdir", default=None, help="keep CP2K's files here (default: a temporary directory)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    entry = CATALOGUE[args.dataset]
    _, options, cutoffs = entry.engine_recipe("cp2k")
    if args.split is None:
        structure = Structure.from_ase(monoclinic_hfo2())
    else:
        jobs = [make for _, split, make in entry.plan(entry, args.size, entry.seed) if split == args.split]
        structure = jobs[args.index]()
    with tempfile.TemporaryDirectory(prefix="zoo-cp2k-images-") as tmp:
        work = Path(args.workdir or tmp)
        engine = get_engine("cp2k", **options, workdir=work)
        t0 = time.perf_counter()
        rec = engine.record(structure, cutoffs[args.size], "cell")
        out = {"dataset": args.dataset, "n_atoms": structure.n_atoms, "options": options,
               "record_wall_s": round(time.perf_counter() - t0, 1), "run": rec.meta, "cutoffs": []}
        log = (work / f"{PROJECT}.out").read_text()
        for cut in args.cutoffs:
            r = images_to_record(structure, work, PROJECT, log, engine.basis(), engine.convention,
                                 wrapped_positions(structure)[1], cut, "cell")
            m = r.meta
            row = {"cutoff": cut, "edges": r.n_edges, "dropped_frac_frobenius_h": m["dropped_frac_frobenius_h"],
                   "dropped_max_abs_h": m["dropped_max_abs_h"], "dropped_max_abs_s": m["dropped_max_abs_s"],
                   "s_min_eig_gamma": lowest_s_eigenvalue(r)}
            out["cutoffs"].append(row)
            print(f"cutoff {cut:5.1f} A  edges {r.n_edges:7d}  "
                  f"||H||_F dropped {100 * row['dropped_frac_frobenius_h']:.4f} %"
                  f"  max dropped |H| {1e3 * row['dropped_max_abs_h']:.3g} mE_h  |S| {row['dropped_max_abs_s']:.2g}"
                  f"  S_min_eig {row['s_min_eig_gamma']:.4g}")
    print(json.dumps({k: v for k, v in out.items() if k != "cutoffs"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
