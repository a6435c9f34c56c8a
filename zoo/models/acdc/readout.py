"""Readout packing (gears_h `get_mapping_spec`) and the scale-shift of the readout's scalars.

Packing. The readout outputs R [..., 2, (Lr+1)^2, F_r]. Every slot pair (a, b) of the padded
layout (the Wigner-Eckart head's order, a-major) needs the irreps L = |la - lb| .. la + lb of
parity (-1)^(la+lb); gears_h places them in the first feature channel whose (parity, L range)
slots are still free. `ReadoutPacking.gather` is the flat index of every coupled coefficient of
`WignerEckart.irreps` in R, so blocks = we.to_blocks(R.flatten()[gather]).

Scale-shift (constants fitted once by `fit_scale_shift`, kept in buffers): on the even scalar
R[..., 0, 0, f] only,
    on-site, element Z:            R <- R |sigma_Zf| + mu_Zf
    off-site, ordered (Zi, Zj):    R <- R + a exp(-(d / l)^b)
so rotations are untouched (an invariant scalar times / plus an invariant).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import dual_annealing

from zoo.physics.coupling import WignerEckart
from zoo.physics.units import HARTREE_EV


class ReadoutPacking:
    """Feature-channel assignment of every slot pair and the gather index into the readout."""

    def __init__(self, we: WignerEckart):
        ls = we.layout.slot_ls
        self.lmax = 2 * max(ls)
        k = (self.lmax + 1) ** 2
        n_pairs = len(ls) ** 2
        taken = np.zeros((2, k, n_pairs), dtype=bool)
        self.assign: dict[tuple[int, int], tuple[int, int]] = {}  # (a, b) -> (parity, feature)
        for a, la in enumerate(ls):
            for b, lb in enumerate(ls):
                p = (la + lb) % 2
                lo, hi = abs(la - lb) ** 2, (la + lb + 1) ** 2
                f = next(f for f in range(n_pairs) if not taken[p, lo:hi, f].any())
                taken[p, lo:hi, f] = True
                self.assign[(a, b)] = (p, f)
        self.features = max(f for _, f in self.assign.values()) + 1
        gather = np.zeros(we.irreps.dim, dtype=np.int64)
        scalar_of_feature = np.full(self.features, -1, dtype=np.int64)  # coupled index of R[0, 0, f]
        for (a, b), sl in we.pair_slices.items():
            p, f = self.assign[(a, b)]
            la, lb = ls[a], ls[b]
            comps = np.arange(abs(la - lb) ** 2, (la + lb + 1) ** 2)
            gather[sl] = (p * k + comps) * self.features + f
            if la == lb:
                scalar_of_feature[f] = sl.start
        self.gather = torch.as_tensor(gather)
        self.scalar_of_feature = scalar_of_feature
        self.pair_of_feature = {f: ab for ab, (p, f) in self.assign.items() if ls[ab[0]] == ls[ab[1]]}


def _shift_fn(d: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    a, length, b = coeffs
    return a * np.exp(-(d / length) ** b)


def _objective(coeffs: np.ndarray, d: np.ndarray, y: np.ndarray) -> float:
    # gears_h analyze: squared error plus a small L1 penalty on (a, l, b), in eV and Angstrom
    return float(np.sum((_shift_fn(d, coeffs) - y) ** 2) + 1e-4 * np.sum(np.abs(coeffs)))


#: gears_h's bounds (eV, Angstrom, -) and its "too small to fit" threshold (eV)
SHIFT_BOUNDS = [(-100.0, 100.0), (0.5, 8.0), (1.0, 20.0)]
SHIFT_MIN_EV = 1e-2


def fit_offsite_shift(d: np.ndarray, y_ha: np.ndarray, maxiter: int = 1000, seed: int = 0,
                      max_samples: int = 50) -> tuple[float, float, float]:
    """(a [Ha], l [A], b) of y ~ a exp(-(d/l)^b) by scipy dual_annealing, as `gears_h analyze`.

    The fit runs in eV (the units of gears_h's bounds and penalty). gears_h takes every 100th
    pair; here the stride is min(100, n // max_samples) (at least 1), so small training sets still
    give a few dozen points. Channels whose targets stay below 1e-2 eV get a = 0 (gears_h uses
    (e, 1, 0), i.e. a constant +1 eV shift).
    """
    y = np.asarray(y_ha, dtype=np.float64) * HARTREE_EV
    d = np.asarray(d, dtype=np.float64)
    if y.size == 0 or np.max(np.abs(y)) < SHIFT_MIN_EV:
        return 0.0, 1.0, 1.0
    stride = max(1, min(100, y.size // max_samples))
    res = dual_annealing(_objective, bounds=SHIFT_BOUNDS, args=(d[::stride], y[::stride]),
                         restart_temp_ratio=0.1, maxiter=int(maxiter), seed=int(seed))
    a, length, b = (float(v) for v in res.x)
    return a / HARTREE_EV, length, b


def fit_scale_shift(graphs, we: WignerEckart, packing: ReadoutPacking, z_index: torch.Tensor,
                    edge_dist, maxiter: int = 1000) -> dict[str, np.ndarray]:
    """Scale-shift constants from labelled training blocks (Hartree).

    graphs: Data with y_node, y_edge, z, edge_index, node/edge label masks; edge_dist(g) gives the
    pair distances. Returns arrays on_shift, on_scale [n_el, F_r] and off_a, off_l, off_b
    [n_el, n_el, F_r]; channels without an even scalar (or without data) keep the identity.
    """
    n_el = int((z_index >= 0).sum())
    elements = torch.nonzero(z_index >= 0).flatten().tolist()
    nf = packing.features
    on_vals: dict[tuple[int, int], list[np.ndarray]] = {}
    off_vals: dict[tuple[int, int, int], list[np.ndarray]] = {}
    off_d: dict[tuple[int, int, int], list[np.ndarray]] = {}
    feats = [f for f in range(nf) if packing.scalar_of_feature[f] >= 0]
    masks = {(zi, zj): we.pair_mask(zi, zj).numpy() for zi in elements for zj in elements}
    for g in graphs:
        z = g.z.cpu().numpy()
        nl = g.node_label_mask.cpu().numpy() if hasattr(g, "node_label_mask") else np.ones(len(z), bool)
        el = g.edge_label_mask.cpu().numpy() if hasattr(g, "edge_label_mask") else np.ones(g.edge_index.shape[1], bool)
        with torch.no_grad():
            cn = we.to_coupled(g.y_node.to(torch.float64).cpu()).numpy()
            ce = we.to_coupled(g.y_edge.to(torch.float64).cpu()).numpy()
            dist = edge_dist(g).to(torch.float64).cpu().numpy()
        ei = g.edge_index.cpu().numpy()
        for f in feats:
            r = packing.scalar_of_feature[f]
            for zz in np.unique(z):
                sel = (z == zz) & nl
                if sel.any() and masks[(int(zz), int(zz))][r]:
                    on_vals.setdefault((int(zz), f), []).append(cn[sel, r])
            zi_all, zj_all = z[ei[0]], z[ei[1]]
            for zi in np.unique(zi_all):
                for zj in np.unique(zj_all):
                    sel = (zi_all == zi) & (zj_all == zj) & el
                    if sel.any() and masks[(int(zi), int(zj))][r]:
                        off_vals.setdefault((int(zi), int(zj), f), []).append(ce[sel, r])
                        off_d.setdefault((int(zi), int(zj), f), []).append(dist[sel])
    idx = {zz: k for k, zz in enumerate(elements)}
    out = {"on_shift": np.zeros((n_el, nf)), "on_scale": np.ones((n_el, nf)),
           "off_a": np.zeros((n_el, n_el, nf)), "off_l": np.ones((n_el, n_el, nf)),
           "off_b": np.ones((n_el, n_el, nf))}
    for (zz, f), vals in on_vals.items():
        v = np.concatenate(vals)
        out["on_shift"][idx[zz], f] = v.mean()
        out["on_scale"][idx[zz], f] = v.std()
    for (zi, zj, f), vals in sorted(off_vals.items()):
        a, length, b = fit_offsite_shift(np.concatenate(off_d[(zi, zj, f)]), np.concatenate(vals), maxiter)
        out["off_a"][idx[zi], idx[zj], f] = a
        out["off_l"][idx[zi], idx[zj], f] = length
        out["off_b"][idx[zi], idx[zj], f] = b
    return out
