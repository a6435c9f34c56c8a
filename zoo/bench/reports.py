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


# -- the comparison page: leaderboards/README.md and its charts ----------------------------------

README_NAME = "README.md"
BAR_CHART = "compare_total_mae.png"


def _best_run(group) -> dict:
    """The run of a seed group with the lowest total MAE (its report is the one plotted)."""
    def key(r):
        try:
            x = float(r.get("total_mae_mev", "nan"))
        except ValueError:
            x = float("nan")
        return (np.isnan(x), x)

    return min(group.rows, key=key)


def _bar_chart(comp, path: Path) -> None:
    plt = _pyplot()
    models, datasets = comp.models, comp.datasets
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(datasets) * max(len(models), 2) * 0.45 + 2), 4.2))
    x = np.arange(len(datasets))
    vals = []
    for k, m in enumerate(models):
        mean = np.array([comp.value(m, d)[0] if comp.value(m, d)[0] is not None else np.nan for d in datasets])
        sd = np.array([comp.value(m, d)[1] if comp.value(m, d)[1] is not None else 0.0 for d in datasets])
        vals.append(mean)
        ax.bar(x + (k - (len(models) - 1) / 2) * width, mean, width, yerr=sd, capsize=2, label=m, color=f"C{k % 10}")
    ax.set_xticks(x)
    ax.set_xticklabels(datasets, rotation=30, ha="right")
    ax.set_ylabel(f"{comp.column} (meV, mean ± std over seeds)")
    finite = np.concatenate(vals)[np.isfinite(np.concatenate(vals))] if vals else np.zeros(0)
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 20:
        ax.set_yscale("log")  # baselines can sit an order of magnitude above the learned models
    ax.legend(fontsize=8, ncol=min(len(models), 4))
    ax.set_title(f"{comp.column} per dataset and model (lower is better)")
    _save(fig, path)
    plt.close(fig)


