"""Periodic neighbour graphs with integer image shifts (ase.neighborlist), reverse-edge lookup
and the element -> species index table."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from zoo.errors import GraphError


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distance between opposite faces of the cell along each lattice direction (Angstrom)."""
    cell = np.asarray(cell, dtype=np.float64)
    vol = abs(np.linalg.det(cell))
    if vol < 1e-8:
        return np.zeros(3)
    return np.array([vol / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) for k in range(3)])


def check_cell_for_cutoff(cell: np.ndarray, pbc: np.ndarray, cutoff: float, path=None) -> None:
    """Raise if a periodic direction is narrower than 2*cutoff: an atom would meet its own image
    (or one neighbour would appear twice), which Gamma-folded / minimum-image data cannot tell apart."""
    w = perpendicular_widths(cell)
    bad = [("abc"[k], float(w[k])) for k in range(3) if pbc[k] and w[k] < 2 * cutoff]
    if bad:
        desc = ", ".join(f"{ax}: {wk:.3f} A" for ax, wk in bad)
        raise GraphError(
            f"cell too small for cutoff {cutoff} A: periodic width ({desc}) is below 2 x cutoff, so an atom "
            f"would meet its own image; use a larger supercell or a smaller cutoff", path)


def neighbor_graph(numbers, positions, cell, pbc, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """All directed pairs (i, j, shift) with |r_j + shift @ cell - r_i| < cutoff, excluding (i, i, 0).

    Returns edge_index [E, 2] int64 and edge_shift [E, 3] int64, sorted by (i, j, shift) so the
    graph is deterministic. Both directions are present.
    """
    if cutoff <= 0:
        raise GraphError(f"cutoff must be positive, got {cutoff}")
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=np.float64)
    if pbc.any() and abs(np.linalg.det(cell)) < 1e-8:
        raise GraphError("periodic structure with a degenerate cell (zero volume)")
    atoms = Atoms(numbers=np.asarray(numbers), positions=np.asarray(positions), cell=cell, pbc=pbc)
    i, j, S = neighbor_list("ijS", atoms, float(cutoff), self_interaction=False)
    ei = np.stack([i, j], axis=1).astype(np.int64)
    S = S.astype(np.int64)
    order = np.lexsort((S[:, 2], S[:, 1], S[:, 0], ei[:, 1], ei[:, 0]))
    return ei[order], S[order]


def edge_vectors_np(positions, cell, edge_index, edge_shift) -> np.ndarray:
    """r_ij = r_j + shift @ cell - r_i for every edge."""
    positions = np.asarray(positions)
    ei = np.asarray(edge_index)
    return positions[ei[:, 1]] + np.asarray(edge_shift) @ np.asarray(cell) - positions[ei[:, 0]]


def reverse_edge_index(edge_index, edge_shift) -> np.ndarray:
    """[E] index of edge (j, i, -R) for every edge (i, j, R), or -1 where it is absent.

    `edge_index` is [E, 2] as in records (transpose torch-geometric's [2, E]), `edge_shift`
    [E, 3] integer image shifts (floats are rounded). Self-image edges (i, i, R != 0) pair with
    (i, i, -R). The one implementation behind `zoo.models.contract.reverse_edges` and
    `zoo.data.physcheck.reverse_edges`. Vectorised: sorts 2E integer keys, no Python loop.
    """
    sh = np.rint(np.asarray(edge_shift)).astype(np.int64).reshape(-1, 3)
    e = sh.shape[0]
    ei = np.asarray(edge_index).astype(np.int64)
    if ei.shape != (e, 2):
        raise GraphError(f"reverse edges: edge_index {ei.shape} does not match edge_shift ({e}, 3)")
    if e == 0:
        return np.zeros(0, dtype=np.int64)
    i, j = ei[:, 0], ei[:, 1]
    # rank the (i, j) pairs of both directions, then append the shift in a mixed radix: the key
    # stays below 2E * base^3 whatever the atom count, so it cannot overflow int64
    n = int(ei.max()) + 1
    _, pair = np.unique(np.concatenate([i * n + j, j * n + i]), return_inverse=True)
    pair = pair.reshape(-1)
    span = int(np.abs(sh).max())
    base = 2 * span + 1

    def key(p, s):
        return ((p * base + (s[:, 0] + span)) * base + (s[:, 1] + span)) * base + (s[:, 2] + span)

    fwd, rev = key(pair[:e], sh), key(pair[e:], -sh)
    order = np.argsort(fwd, kind="stable")
    pos = np.minimum(np.searchsorted(fwd[order], rev), e - 1)
    return np.where(fwd[order][pos] == rev, order[pos], -1).astype(np.int64)


def species_index(elements) -> np.ndarray:
    """[max(Z) + 1] table Z -> position of Z in sorted(set(elements)) (0..n_el-1), -1 elsewhere.

    The one element -> embedding-row map of the backbones (register it as a buffer:
    `torch.as_tensor(species_index(info.elements))`).
    """
    els = sorted({int(z) for z in elements})
    if not els or els[0] < 1:
        raise GraphError(f"species index: need atomic numbers >= 1, got {list(elements)}")
    table = np.full(els[-1] + 1, -1, dtype=np.int64)
    table[els] = np.arange(len(els))
    return table
