"""Building a catalogue dataset into the cache: resumable, one structure file at a time.

    zoo data build a-hfo2 --size small      # build into the cache (resumable, progress bar)
    ensure_built("a-hfo2")                   # build if missing (used by `zoo bench`)

Each build writes into a staging directory, one structure file at a time (atomic), so an
interrupted or failed build keeps its finished structures and a re-run continues where it
stopped. The structures are computed in worker processes (zoo.data.catalogue.pool); the card
then gathers what was measured on them: engine metadata, truncation, structure statistics and the
spectrum mode (zoo.data.catalogue.spectrum).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.data.catalogue.contamination import IMAGE_CONTAMINATION
from zoo.data.catalogue.entries import Entry, parse_name
from zoo.data.catalogue.paths import card_name, dataset_path, is_built
from zoo.data.catalogue.pool import WorkerPool, openblas_loaded, worker_env
from zoo.data.catalogue.recipes import Job
from zoo.data.catalogue.spectrum import SPECTRUM_KEY, lowest_s_eigenvalue, spectrum_summary
from zoo.data.format import CARD_NAME, DatasetWriter, Record, Structure, read_record
from zoo.errors import ZooError
from zoo.physics.basis import BasisSet


def build(name: str, size: str | None = None, cache: str | os.PathLike | None = None, jobs: int = 1,
          engine: str | None = None, progress: bool = True, overwrite: bool = False, unfold: bool = False,
          unfold_margin: float = 10.0) -> Path:
    """Build a catalogue dataset into the cache; resumes an interrupted build. Returns its path.

    `unfold=True` (periodic entries): explicit per-image blocks from one run on a supercell whose
    widths reach cutoff + unfold_margin (zoo.data.engines.base.unfolded_record), stored beside
    the folded build as <name>/<size>-unfolded, card name "<name>+unfolded[@size]".

    One builder per dataset directory: a second process (e.g. two `zoo bench` runs started
    together on an unbuilt dataset) waits on a file lock, then finds the finished dataset."""
    import sys

    from filelock import FileLock, Timeout

    entry, size = parse_name(name, size)
    dest = dataset_path(entry.name, size, cache, unfolded=unfold and entry.periodic)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(dest.parent / f".{dest.name}.lock"))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        if progress:
            print(f"{entry.name}: another process is building {dest}; waiting for it", file=sys.stderr)
        lock.acquire()
    try:
        return _build_locked(name, size, cache, jobs, engine, progress, overwrite, unfold, unfold_margin)
    finally:
        lock.release()


def ensure_built(name: str, size: str | None = None, cache: str | os.PathLike | None = None, jobs: int = 1,
                 progress: bool = True) -> Path:
    """The dataset's directory, building it first if it is not there yet."""
    if is_built(name, size, cache):
        return dataset_path(name, size, cache)
    return build(name, size, cache=cache, jobs=jobs, progress=progress)


def _build_locked(name: str, size: str | None, cache, jobs: int, engine: str | None, progress: bool, overwrite: bool,
                  unfold: bool, unfold_margin: float) -> Path:
    from zoo.data.engines import get_engine

    entry, size = parse_name(name, size)
    engine_name = engine or entry.engine
    eng = get_engine(engine_name, **entry.engine_options)  # EngineError now if it is missing
    spec = entry.sizes[size]
    unfold = unfold and entry.periodic
    dest = dataset_path(entry.name, size, cache, unfolded=unfold)
    if (dest / CARD_NAME).is_file() and not overwrite:
        return dest
    t0 = time.time()
    plan = entry.plan(entry, size, entry.seed)
    lot = {**eng.level_of_theory(), **{k: v for k, v in entry.card_extra.items() if k != "structures"}}
    writer = DatasetWriter(dest, card_name(entry.name, size, unfold), eng.basis(), spec.cutoff, lot,
                           image_convention="gamma-folded" if entry.periodic and not unfold else "explicit",
                           resume=True, keep_on_error=True, overwrite=overwrite)
    with writer:
        todo = {n: (engine_name, entry.engine_options, make, spec.cutoff, n, unfold_margin if unfold else None)
                for n, _, make in plan if not writer.has(n)}
        _compute_missing(writer, todo, len(plan), jobs, engine_name, progress)
        writer.provenance = _provenance(entry, size, plan, writer.staging, eng.basis(), jobs, t0)
        contamination = IMAGE_CONTAMINATION.get((entry.name, size))
        if contamination and engine_name == "tblite" and not unfold:
            writer.provenance["image_contamination"] = contamination
        splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for n, split, _ in plan:
            splits[split].append(n)
        ds = writer.finalize(splits, description=entry.description, overwrite=overwrite)
    return ds.path


