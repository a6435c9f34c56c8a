"""Who owns which atom: slabs (seed Algorithm 1), recursive coordinate bisection, METIS.

Every function returns `owner` [N] int64: the partition that labels each atom, or -1 for an
atom no partition labels (possible only for slabs whose [start, start + length) range does not
cover the structure, as in the seed's training slices). Partitions are numbered 0..P-1.
"""

from __future__ import annotations

import math

import numpy as np

from zoo.data.graph import perpendicular_widths
from zoo.errors import ConfigError, GraphError

AXES = {"x": 0, "y": 1, "z": 2, "a": 0, "b": 1, "c": 2}


def periodic_directions(cell: np.ndarray, edge_shift: np.ndarray, pbc=None) -> np.ndarray:
    """[3] bool: the given pbc, else the lattice directions some edge crosses (non-zero shift)."""
    if pbc is not None:  # a flag, [3], or a graph's [1, 3]
        p = np.asarray(pbc, dtype=bool)
        return np.broadcast_to(p.reshape(3) if p.size == 3 else p, (3,)).copy()
    sh = np.asarray(edge_shift).reshape(-1, 3)
    return (np.abs(sh) > 0.5).any(axis=0) if len(sh) else np.zeros(3, dtype=bool)


def slab_coordinates(pos: np.ndarray, cell: np.ndarray, periodic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom coordinates [N, 3] to cut along, and the extent [3] of each direction.

    Along a periodic lattice direction k the coordinate is the wrapped fractional coordinate
    times the face-to-face width (so every atom lies in [0, width) and a slab is a slab of the
    crystal, also for tilted cells); along an open direction it is the Cartesian coordinate.
    """
    pos = np.asarray(pos, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    coords = pos.copy()
    extent = np.ptp(pos, axis=0) if len(pos) else np.zeros(3)
    if periodic.any():
        if abs(np.linalg.det(cell)) < 1e-8:
            raise GraphError("periodic structure with a degenerate cell (zero volume)")
        frac = np.linalg.solve(cell.T, pos.T).T
        widths = perpendicular_widths(cell)
        for k in np.flatnonzero(periodic):
            coords[:, k] = np.mod(frac[:, k], 1.0) * widths[k]
            extent[k] = widths[k]
    return coords, extent


def resolve_axis(axis, extent: np.ndarray) -> int:
    if axis is None:
        return int(np.argmax(extent))  # the longest direction, as in the seed paper
    if isinstance(axis, str):
        if axis.lower() not in AXES:
            raise ConfigError(f"unknown slice axis {axis!r}; use x, y, z (or 0, 1, 2)")
        return AXES[axis.lower()]
    if int(axis) not in (0, 1, 2):
        raise ConfigError(f"slice axis must be 0, 1 or 2, got {axis}")
    return int(axis)


def slab_owner(pos, cell, periodic, *, axis=None, start: float | None = None, length: float | None = None,
               n_slices: int | None = None, t_slice: float | None = None) -> np.ndarray:
    """Cut along one axis into slabs [start + m t, start + (m+1) t) within [start, start + length).

    Give `t_slice` (thickness, A; the last slab is cut short at the range end), `n_slices`, or both
    (then length = n_slices * t_slice, the seed's configs: start=-1, 18 slices of 3 A). Defaults: the longest axis, start at the cell face
    (periodic) or the lowest atom (open), length the cell width or the atoms' extent. Raises
    GraphError for a slab thicker than the structure or a slab holding no atom.
    """
    coords, extent = slab_coordinates(pos, cell, np.asarray(periodic, dtype=bool))
    k = resolve_axis(axis, extent)
    x = coords[:, k]
    if len(x) == 0:
        raise GraphError("cannot slice a structure with no atoms")
    periodic_k = bool(periodic[k])
    if start is None:
        start = 0.0 if periodic_k else float(x.min())
    if t_slice is None and n_slices is None:
        raise ConfigError("slices need t_slice (thickness in A) or n_slices")
    if t_slice is not None and not t_slice > 0:
        raise GraphError(f"t_slice must be positive, got {t_slice}")
    if n_slices is not None and int(n_slices) < 1:
        raise GraphError(f"n_slices must be at least 1, got {n_slices}")
    if length is None:
        if t_slice is not None and n_slices is not None:
            length = float(t_slice) * int(n_slices)
        else:
            # open direction: nudge past the last atom so it falls inside the half-open range
            length = float(extent[k]) if periodic_k else float(np.nextafter(x.max() - start, np.inf)) + 1e-9
    if not length > 0:
        raise GraphError(f"slice length must be positive, got {length}")
    size = float(extent[k]) if periodic_k else float(np.ptp(x))
    if t_slice is not None and t_slice > max(length, size) + 1e-12:
        raise GraphError(f"t_slice {t_slice} A is larger than the structure along axis {'xyz'[k]} "
                         f"({'cell width' if periodic_k else 'extent'} {size:.3f} A, slice range {length:.3f} A)")
    if n_slices is None:
        n_slices = max(1, math.ceil(length / t_slice - 1e-9))
    t = float(t_slice) if t_slice is not None else length / int(n_slices)
    rel = x - start
    inside = (rel >= 0) & (rel < length)
    owner = np.full(len(x), -1, dtype=np.int64)
    owner[inside] = np.minimum((rel[inside] / t).astype(np.int64), int(n_slices) - 1)
    counts = np.bincount(owner[inside], minlength=int(n_slices))
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        m = int(empty[0])
        lo, hi = start + m * t, min(start + (m + 1) * t, start + length)
        raise GraphError(f"slice {m} ([{lo:.3f}, {hi:.3f}) A along {'xyz'[k]}) holds no atom "
                         f"({len(empty)} of {n_slices} slices are empty); use thicker or fewer slices")
    return owner


def _weights(n: int, edge_index: np.ndarray) -> np.ndarray:
    """Edges per atom (at least 1): the work a partition's atoms cost in message passing."""
    return np.maximum(np.bincount(np.asarray(edge_index)[0], minlength=n), 1).astype(np.float64)


def rcb_owner(pos, cell, periodic, edge_index: np.ndarray, n_parts: int) -> np.ndarray:
    """Recursive coordinate bisection weighted by edges per atom, for any number of parts.

    A set meant for p parts is cut across its widest direction at the weighted quantile
    floor(p/2)/p, and each side recurses with floor(p/2) and ceil(p/2) parts.
    """
    n = len(pos)
    if int(n_parts) < 1:
        raise GraphError(f"n_parts must be at least 1, got {n_parts}")
    if n_parts > n:
        raise GraphError(f"cannot cut {n} atoms into {n_parts} parts")
    coords, _ = slab_coordinates(pos, cell, np.asarray(periodic, dtype=bool))
    w = _weights(n, edge_index)
    owner = np.empty(n, dtype=np.int64)

    def split(idx: np.ndarray, parts: int, first: int) -> None:
        if parts == 1:
            owner[idx] = first
            return
        c = coords[idx]
        d = int(np.argmax(np.ptp(c, axis=0)))
        order = idx[np.argsort(c[:, d], kind="stable")]
        left_parts = parts // 2
        cum = np.cumsum(w[order])
        cut = int(np.searchsorted(cum, cum[-1] * left_parts / parts)) + 1
        cut = min(max(cut, left_parts), len(order) - (parts - left_parts))  # every part gets an atom
        split(order[:cut], left_parts, first)
        split(order[cut:], parts - left_parts, first + left_parts)

    split(np.arange(n), int(n_parts), 0)
    return owner


def metis_owner(n: int, edge_index: np.ndarray, n_parts: int, seed: int = 0) -> np.ndarray:
    """METIS k-way partition of the atom graph (pymetis), vertex weights = edges per atom."""
    try:
        import pymetis
    except ImportError:
        raise ConfigError("partitioner 'metis' needs pymetis (pip install pymetis==2025.2.2)") from None
    if int(n_parts) < 1:
        raise GraphError(f"n_parts must be at least 1, got {n_parts}")
    if n_parts > n:
        raise GraphError(f"cannot cut {n} atoms into {n_parts} parts")
    if n_parts == 1:
        return np.zeros(n, dtype=np.int64)
    ei = np.asarray(edge_index)
    ei = ei[:, ei[0] != ei[1]]
    # atom graph: one undirected link per atom pair, weighted by how many image edges join them
    pairs, mult = np.unique(np.sort(ei, axis=0).T, axis=0, return_counts=True)
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    wts = np.concatenate([mult, mult])
    order = np.lexsort((dst, src))
    src, dst, wts = src[order], dst[order], wts[order]
    xadj = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n))]).astype(np.int64)
    vw = _weights(n, ei).astype(np.int64)
    res = pymetis.part_graph(int(n_parts), pymetis.CSRAdjacency(xadj, dst.astype(np.int64)), vweights=vw,
                             eweights=wts.astype(np.int64), options=pymetis.Options(seed=seed))
    owner = np.asarray(res.vertex_part, dtype=np.int64)
    missing = sorted(set(range(int(n_parts))) - set(owner.tolist()))
    if missing:
        raise GraphError(f"METIS left parts {missing} empty; use fewer parts for {n} atoms")
    return owner
