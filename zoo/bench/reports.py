"""Run reports: parity plot, error vs distance, eigenvalue spectra (PNG, matplotlib Agg).

`save_report_data` stores what the plots need in report_data.npz, so `zoo report RUN_DIR`
re-renders them without the model or the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from zoo.data.format import atomic_write
from zoo.errors import ZooError
from zoo.physics.units import HARTREE_EV

REPORT_DATA = "report_data.npz"
PLOTS = ("parity.png", "error_vs_distance.png", "spectra.png")


def save_report_data(run_dir: str | Path, data: Mapping[str, np.ndarray]) -> None:
    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **data)

    atomic_write(Path(run_dir) / REPORT_DATA, _write, suffix=".npz")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda p: fig.savefig(p, dpi=120, bbox_inches="tight", format="png"), suffix=".png")


def render(run_dir: str | Path) -> list[Path]:
    """(Re-)draw the report PNGs of a run folder; returns the files written."""
    run_dir = Path(run_dir)
    src = run_dir / REPORT_DATA
    if not src.is_file():
        raise ZooError(f"{run_dir}: no {REPORT_DATA} (not a finished zoo run folder)")
    try:
        d = dict(np.load(src))
    except (OSError, ValueError) as exc:
        raise ZooError(f"{src}: unreadable report data ({exc})") from None
    plt = _pyplot()
    out = []

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ref, pred, edge = d["parity_ref"] * 1e3, d["parity_pred"] * 1e3, d["parity_is_edge"].astype(bool)
    for sel, label, c in ((~edge, "on-site", "C1"), (edge, "off-site", "C0")):
        if sel.any():
            ax.scatter(ref[sel], pred[sel], s=2, alpha=0.4, label=label, color=c, rasterized=True)
    if ref.size:
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel("reference H element (mE$_h$)")
    ax.set_ylabel("predicted H element (mE$_h$)")
    ax.legend(loc="upper left", markerscale=4)
    ax.set_title("parity (test)")
    _save(fig, run_dir / PLOTS[0])
    plt.close(fig)
    out.append(run_dir / PLOTS[0])

    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins, mae, cnt = d["dist_bins"], d["dist_mae_mev"], d["dist_count"]
    mid = 0.5 * (bins[1:] + bins[:-1])
    keep = cnt > 0
    ax.plot(mid[keep], mae[keep], "o-")
    ax.set_xlabel("interatomic distance (Å)")
    ax.set_ylabel("edge MAE (meV)")
    ax.set_yscale("log" if keep.any() and np.all(mae[keep] > 0) else "linear")
    ax.set_title("error vs distance (test)")
    _save(fig, run_dir / PLOTS[1])
    plt.close(fig)
    out.append(run_dir / PLOTS[1])

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    if "eig_ref" in d:
        er, ep = d["eig_ref"] * HARTREE_EV, d["eig_pred"] * HARTREE_EV
        k = np.arange(er.size)
        a1.plot(k, er, "k-", lw=1, label="reference")
        a1.plot(k, ep, "C3--", lw=1, label="predicted")
        a1.set_xlabel("state index")
        a1.set_ylabel("eigenvalue (eV)")
        a1.legend()
        a2.plot(er, (ep - er) * 1e3, "o", ms=2)
        a2.axhline(0.0, color="k", lw=0.6)
        a2.set_xlabel("reference eigenvalue (eV)")
        a2.set_ylabel("predicted - reference (meV)")
    else:
        a1.text(0.5, 0.5, "spectrum not computed\n(structure above eig_max_orbitals)", ha="center",
                transform=a1.transAxes)
    fig.suptitle("eigenvalue spectrum (test)")
    _save(fig, run_dir / PLOTS[2])
    plt.close(fig)
    out.append(run_dir / PLOTS[2])
    return out