def _parity_figure(dataset: str, panels: list[tuple[str, dict, dict]], path: Path) -> None:
    """One panel per model: reference vs predicted H elements of its best run's test structures."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, (model, row, d) in zip(axes[0], panels):
        ref, pred, edge = d["parity_ref"] * 1e3, d["parity_pred"] * 1e3, d["parity_is_edge"].astype(bool)
        for sel, label, c in ((~edge, "on-site", "C1"), (edge, "off-site", "C0")):
            if sel.any():
                ax.scatter(ref[sel], pred[sel], s=1, alpha=0.3, label=label, color=c, rasterized=True)
        if ref.size:
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.6)
        ax.set_title(f"{model} (total MAE {float(row['total_mae_mev']):.3g} meV)", fontsize=9)
        ax.set_xlabel("reference (mE$_h$)")
        ax.set_ylabel("predicted (mE$_h$)")
    axes[0][0].legend(loc="upper left", markerscale=6, fontsize=7)
    fig.suptitle(f"{dataset}: best run per model (test set)")
    _save(fig, path)
    plt.close(fig)


def _hardware(rows: list[dict]) -> str:
    seen = dict.fromkeys(f"{r.get('cpu', '?')}, {r.get('cores', '?')} cores, {r.get('threads', '?')} threads, "
                         f"{r.get('device', '?')}, torch {r.get('torch', '?')}" for r in rows)
    return "; ".join(seen)


def write_comparison(directory: str | Path = "leaderboards", runs_dir: str | Path = "runs",
                     command: str = "zoo leaderboard --compare --write") -> list[Path]:
    """Regenerate <directory>/README.md (comparison tables, budgets, hardware) and its PNG charts.

    Tables: total, node and edge MAE (and the eigenvalue MAE where rows have it), models x datasets,
    mean ± std over seeds, ranked within each dataset; a grouped bar chart of total MAE; per dataset
    the parity plot of each model's best run, read from <runs_dir>/<dataset>/<run_id>/report_data.npz
    (the README says which runs' report data are absent). Returns the files written.
    """
    import datetime as _dt

    from zoo.bench.leaderboard import build_comparison, class_label, render_comparison

    directory, runs_dir = Path(directory), Path(runs_dir)
    comp = build_comparison(directory, "total")
    written: list[Path] = []
    lines = ["# Leaderboards: models x datasets", "",
             f"Generated by `{command}` on {_dt.datetime.now().isoformat(timespec='seconds')} from the CSVs in this "
             "folder; do not edit by hand (rerun the command). One CSV per dataset, one row per run "
             "(`zoo leaderboard DATASET` shows every configuration, ablations included).", "",
             "How to read: each cell is the mean ± sample standard deviation over seeds (n runs) of the default "
             "preset runs, and #k the rank within the dataset (lower error is better). Only runs in one "
             "comparison class (same dataset recipe, same budget) are compared; a dataset's other classes are "
             "listed under the tables. `mean` (per-element invariant on-site means, off-site zero) and `sk` "
             "(two-centre Slater-Koster) are the calibration baselines: a learned model's figures mean something "
             "only against them.", ""]
    sections = [("Total MAE (meV)", "total"), ("Node (on-site) MAE (meV)", "node"), ("Edge (off-site) MAE (meV)", "edge"),
                ("Eigenvalue MAE, all states (meV; energy-zero invariant)", "eig_mae"),
                ("Eigenvalue MAE within E_F ± 2 eV (meV)", "eig_mae_ef2")]
    for title, metric in sections:
        try:
            c = comp if metric == "total" else build_comparison(directory, metric)
        except ZooError:
            continue  # no CSV has this column yet (rows older than the metric)
        lines += [f"## {title}", "", render_comparison(c, fmt="md"), ""]

    lines += ["## Budgets, builds and hardware", "",
              "| dataset | class shown (budget; recipe) | builds (card_hash) | runs | epochs (per model, mean) | hardware |",
              "|---|---|---|---|---|---|"]
    for d in comp.datasets:
        groups = [comp.cells[m, d] for m in comp.models if (m, d) in comp.cells]
        rows = [r for g in groups for r in g.rows]
        builds = ", ".join(dict.fromkeys(r.get("card_hash", "") for r in rows))
        epochs = ", ".join(f"{m}: {comp.cells[m, d].mean('epochs_run'):.0f}" for m in comp.models
                           if (m, d) in comp.cells and comp.cells[m, d].mean("epochs_run") is not None)
        lines.append(f"| {d} | {class_label(comp.classes[d])} | {builds} | {len(rows)} | {epochs} | {_hardware(rows)} |")
    lines.append("")

    bar = directory / BAR_CHART
    _bar_chart(comp, bar)
    written.append(bar)
    lines += ["## Charts", "", f"![total MAE per dataset and model]({BAR_CHART})", "",
              "### Parity plots (best run per model)", ""]
    for d in comp.datasets:
        panels, missing = [], []
        for m in comp.models:
            if (m, d) not in comp.cells:
                continue
            row = _best_run(comp.cells[m, d])
            src = runs_dir / d / row.get("run_id", "") / REPORT_DATA
            try:
                panels.append((m, row, dict(np.load(src))))
            except (OSError, ValueError):
                missing.append(f"{m} (run {row.get('run_id', '?')}: no {src})")
        if panels:
            png = directory / f"parity_{d}.png"
            _parity_figure(d, panels, png)
            written.append(png)
            lines += [f"**{d}**", "", f"![parity {d}]({png.name})", ""]
        if missing:
            lines += [f"{d}: no parity plot for " + "; ".join(missing)
                      + " (the run folder is not on this machine)", ""]
    readme = directory / README_NAME
    atomic_write(readme, lambda p: p.write_text("\n".join(lines).rstrip() + "\n"), suffix=".md")
    written.insert(0, readme)
    return written