def _compute_missing(writer: DatasetWriter, todo: dict[str, tuple], n_planned: int, jobs: int, engine_name: str,
                     progress: bool) -> None:
    """Compute the structures in `todo` (name -> compute_record arguments), `jobs` at a time, into
    the writer's staging directory. Every one is tried; then the first failure is raised, naming
    its structure (the finished ones stay for the next run)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=n_planned, initial=n_planned - len(todo), desc=writer.name, unit="structure", disable=not progress)
    failure: ZooError | None = None
    with WorkerPool(jobs, worker_env(jobs, engine_name)) as pool:
        for n, rec, exc in pool.run(compute_record, todo):
            if exc is not None:
                if not isinstance(exc, Exception):
                    raise exc  # KeyboardInterrupt inside a worker (Ctrl-C reaches the whole process group)
                # engine, structure recipe or worker failure: name the structure
                what = str(exc) if isinstance(exc, ZooError) else f"{type(exc).__name__}: {exc}"
                failure = failure or ZooError(f"building {writer.name}: structure {n!r} failed: {what}. Finished "
                                              f"structures are kept in {writer.staging}; re-run to resume")
                continue
            writer.add(rec)
            bar.update(1)
    bar.close()
    if failure is not None:
        raise failure


def compute_record(engine_name: str, engine_options: dict, make: Callable[[], Structure], cutoff: float, name: str,
                   unfold_margin: float | None = None) -> Record:
    """One labelled structure (runs in a worker): make it, run the engine, time both."""
    from zoo.data.engines import get_engine
    from zoo.data.engines.base import unfolded_record

    t0 = time.perf_counter()
    structure = make()
    t_struct = time.perf_counter() - t0
    eng = get_engine(engine_name, **engine_options)
    if unfold_margin is None:
        rec = eng.record(structure, cutoff, name)
    else:
        rec = unfolded_record(eng, structure, cutoff, name, unfold_repeat(structure, cutoff, unfold_margin))
    rec.meta["structure_wall_s"] = round(t_struct, 2)
    rec.meta["openblas_loaded"] = openblas_loaded()
    return rec


def unfold_repeat(structure: Structure, cutoff: float, margin: float) -> tuple[int, int, int]:
    """Smallest supercell whose periodic widths reach cutoff + margin (and 2 x cutoff)."""
    from zoo.data.graph import perpendicular_widths

    w = perpendicular_widths(structure.cell)
    need = max(cutoff + margin, 2 * cutoff)
    return tuple(int(np.ceil(need / w[k] - 1e-9)) if structure.pbc[k] else 1 for k in range(3))


def _provenance(entry: Entry, size: str, plan: list[Job], staging: Path, basis: BasisSet, jobs: int,
                t0: float) -> dict:
    """The card's provenance: the recipe, the build cost, and what was measured on each structure
    (read back one at a time from the staging directory)."""
    spec = entry.sizes[size]
    per_structure: dict[str, dict] = {}
    stats: dict[str, dict] = {}
    lowest: list[float | None] = []
    for n, _, _ in plan:
        rec = read_record(staging / "structures" / f"{n}.h5", basis)
        per_structure[n] = rec.meta
        if entry.bond_cut:
            stats[n] = structure_stats(rec.structure, entry.bond_cut)
        lowest.append(lowest_s_eigenvalue(rec))
    walls = [m.get("wall_s", 0.0) + m.get("structure_wall_s", 0.0) for m in per_structure.values()]
    prov = {
        "catalogue_entry": entry.name, "size": size, "size_note": spec.note, "generation_seed": entry.seed,
        "structures": entry.card_extra.get("structures", entry.description),
        "build_cost": {"sum_structure_wall_s": round(float(sum(walls)), 1), "this_run_wall_s": round(time.time() - t0, 1),
                       "jobs": jobs, "host": f"{platform.machine()} {os.cpu_count()} cpus",
                       "openblas_preloaded": all(m.get("openblas_loaded", False) for m in per_structure.values())},
        "truncation": summarize_truncation(per_structure),
        "per_structure": per_structure,
    }
    if stats:
        prov["structure_stats"] = stats
    prov[SPECTRUM_KEY] = spectrum_summary(lowest)
    return prov


def structure_stats(structure: Structure, bond_cut: float) -> dict:
    """Coordination per species, shortest distances per species pair, density (for cards and
    `zoo data stats`)."""
    from zoo.data.covalent import coordination_stats

    return coordination_stats(structure.to_ase(), bond_cut)


def summarize_truncation(per: dict[str, dict]) -> dict:
    """Worst value over the structures of what the cutoff dropped (engine metadata per structure)."""
    out = {}
    for key in ("dropped_max_abs_h", "dropped_max_abs_s", "dropped_frac_frobenius_h"):
        vals = [m[key] for m in per.values() if key in m]
        if vals:
            out[f"max_{key}"] = float(max(vals))
    return out
