"""Scoring a trained model on the test split: the metric suite of `zoo bench`.

Each test structure is one full graph (never partitions). Block errors (node / edge / per element
pair / per orbital pair / vs distance), spectra (generalized with S when S is positive definite, else
eig(H) alone, named in the `spectrum` column), rotation and rotoinversion errors, the raw output's
hermiticity defect and inference time; every figure except the hermiticity defect is computed on the
hermitized prediction, the H that `zoo predict` writes.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from zoo.bench.metrics import SPECTRUM_KEYS, spectrum_metrics
from zoo.data.format import Dataset, Record
from zoo.errors import ZooError

DISTANCE_BINS = 16


def compare_spectra(rec: Record, pred_rec: Record, notes: list[str]) -> tuple[np.ndarray, np.ndarray, dict, str]:
    """Reference and predicted eigenvalues of one structure, their metrics and the spectrum mode.

    Generalized (H, S) when S is positive definite; otherwise the seed's protocol, eig(H) of the
    hermitized H alone (mode "H only"), whose values are not orbital energies, so the occupied, gap and
    window metrics stay NaN. A reason is appended to `notes` for the fallback.
    """
    from zoo.physics import spectra

    # a spinful H is 2n square with one electron per state; spinless states hold two
    spin_deg = 1 if rec.spinful else 2
    try:
        e_ref, e_pred = rec.eigvalsh(), pred_rec.eigvalsh()
        return e_ref, e_pred, spectrum_metrics(e_ref, e_pred, rec.n_electrons, spin_degeneracy=spin_deg), "H,S"
    except ZooError as exc:
        # S rebuilt from blocks within the cutoff can be indefinite (diffuse basis, finite cutoff)
        notes.append(f"{rec.name}: generalized spectrum impossible ({exc}); compared eig(H) without S")
        e_ref = spectra.eigh(rec.matrix("H", hermitize=True))
        e_pred = spectra.eigh(pred_rec.matrix("H", hermitize=True))
        return e_ref, e_pred, spectrum_metrics(e_ref, e_pred, None), "H only"


def evaluate(model, ds: Dataset, info, device: torch.device, dtype: torch.dtype, seed: int = 0,
             eig_max_orbitals: int = 6000, n_parity: int = 50_000) -> tuple[dict, dict]:
    """Metric suite on the test split, each structure one full graph. Returns (metrics, report data)."""
    from zoo.bench.losses import label_masks
    from zoo.bench.metrics import BlockErrors, equivariance_error, timed_inference
    from zoo.data.torch_data import edge_vectors, record_to_data
    from zoo.models.contract import hermiticity_error, symmetrize_prediction
    from zoo.physics.assembly import unpad_blocks
    from zoo.physics.units import MEV_PER_HARTREE

    layout = info.layout
    bins = np.linspace(0.0, info.cutoff, DISTANCE_BINS + 1)
    acc = BlockErrors(layout, bins)
    rng = np.random.default_rng(seed)
    spec_rows, eig_ref_all, eig_pred_all = [], [], []
    spec_modes: set[str] = set()
    parity_ref, parity_pred, parity_kind = [], [], []
    n_atoms, t_infer, equi = 0, 0.0, None
    herm_max = 0.0  # Hartree, max over test structures
    notes: list[str] = []
    model.eval()
    for k, rec in enumerate(ds.records("test")):
        data = record_to_data(rec, layout, dtype).to(device)
        pred, dt = timed_inference(model, data, repeats=2)
        # the raw output's hermiticity defect is reported; every metric below (blocks and spectra)
        # is computed on the hermitized prediction, the H that `zoo predict` writes
        herm_max = max(herm_max, hermiticity_error(pred, data))
        pred = symmetrize_prediction(pred, data)
        n_atoms += rec.n_atoms
        t_infer += dt
        mn, me = label_masks(data)
        # spinful blocks are complex (docs/adr/0006): widen to complex128, never drop the imaginary part
        wide = torch.complex128 if rec.spinful else torch.float64
        pn, pe = (pred.node_blocks.detach().cpu().to(wide).numpy(), pred.edge_blocks.detach().cpu().to(wide).numpy())
        yn, ye = data.y_node.cpu().to(wide).numpy(), data.y_edge.cpu().to(wide).numpy()
        mn, me = mn.cpu().numpy(), me.cpu().numpy()
        z = rec.numbers
        ei = data.edge_index.cpu().numpy()
        dist = edge_vectors(data).norm(dim=1).detach().cpu().double().numpy()
        acc.add_nodes(pn, yn, mn)
        acc.add_edges(pe, ye, me, z[ei[0]], z[ei[1]], dist)
        for kind, p, y, m in (("node", pn, yn, mn), ("edge", pe, ye, me)):
            r, q = y[m], p[m]
            if rec.spinful:  # the real and imaginary parts are both matrix elements on the parity plot
                r, q = np.concatenate([r.real, r.imag]), np.concatenate([q.real, q.imag])
            take = rng.choice(r.size, size=min(r.size, n_parity), replace=False) if r.size else np.zeros(0, int)
            parity_ref.append(r[take])
            parity_pred.append(q[take])
            parity_kind.append(np.full(take.size, kind == "edge"))
        if int(rec.norb.sum()) > eig_max_orbitals:
            notes.append(f"{rec.name}: spectrum skipped ({int(rec.norb.sum())} orbitals > {eig_max_orbitals})")
        else:
            h_on = unpad_blocks(pn, layout.index, z, z, spinful=rec.spinful)
            h_off = unpad_blocks(pe, layout.index, z[ei[0]], z[ei[1]], spinful=rec.spinful)
            pred_rec = rec.with_blocks(h_on, h_off, name=f"{rec.name}-pred")
            e_ref, e_pred, row, mode = compare_spectra(rec, pred_rec, notes)
            spec_rows.append(row)
            spec_modes.add(mode)
            eig_ref_all.append(e_ref)
            eig_pred_all.append(e_pred)
        # a proper rotation and a rotoinversion on every test structure; the row keeps the worst
        e = equivariance_error(model, data, layout, seed=seed + k)
        equi = e if equi is None else {key: max(equi[key], e[key]) for key in e}
        del pred
    metrics = acc.summary()
    for key in SPECTRUM_KEYS:
        vals = [r[key] for r in spec_rows if np.isfinite(r[key])]
        metrics[key] = float(np.mean(vals)) if vals else float("nan")
    metrics["spectrum"] = "+".join(sorted(spec_modes)) or "skipped"
    metrics.update(equi or {})
    metrics["hermiticity_max_mev"] = herm_max * MEV_PER_HARTREE
    metrics["infer_us_per_atom"] = 1e6 * t_infer / max(n_atoms, 1)
    metrics["n_test_atoms"] = n_atoms
    report = {"parity_ref": np.concatenate(parity_ref), "parity_pred": np.concatenate(parity_pred),
              "parity_is_edge": np.concatenate(parity_kind), "dist_bins": bins,
              "dist_mae_mev": np.asarray(acc.distance_profile()["mae_mev"]),
              "dist_count": np.asarray(acc.distance_profile()["count"]), "notes": np.asarray(notes, dtype=str)}
    if notes:
        print("zoo bench: " + "; ".join(notes), file=sys.stderr)
    if eig_ref_all:
        report["eig_ref"], report["eig_pred"] = eig_ref_all[0], eig_pred_all[0]
        n_el = next(iter([r.n_electrons for r in ds.records("test")]), None)
        report["n_electrons"] = np.asarray(np.nan if n_el is None else n_el)
    return metrics, report
