"""Building a catalogue dataset into the cache: resumable, one structure file at a time.

    zoo data build a-hfo2 --size small      # build into the cache (resumable, progress bar)
    ensure_built("a-hfo2")                   # build if missing (used by `zoo bench`)

Each build writes into a staging directory, one structure file at a time (atomic), so an
interrupted or failed build keeps its finished structures and a re-run continues where it
stopped. The structures are computed in worker processes (zoo.data.catalogue.pool); the card
then gathers what was measured on them: engine metadata (per structure, with the lowest
eigenvalue of S(Gamma) assembled from the stored blocks), truncation, engine cost (SCF steps,
wall and CPU time, peak memory where the engine reports them), structure statistics and the
spectrum mode (zoo.data.catalogue.spectrum).

A build with another engine (`engine="cp2k"`, or the name "a-hfo2+cp2k") uses the entry's
recipe for it (`Entry.engine_recipe`: options, cutoffs) and lands beside the default build
(zoo.data.catalogue.paths); per-image engines (CP2K `images: true`) store image_convention
"explicit".
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.data.catalogue.contamination import IMAGE_CONTAMINATION
from zoo.data.catalogue.entries import Entry, parse_name, split_variant
from zoo.data.catalogue.paths import card_name, dataset_path, engine_tag, is_built
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
    `engine` other than the entry's (or named in `name`, "a-hfo2+cp2k"): the entry's recipe for that
    engine, stored as <name>/<size>-<engine>, card name "<name>+<engine>[@size]".

    One builder per dataset directory: a second process (e.g. two `zoo bench` runs started
    together on an unbuilt dataset) waits on a file lock, then finds the finished dataset."""
    import sys

    from filelock import FileLock, Timeout

    base, named_engine, named_unfold = split_variant(name)
    if engine and named_engine and engine.lower() != named_engine:
        raise ZooError(f"dataset {name!r} names engine {named_engine!r}, but engine {engine!r} was asked for")
    engine, unfold = engine or named_engine, unfold or named_unfold
    entry, size = parse_name(base, size)
    dest = dataset_path(entry.name, size, cache, unfolded=unfold and entry.periodic, engine=engine)
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(dest.parent / f".{dest.name}.lock"))
    try:
        lock.acquire(timeout=0.5)
    except Timeout:
        if progress:
            print(f"{entry.name}: another process is building {dest}; waiting for it", file=sys.stderr)
        lock.acquire()
    try:
        return _build_locked(entry, size, cache, jobs, engine, progress, overwrite, unfold, unfold_margin)
    finally:
        lock.release()


def ensure_built(name: str, size: str | None = None, cache: str | os.PathLike | None = None, jobs: int = 1,
                 progress: bool = True) -> Path:
    """The dataset's directory, building it first if it is not there yet."""
    if is_built(name, size, cache):
        return dataset_path(name, size, cache)
    return build(name, size, cache=cache, jobs=jobs, progress=progress)


def _build_locked(entry: Entry, size: str, cache, jobs: int, engine: str | None, progress: bool, overwrite: bool,
                  unfold: bool, unfold_margin: float) -> Path:
    from zoo.data.engines import get_engine

    engine_name, options, cutoffs = entry.engine_recipe(engine)
    per_image = entry.periodic and bool(options.get("images"))
    if unfold and per_image:
        raise ZooError(f"{entry.name}: its {engine_name} recipe stores per-image blocks already; --unfold is for "
                       f"Gamma-point builds")
    unfold = unfold and entry.periodic
    tag = engine_tag(entry.engine, engine_name)
    dest = dataset_path(entry.name, size, cache, unfolded=unfold, engine=tag)
    if (dest / CARD_NAME).is_file() and not overwrite:
        return dest
    eng = get_engine(engine_name, **options)  # EngineError now if it is missing
    cutoff = cutoffs[size]
    t0 = time.time()
    plan = entry.plan(entry, size, entry.seed)
    lot = {**eng.level_of_theory(), **{k: v for k, v in entry.card_extra.items() if k != "structures"}}
    folded = entry.periodic and not (unfold or per_image)
    writer = DatasetWriter(dest, card_name(entry.name, size, unfold, tag), eng.basis(), cutoff, lot,
                           image_convention="gamma-folded" if folded else "explicit",
                           resume=True, keep_on_error=True, overwrite=overwrite)
    with writer:
        todo = {n: (engine_name, options, make, cutoff, n, unfold_margin if unfold else None)
                for n, _, make in plan if not writer.has(n)}
        _compute_missing(writer, todo, len(plan), jobs, engine_name, progress)
        writer.provenance = _provenance(entry, size, plan, writer.staging, eng.basis(), jobs, t0)
        if tag:
            writer.provenance["engine_recipe"] = entry.engines[tag].note if tag in entry.engines else "engine defaults"
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
        if entry.bond_cut:
            stats[n] = structure_stats(rec.structure, entry.bond_cut)
        lowest.append(lowest_s_eigenvalue(rec))
        if lowest[-1] is not None and np.isfinite(lowest[-1]):
            rec.meta["s_min_eig_gamma"] = float(f"{lowest[-1]:.6g}")  # of S(Gamma) from the stored blocks
        per_structure[n] = rec.meta
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
    cost = summarize_engine_cost(per_structure)
    if cost:
        prov["engine_cost"] = cost
    if stats:
        prov["structure_stats"] = stats
    prov[SPECTRUM_KEY] = spectrum_summary(lowest)
    return prov


def structure_stats(structure: Structure, bond_cut: float) -> dict:
    """Coordination per species, shortest distances per species pair, density (for cards and
    `zoo data stats`)."""
    from zoo.data.covalent import coordination_stats

    return coordination_stats(structure.to_ase(), bond_cut)


def _extremes(per: dict[str, dict], keys: dict[str, str]) -> dict:
    """{"<how>_<key>": max or min over the structures} for the per-structure meta keys present."""
    out = {}
    for key, how in keys.items():
        vals = [m[key] for m in per.values() if key in m]
        if vals:
            out[f"{how}_{key}"] = float(max(vals) if how == "max" else min(vals))
    return out


def summarize_truncation(per: dict[str, dict]) -> dict:
    """Worst value over the structures of what the cutoff dropped (engine metadata per structure;
    per-image CP2K builds add the kept fraction of ||H||_F and the reach of CP2K's pair lists)."""
    return _extremes(per, {"dropped_max_abs_h": "max", "dropped_max_abs_s": "max", "dropped_frac_frobenius_h": "max",
                           "kept_frac_frobenius_h": "min", "cp2k_longest_pair_A": "max",
                           "edges_without_cp2k_block": "max"})


def summarize_engine_cost(per: dict[str, dict]) -> dict:
    """What the engine runs cost, over the structures (keys the engine reports: CP2K's SCF steps,
    wall and CPU seconds, peak resident memory of its process)."""
    out = _extremes(per, {"scf_steps": "max", "cp2k_wall_s": "max", "cp2k_cpu_s": "max", "cp2k_peak_rss_mib": "max"})
    for key in ("cp2k_wall_s", "cp2k_cpu_s"):
        vals = [m[key] for m in per.values() if key in m]
        if vals:
            out[f"sum_{key}"] = round(float(sum(vals)), 1)
    return out
