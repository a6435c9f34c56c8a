"""Inference section: what `zoo predict` costs as the structure grows.

Each backbone is saved untrained as a `zoo bench` checkpoint and every size is predicted by
`zoo.bench.predict.predict_files` itself (exact augmented RCB partitions, hermitized blocks
streamed to an HDF5 file) in a fresh process, so the wall time, process CPU time and peak RSS
of a row are that prediction's alone. Per backbone the section fits the exponent of CPU time vs
N (least squares on log-log; 1.0 is linear) and the memory flatness, peak RSS of the largest size
over that of the reference size (the one nearest 3,000 atoms; <= 1.2 is the goal).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from zoo.bench.perf.backbones import preset_hparams, write_checkpoint
from zoo.bench.perf.family import Family, supercells, write_supercell
from zoo.bench.perf.worker import clock, isolated, rss_mb

#: memory flatness is peak(largest) / peak(the measured size nearest this many atoms)
MEMORY_REFERENCE_ATOMS = 3000


def write_supercells(family: Family, sizes: Sequence[int], workdir: Path) -> list[dict]:
    """One structure file per size: [{'target', 'repeat', 'atoms', 'path', ...}] in ascending size."""
    out = []
    for target, reps in supercells(family.cell, sizes, family.cutoff):
        name = f"cell-{'x'.join(map(str, reps))}.extxyz"
        path, desc = write_supercell(family.cell, reps, family.cutoff, Path(workdir) / name)
        out.append({"target": target, **desc, "path": str(path)})
    return out


def predict_job(spec: dict) -> dict:
    """Worker side: one `predict_files` call, timed; the output file is removed afterwards."""
    import importlib

    from zoo.bench.predict import predict_files
    from zoo.models.registry import list_models

    # what predict_files imports on first use, imported before the clock: a one-time cost, not the prediction's
    for mod in ("h5py", "ase.io", "tqdm.auto", "zoo.bench.run", "zoo.bench.trainer", "zoo.data.partition",
                "zoo.data.structure_io", "zoo.models.contract"):
        importlib.import_module(mod)
    list_models()
    start = rss_mb()
    try:
        with clock() as c:
            (r,) = predict_files(spec["checkpoint"], [spec["structure"]], spec["output"], device="cpu",
                                 max_atoms_per_part=int(spec["max_atoms_per_part"]))
    finally:
        Path(spec["output"]).unlink(missing_ok=True)
    return {"wall_s": c["wall"], "cpu_s": c["cpu"], "model_s": r.seconds, "atoms": r.n_atoms, "edges": r.n_edges,
            "parts": r.n_parts, "max_pending_edges": r.max_pending_edges, "output_mb": r.nbytes / 2**20,
            "start_rss_mb": start}


def fit_exponent(n: Sequence[float], t: Sequence[float]) -> float:
    """b of t = a N^b by least squares on (log N, log t); nan with fewer than two distinct N."""
    n, t = np.asarray(n, dtype=float), np.asarray(t, dtype=float)
    ok = (n > 0) & (t > 0)
    n, t = n[ok], t[ok]
    if len(np.unique(n)) < 2:
        return float("nan")
    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def memory_flatness(atoms: Sequence[int], peaks: Sequence[float], reference: int = MEMORY_REFERENCE_ATOMS) -> float:
    """peak(largest N) / peak(the other N nearest `reference`); nan with fewer than two sizes."""
    if len(atoms) < 2:
        return float("nan")
    order = np.argsort(atoms)
    big = int(order[-1])
    ref = min((int(k) for k in order[:-1]), key=lambda k: abs(np.log(atoms[k] / reference)))
    return float(peaks[big] / peaks[ref])


def run_inference(models: Sequence[str], family: Family, sizes: Sequence[int], workdir: Path, *, preset: str,
                  threads: int, max_seconds: float | None, max_atoms_per_part: int,
                  log: Callable[[str], None]) -> dict:
    """{'rows': one per (model, size), 'summary': one per model}. A size is skipped (and so are the
    larger ones) when the previous one, scaled linearly, would take longer than `max_seconds`."""
    from zoo.models.registry import model_class

    inputs = write_supercells(family, sizes, workdir)
    rows, summary = [], []
    for name in models:
        info = family.info(spinful=bool(model_class(name).spinful))
        ckpt = Path(workdir) / f"{name}.pt"
        write_checkpoint(ckpt, name, info, preset_hparams(name, preset))
        done: list[dict] = []
        blocked = ""
        for inp in inputs:
            row = {"model": name, "atoms": inp["atoms"], "repeat": inp["repeat"]}
            est = done[-1]["wall_s"] * inp["atoms"] / done[-1]["atoms"] if done else 0.0
            if not blocked and max_seconds and est > max_seconds:
                blocked = f"skipped (~{est:.0f} s > --max-seconds {max_seconds:g})"
            if blocked:
                rows.append({**row, "status": blocked})
                continue
            res = isolated({"job": "predict", "checkpoint": str(ckpt), "structure": inp["path"],
                            "output": str(Path(workdir) / f"{name}-{inp['atoms']}.h5"),
                            "max_atoms_per_part": max_atoms_per_part}, threads, max_seconds)
            row.update(res)
            rows.append(row)
            if res["status"] != "ok":
                blocked = f"skipped ({inp['atoms']} atoms: {res['status'].split(':')[0]})"
                log(f"inference {name} {inp['atoms']} atoms: {res['status']}")
                continue
            row["us_per_atom"] = 1e6 * res["cpu_s"] / res["atoms"]
            done.append(row)
            log(f"inference {name} {inp['atoms']} atoms: {res['cpu_s']:.1f} s CPU, {res['wall_s']:.1f} s wall, "
                f"peak {res['peak_rss_mb']:.0f} MB")
        atoms = [r["atoms"] for r in done]
        summary.append({
            "model": name, "sizes": len(done),
            "time_exponent": fit_exponent(atoms, [r["cpu_s"] for r in done]),
            "memory_flatness": memory_flatness(atoms, [r["peak_rss_mb"] for r in done]),
            "memory_flatness_above_start": memory_flatness(
                atoms, [max(r["peak_rss_mb"] - r["start_rss_mb"], 1e-3) for r in done]),
        })
    return {"inputs": [{k: v for k, v in i.items() if k != "path"} for i in inputs], "rows": rows,
            "summary": summary}
