"""`zoo perf`: inference cost vs structure size for one backbone, as ratios measured in one run.

Structures are simple-cubic supercells (spacing `spacing` A, lightly rattled) with the
dataset's elements dealt out in turn, so the graph density is fixed and only the size varies;
an untrained model costs the same as a trained one.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from zoo.errors import ConfigError


def _supercell(elements: Sequence[int], reps: int, spacing: float, seed: int = 0):
    from zoo.data.format import Structure

    g = np.stack(np.meshgrid(*[np.arange(reps)] * 3, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float64)
    pos = g * spacing + np.random.default_rng(seed).normal(scale=0.05, size=g.shape)
    numbers = np.array([elements[k % len(elements)] for k in range(len(g))])
    return Structure(numbers, pos, np.eye(3) * spacing * reps, [True, True, True])


def measure(model, info, reps: Sequence[int], spacing: float = 2.2, dtype=torch.float32, repeats: int = 3) -> list[dict]:
    """One row per size: atoms, edges, graph build time, best forward time, us per atom, ratio to the smallest."""
    from zoo.data.torch_data import structure_to_data

    if any(2 * info.cutoff >= r * spacing for r in reps):
        raise ConfigError(f"perf: every supercell must be wider than 2 x cutoff = {2 * info.cutoff} A; "
                          f"use larger --reps (spacing {spacing} A)")
    model = model.to(dtype).eval()
    rows = []
    for r in reps:
        st = _supercell(list(info.elements), r, spacing)
        t = time.perf_counter()
        data = structure_to_data(st, info.layout, info.cutoff, dtype)
        t_graph = time.perf_counter() - t
        best = float("inf")
        with torch.no_grad():
            for _ in range(repeats):
                t = time.perf_counter()
                model(data)
                best = min(best, time.perf_counter() - t)
        rows.append({"atoms": st.n_atoms, "edges": int(data.edge_index.shape[1]), "graph_s": t_graph,
                     "forward_s": best, "us_per_atom": 1e6 * best / st.n_atoms})
    base = rows[0]["us_per_atom"]
    for row in rows:
        row["per_atom_ratio"] = row["us_per_atom"] / base
    return rows
