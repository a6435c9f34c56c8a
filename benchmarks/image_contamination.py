"""Gamma-folding contamination of a built periodic dataset, measured against a larger supercell.

    python benchmarks/image_contamination.py a-hfo2 --structure test-0 --repeat 1 2 2
    python benchmarks/image_contamination.py a-ptge --repeat 1 2 1 --json out.json

tblite gives only H(Gamma) = sum_R H(R); a stored block of pair (i, j) therefore carries the
pair's periodic images too. This re-runs the dataset's engine on the structure and on a
`repeat` supercell (images further away) and compares every labelled block with the same atom
pair in the supercell (`zoo.data.engines.image_contamination`). It prints the largest, median
and 99th-percentile differences of H and S blocks (and of H for edges shorter than 3 A), which
are what `zoo.data.catalogue.IMAGE_CONTAMINATION` and the dataset cards quote. A repeat along
one narrow direction only (1 2 1) measures the images through that face alone: cheaper, and by
the x = 2y = 2z symmetry of the cells half of the full effect. `by_next_image` asks whether
dropping the edges whose atom pair has another image nearby would help: per threshold on that
distance, the share of edges kept and their largest error.

Run with OpenBLAS preloaded for tblite (see docs/datasets.md), e.g.
LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def detailed(engine, structure, cutoff: float, repeat: tuple[int, int, int]) -> dict:
    """Distribution of the differences, split into short (< 3 A) and long edges and on-site blocks."""
    from zoo.data.format import Structure
    from zoo.data.graph import edge_vectors_np

    small = engine.record(structure, cutoff, "cell")
    big = engine.record(Structure.from_ase(structure.to_ase().repeat(repeat)), cutoff, "supercell")
    n = structure.n_atoms
    vs = edge_vectors_np(small.positions, small.cell, small.edge_index, small.edge_shift)
    key = {(int(i), int(j), *np.round(v, 4).tolist()): e for e, ((i, j), v) in enumerate(zip(small.edge_index, vs))}
    vb = edge_vectors_np(big.positions, big.cell, big.edge_index, big.edge_shift)
    out: dict = {"n_atoms_cell": n, "n_atoms_supercell": big.n_atoms, "repeat": list(repeat), "cutoff_A": cutoff}
    for which in ("H", "S"):
        sb, bb = small.edge_blocks(which), big.edge_blocks(which)
        onsite = np.concatenate([np.abs(a - b).ravel() for a, b in zip(small.onsite_blocks(which),
                                                                        big.onsite_blocks(which)[:n])])
        short, long_ = [], []
        for e, ((i, j), v) in enumerate(zip(big.edge_index, vb)):
            if i < n:
                k = key[(int(i), int(j) % n, *np.round(v, 4).tolist())]
                (short if np.linalg.norm(v) < 3.0 else long_).append(np.abs(sb[k] - bb[e]).ravel())
        if which == "H":
            out["by_next_image"] = _by_next_image(structure, small, key, big, vb, n, sb, bb)
        edges = np.concatenate(short + long_)
        out[which] = {"max_edges": float(edges.max()), "median_edges": float(np.median(edges)),
                      "p99_edges": float(np.quantile(edges, 0.99)),
                      "max_edges_below_3A": float(np.concatenate(short).max()) if short else None,
                      "max_onsite": float(onsite.max()), "median_onsite": float(np.median(onsite))}
    out["max_abs_H_labels"] = float(max(np.abs(small.h_onsite).max(), np.abs(small.h_offsite).max()))
    return out


def _by_next_image(structure, small, key, big, vb, n, sb, bb) -> list[dict]:
    """Would dropping edges whose atom pair has another periodic image nearby remove the
    contamination? For each labelled edge, d2 = distance to the pair's nearest *other* image in
    the cell; per threshold, the share of edges kept (d2 >= t) and their largest block error."""
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", structure.to_ase(), 25.0)
    order = np.lexsort((d, j, i))  # grouped by pair, nearest image first
    i, j, d = i[order], j[order], d[order]
    starts = np.flatnonzero(np.r_[True, (i[1:] != i[:-1]) | (j[1:] != j[:-1])])
    dists = {(int(i[s]), int(j[s])): g for s, g in zip(starts, np.split(d, starts[1:]))}
    per_edge = []  # (d2, largest |difference| in the block)
    for e, ((a, b), v) in enumerate(zip(big.edge_index, vb)):
        if a < n:
            k = key[(int(a), int(b) % n, *np.round(v, 4).tolist())]
            ds_ = dists[int(a), int(b) % n]
            others = ds_[np.abs(ds_ - np.linalg.norm(v)) > 1e-6]
            per_edge.append((others[0] if len(others) else np.inf, float(np.abs(sb[k] - bb[e]).max())))
    arr = np.array(per_edge)
    rows = []
    for t in (0.0, 8.0, 10.0, 12.0, 14.0):
        keep = arr[:, 0] >= t
        rows.append({"min_next_image_A": t, "edges_kept": round(float(keep.mean()), 4),
                     "max_abs_diff_H_kept_hartree": float(arr[keep, 1].max()) if keep.any() else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    from zoo.data.catalogue import CATALOGUE, dataset_path
    from zoo.data.engines import get_engine
    from zoo.data.format import Dataset

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", help="built catalogue dataset (name[@size]) or a dataset directory")
    p.add_argument("--structure", default="test-0")
    p.add_argument("--repeat", type=int, nargs=3, default=(1, 2, 2))
    p.add_argument("--cache", default=None)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    name = args.dataset.split("@")[0]
    ds = Dataset.open(dataset_path(args.dataset, cache=args.cache) if name in CATALOGUE else args.dataset)
    opts = CATALOGUE[name].engine_options if name in CATALOGUE else {}
    engine = get_engine(ds.card.level_of_theory.get("code", "tblite"), **opts)
    t0 = time.perf_counter()
    res = detailed(engine, ds.read(args.structure).structure, ds.card.cutoff, tuple(args.repeat))
    res.update({"dataset": ds.card.name, "structure": args.structure, "wall_s": round(time.perf_counter() - t0, 1)})
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
