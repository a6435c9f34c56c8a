"""The metric suite: identical for every model, uncoupled basis, labelled blocks only.

Block errors (the seed's definitions): every entry of every labelled block, padding dropped,
is one sample. node MAE = mean |pred - ref| over on-site entries; edge MAE over off-site
entries (i->j and j->i are separate edges); total MAE = mean over the concatenation (element
weighted); sigma = standard deviation of the *absolute* errors. Reported in mE_h and meV.
Breakdowns: MAE per element pair (edges, unordered pair), per orbital pair (l1, l2) (unordered,
nodes and edges), and per interatomic-distance bin (edges).
Spinful (complex) blocks: |pred - ref| is the complex modulus, so node/edge/total MAE (and every
breakdown) are complex-modulus MAEs; `*_mae_re_mev` and `*_mae_im_mev` add the MAEs of the real and
imaginary parts separately. Spinless summaries carry no such keys (their rows are unchanged).

Spectrum errors from the assembled, hermitized H (with S where the data has it):
relative L1/L2 error ||E_pred - E_ref||_p / ||E_ref||_p over all and occupied states,
band-gap error, eigenvalue MAE within E_F +- 5 eV (E_F of the reference, mid-gap), and the
energy-zero-invariant eigenvalue MAEs over all states, occupied states and E_F +- 2 eV (see
`spectrum_metrics`).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
import torch
from ase.data import chemical_symbols

from zoo.physics.basis import L_LETTERS, OrbitalLayout
from zoo.physics.spectra import band_gap, fermi_level
from zoo.physics.units import HARTREE_EV, MEH_PER_HARTREE, MEV_PER_HARTREE

EIG_WINDOW_EV = 5.0
#: half-width of the near-Fermi-level window of `eig_mae_ef2_mev` (eV)
EIG_NEAR_EF_EV = 2.0


class _Acc:
    """Running sum, sum of squares and count of absolute errors (float64)."""

    __slots__ = ("s", "s2", "n")

    def __init__(self) -> None:
        self.s = self.s2 = 0.0
        self.n = 0

    def add(self, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)
        self.s += float(a.sum())
        self.s2 += float((a * a).sum())
        self.n += int(a.size)

    def merge(self, other: "_Acc") -> None:
        self.s += other.s
        self.s2 += other.s2
        self.n += other.n

    @property
    def mae(self) -> float:
        return self.s / self.n if self.n else float("nan")

    @property
    def std(self) -> float:
        if not self.n:
            return float("nan")
        m = self.s / self.n
        return math.sqrt(max(self.s2 / self.n - m * m, 0.0))


def _pair_name(za: int, zb: int) -> str:
    a, b = sorted((int(za), int(zb)))
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


class BlockErrors:
    """Accumulates absolute errors of padded blocks, chunk by chunk (bounded memory)."""

    def __init__(self, layout: OrbitalLayout, distance_bins: Iterable[float] | None = None):
        self.layout = layout
        self.slot_l = layout.slot_l_of_orbital()
        self.node, self.edge = _Acc(), _Acc()
        # real- and imaginary-part errors, filled only by complex (spinful) blocks
        self.parts: dict[str, _Acc] = defaultdict(_Acc)
        self.pairs: dict[str, _Acc] = defaultdict(_Acc)
        self.orbital: dict[str, _Acc] = defaultdict(_Acc)
        self.bins = np.asarray(list(distance_bins) if distance_bins is not None else [], dtype=np.float64)
        self.by_dist = [_Acc() for _ in range(max(len(self.bins) - 1, 0))]

    def _orbital_pairs(self, err: np.ndarray, mask: np.ndarray) -> None:
        # spinful blocks are 2 n_max wide: each spin quadrant has the spinless slot layout (ADR 0006)
        slot_l = self.slot_l if err.shape[-1] == self.slot_l.size else np.concatenate([self.slot_l, self.slot_l])
        for l1 in sorted(set(slot_l.tolist())):
            for l2 in sorted(set(slot_l.tolist())):
                if l2 < l1:
                    continue
                sel = ((slot_l[:, None] == l1) & (slot_l[None, :] == l2)) | (
                    (slot_l[:, None] == l2) & (slot_l[None, :] == l1))
                m = mask & sel[None]
                if m.any():
                    self.orbital[L_LETTERS[l1] + L_LETTERS[l2]].add(err[m])

    def _abs_error(self, kind: str, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """|pred - ref| (complex modulus for complex blocks, whose re/im part errors are also kept)."""
        pred, ref = np.asarray(pred), np.asarray(ref)
        if np.iscomplexobj(pred) or np.iscomplexobj(ref):
            e = np.asarray(pred, np.complex128) - np.asarray(ref, np.complex128)
            self.parts[f"{kind}_re"].add(np.abs(e.real[mask]))
            self.parts[f"{kind}_im"].add(np.abs(e.imag[mask]))
            return np.abs(e)
        return np.abs(np.asarray(pred, np.float64) - np.asarray(ref, np.float64))

    def add_nodes(self, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> None:
        """Padded on-site blocks [N, n, n] (or spinful complex [N, 2n, 2n]) and the bool mask of labelled entries."""
        err = self._abs_error("node", pred, ref, mask)
        self.node.add(err[mask])
        self._orbital_pairs(err, mask)

    def add_edges(self, pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, z_i: np.ndarray, z_j: np.ndarray,
                  dist: np.ndarray | None = None) -> None:
        """Padded edge blocks [E, n, n] (or spinful complex), mask, element of both ends, and bond length (A)."""
        err = self._abs_error("edge", pred, ref, mask)
        self.edge.add(err[mask])
        self._orbital_pairs(err, mask)
        lo, hi = np.minimum(z_i, z_j), np.maximum(z_i, z_j)
        for a, b in set(zip(lo.tolist(), hi.tolist())):
            sel = (lo == a) & (hi == b)
            self.pairs[_pair_name(a, b)].add(err[sel][mask[sel]])
        if dist is not None and len(self.by_dist):
            which = np.digitize(dist, self.bins) - 1
            for k in range(len(self.by_dist)):
                sel = which == k
                if sel.any():
                    self.by_dist[k].add(err[sel][mask[sel]])

    def summary(self) -> dict:
        total = _Acc()
        total.merge(self.node)
        total.merge(self.edge)
        out: dict = {}
        for name, acc in (("node", self.node), ("edge", self.edge), ("total", total)):
            out[f"{name}_mae_meh"] = acc.mae * MEH_PER_HARTREE
            out[f"{name}_std_meh"] = acc.std * MEH_PER_HARTREE
            out[f"{name}_mae_mev"] = acc.mae * MEV_PER_HARTREE
            out[f"{name}_std_mev"] = acc.std * MEV_PER_HARTREE
        if self.parts:  # complex (spinful) blocks: real- and imaginary-part MAEs beside the modulus MAE
            for part in ("re", "im"):
                tot = _Acc()
                tot.merge(self.parts[f"node_{part}"])
                tot.merge(self.parts[f"edge_{part}"])
                for name, acc in (("node", self.parts[f"node_{part}"]), ("edge", self.parts[f"edge_{part}"]),
                                  ("total", tot)):
                    out[f"{name}_mae_{part}_mev"] = acc.mae * MEV_PER_HARTREE
        for k in sorted(self.pairs):
            out[f"edge_mae_mev[{k}]"] = self.pairs[k].mae * MEV_PER_HARTREE
        for k in sorted(self.orbital):
            out[f"mae_mev[{k}]"] = self.orbital[k].mae * MEV_PER_HARTREE
        return out

    def distance_profile(self) -> dict:
        """Bin edges (A), MAE per bin (meV) and sample counts, for the error-vs-distance plot."""
        return {"bins": self.bins.tolist(), "mae_mev": [a.mae * MEV_PER_HARTREE for a in self.by_dist],
                "count": [a.n for a in self.by_dist]}


def block_metrics(pred_node, ref_node, mask_node, pred_edge, ref_edge, mask_edge, z_node, edge_index,
                  layout: OrbitalLayout, dist=None, bins=None) -> dict:
    """One-shot block metrics for padded numpy arrays (see `BlockErrors`)."""
    acc = BlockErrors(layout, bins)
    acc.add_nodes(pred_node, ref_node, mask_node)
    z_node = np.asarray(z_node)
    ei = np.asarray(edge_index)
    acc.add_edges(pred_edge, ref_edge, mask_edge, z_node[ei[0]], z_node[ei[1]], dist)
    return acc.summary()


def _rel(diff: np.ndarray, ref: np.ndarray, p: int) -> float:
    den = np.linalg.norm(ref, ord=p)
    return float(np.linalg.norm(diff, ord=p) / den) if den > 0 else float("nan")


def spectrum_metrics(e_ref: np.ndarray, e_pred: np.ndarray, n_electrons: float | None,
                     window_ev: float = EIG_WINDOW_EV, spin_degeneracy: int = 2,
                     near_ef_ev: float = EIG_NEAR_EF_EV) -> dict:
    """Eigenvalue errors of two sorted spectra (Hartree) of the same size.

    Two families, both over state-by-state differences e_pred[k] - e_ref[k] of the sorted spectra:

    - the seed's relative errors ||E_pred - E_ref||_p / ||E_ref||_p (p = 1, 2; all and occupied
      states). The denominator moves with the arbitrary energy zero of H (ADR 0002): the same
      prediction scores differently after H -> H + c S, so compare them only within one dataset;
    - energy-zero-invariant MAEs (meV): over all states (`eig_mae_mev`), occupied states
      (`eig_mae_occ_mev`) and states within E_F +- `near_ef_ev` of the reference
      (`eig_mae_ef2_mev`; E_F mid-gap). A constant shift of both H's by c S shifts every
      eigenvalue and E_F by c, so these do not move.

    Occupied-state, gap and E_F-window metrics need the electron count; without it (e.g. a
    pseudo-spectrum of H without S, which has no occupation) they are NaN.
    """
    e_ref = np.sort(np.asarray(e_ref, dtype=np.float64))
    e_pred = np.sort(np.asarray(e_pred, dtype=np.float64))
    if e_ref.shape != e_pred.shape:
        raise ValueError(f"spectra of different sizes: {e_ref.shape} vs {e_pred.shape}")
    diff = e_pred - e_ref
    nan = float("nan")
    out = {"eig_rel_l1": _rel(diff, e_ref, 1), "eig_rel_l2": _rel(diff, e_ref, 2),
           "eig_rel_l1_occ": nan, "eig_rel_l2_occ": nan, "gap_ref_ev": nan, "gap_err_mev": nan,
           "eig_mae_window_mev": nan,
           "eig_mae_mev": float(np.abs(diff).mean() * MEV_PER_HARTREE) if diff.size else nan,
           "eig_mae_occ_mev": nan, "eig_mae_ef2_mev": nan}
    if n_electrons is None:
        return out
    n_occ = int(round(n_electrons / spin_degeneracy))
    if 0 < n_occ <= e_ref.size:
        out["eig_rel_l1_occ"] = _rel(diff[:n_occ], e_ref[:n_occ], 1)
        out["eig_rel_l2_occ"] = _rel(diff[:n_occ], e_ref[:n_occ], 2)
        out["eig_mae_occ_mev"] = float(np.abs(diff[:n_occ]).mean() * MEV_PER_HARTREE)
    if 0 < n_occ < e_ref.size:
        g_ref = band_gap(e_ref, n_electrons, spin_degeneracy)
        g_pred = band_gap(e_pred, n_electrons, spin_degeneracy)
        out["gap_ref_ev"] = g_ref * HARTREE_EV
        out["gap_err_mev"] = abs(g_pred - g_ref) * MEV_PER_HARTREE
        ef = fermi_level(e_ref, n_electrons, spin_degeneracy=spin_degeneracy)
        for key, half_width in (("eig_mae_window_mev", window_ev), ("eig_mae_ef2_mev", near_ef_ev)):
            sel = np.abs(e_ref - ef) <= half_width / HARTREE_EV
            if sel.any():
                out[key] = float(np.abs(diff[sel]).mean() * MEV_PER_HARTREE)
    return out


#: every key `spectrum_metrics` returns, in the order evaluate averages and reports them
SPECTRUM_KEYS = ("eig_rel_l1", "eig_rel_l2", "eig_rel_l1_occ", "eig_rel_l2_occ", "gap_ref_ev", "gap_err_mev",
                 "eig_mae_window_mev", "eig_mae_mev", "eig_mae_occ_mev", "eig_mae_ef2_mev")


def rotate_graph(data, R: torch.Tensor):
    """Copy of a graph with positions and cell rotated by R (r -> R r)."""
    out = data.clone()
    R = R.to(data.pos.dtype)
    out.pos = data.pos @ R.T
    out.cell = data.cell @ R.T
    return out


@torch.no_grad()
def equivariance_error(model, data, layout: OrbitalLayout, seed: int = 0,
                       improper: Sequence[bool] = (False, True)) -> dict:
    """Max and relative error of f(R x) vs D(R) f(x) D(R)^dagger over real-orbital entries (meV).

    One random rotation R (seeded) per entry of `improper`: a proper one and the rotoinversion -R
    by default, so a model that breaks parity is caught too; the worst of them is returned
    (max |diff| in meV, and the largest ||diff|| / ||f(R x)||). D = D_layout(R) for spinless
    models; for spinful ones (`model.spinful`) the SU(2) rotation kron(U(R), D_layout(R)) of
    docs/adr/0006 (U(-R) = U(R): spin is axial).
    """
    from zoo.physics.wigner import random_rotation

    p = model(data)
    worst = {"equivariance_max_mev": 0.0, "equivariance_rel": 0.0}
    for flag in improper:
        e = _equivariance_once(model, data, layout, p, random_rotation(seed, improper=bool(flag)))
        worst = {k: max(worst[k], e[k]) for k in worst}
    return worst


def _equivariance_once(model, data, layout: OrbitalLayout, p, R: torch.Tensor) -> dict:
    """Errors of one rotation R, given the unrotated prediction p."""
    from zoo.data.torch_data import block_masks
    from zoo.physics.spin import spinful_wigner
    from zoo.physics.wigner import wigner_D_shells

    q = model(rotate_graph(data, R))
    if getattr(model, "spinful", False):
        D = spinful_wigner(layout.slot_ls, R)
    else:
        D = wigner_D_shells(layout.slot_ls, R)
    D = D.to(dtype=p.node_blocks.dtype, device=p.node_blocks.device)
    Dh = D.conj().transpose(-1, -2)
    mn, me = block_masks(data)
    dn = (D @ p.node_blocks @ Dh - q.node_blocks)[mn]
    de = (D @ p.edge_blocks @ Dh - q.edge_blocks)[me]
    wide = torch.complex128 if dn.is_complex() else torch.float64
    diff = torch.cat([dn, de]).to(wide)
    ref = torch.cat([q.node_blocks[mn], q.edge_blocks[me]]).to(wide)
    return {"equivariance_max_mev": float(diff.abs().max()) * MEV_PER_HARTREE if diff.numel() else 0.0,
            "equivariance_rel": float(diff.norm() / ref.norm().clamp(min=1e-30))}


def parameter_count(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


@torch.no_grad()
def timed_inference(model, data, repeats: int = 1):
    """(prediction, seconds of the fastest of `repeats` forward passes)."""
    best, pred = float("inf"), None
    for _ in range(max(repeats, 1)):
        if data.pos.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        pred = model(data)
        if data.pos.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return pred, best
