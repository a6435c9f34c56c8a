"""The catalogue of built-in datasets, computed here by real electronic-structure codes.

    zoo data build a-hfo2 --size small      # build into the cache (resumable, progress bar)
    dataset_path("a-hfo2")                   # where it lives (size "small" unless "a-hfo2@paper")
    ensure_built("a-hfo2")                   # build if missing (used by `zoo bench`)

Cache: $ZOO_CACHE, else ~/.cache/zoo/datasets; layout <cache>/<name>/<size>/. Each build
writes into a staging directory, one structure file at a time (atomic), so an interrupted
build keeps its finished structures and a re-run continues where it stopped. Periodic tblite
data are Gamma-folded (image_convention "gamma-folded") in cells at least 2 x cutoff wide.
"""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.data.format import CARD_NAME, Dataset, DatasetWriter, Record, Structure, read_record
from zoo.errors import ZooError

SIZES = ("small", "medium", "paper")
OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")

# Gamma-folding contamination, measured once with zoo.data.engines.image_contamination (docs/datasets.md):
# the change of the labelled blocks when the cell is replaced by a larger supercell. Written into the card.
_CRYSTAL_CONTAMINATION = {
    "measured_on": "m-HfO2 2x2x2 (96 atoms, 10.1 A wide), 4.9 A cutoff, vs 3x3x3 (324 atoms)",
    "max_abs_diff_H_edges_hartree": 0.0232, "median_abs_diff_H_edges_hartree": 1.4e-4,
    "max_abs_diff_H_edges_below_3A_hartree": 1.6e-4, "max_abs_diff_H_onsite_hartree": 6.5e-4,
    "max_abs_diff_S_edges": 0.0254, "median_abs_diff_S_edges": 2.4e-5,
}
IMAGE_CONTAMINATION: dict[tuple[str, str], dict] = {
    ("c-hfo2", "small"): _CRYSTAL_CONTAMINATION,
    # benchmarks/image_contamination.py on the test cell of each built small set
    ("a-hfo2", "small"): {
        "measured_on": "a-hfo2 small test-0 (192 atoms, 10.5 A wide), 5 A cutoff, vs its 1x2x2 supercell (768 atoms)",
        "max_abs_diff_H_edges_hartree": 0.152, "median_abs_diff_H_edges_hartree": 7.8e-7,
        "p99_abs_diff_H_edges_hartree": 4.1e-3, "max_abs_diff_H_edges_below_3A_hartree": 2.4e-4,
        "max_abs_diff_H_onsite_hartree": 7.0e-4, "max_abs_diff_S_edges": 0.179, "p99_abs_diff_S_edges": 4.3e-3,
    },
    ("a-ptge", "small"): {
        "measured_on": "a-ptge small test-0 (192 atoms, 12.4 A wide), 6 A cutoff, vs its 1x2x1 supercell (384 atoms; "
                       "images through the y faces only)",
        "max_abs_diff_H_edges_hartree": 0.0698, "median_abs_diff_H_edges_hartree": 1.7e-5,
        "p99_abs_diff_H_edges_hartree": 0.0112, "max_abs_diff_H_edges_below_3A_hartree": 0.0123,
        "max_abs_diff_H_onsite_hartree": 5.7e-3, "max_abs_diff_S_edges": 0.192, "p99_abs_diff_S_edges": 0.029,
    },
    ("a-gst", "small"): {
        "measured_on": "a-gst small test-0 (112 atoms, 12.3 A wide), 6 A cutoff, vs its 1x2x1 supercell (224 atoms; "
                       "images through the y faces only)",
        "max_abs_diff_H_edges_hartree": 0.0515, "median_abs_diff_H_edges_hartree": 5.2e-6,
        "p99_abs_diff_H_edges_hartree": 3.5e-3, "max_abs_diff_H_edges_below_3A_hartree": 5.5e-3,
        "max_abs_diff_H_onsite_hartree": 5.2e-3, "max_abs_diff_S_edges": 0.178, "p99_abs_diff_S_edges": 0.0106,
    },
}


# -- structure recipes (module-level so worker processes can unpickle them) ------------------

def _a_hfo2(n_formula: int, seed: int, vacancy: float = 0.0) -> Structure:
    from zoo.data.structures import HFO2_POTENTIAL, PairPotential, amorphous_hfo2, remove_oxygen

    atoms = amorphous_hfo2(n_formula, seed)
    if vacancy:
        from ase.optimize import FIRE

        atoms = remove_oxygen(atoms, vacancy, seed)
        atoms.calc = PairPotential(HFO2_POTENTIAL)
        FIRE(atoms, logfile=None).run(fmax=0.05, steps=300)
        atoms.calc = None
    return Structure.from_ase(atoms)


def _c_hfo2(repeat: int, seed: int, rattle: float = 0.05, strain: float = 0.0) -> Structure:
    from zoo.data.structures import monoclinic_hfo2

    atoms = monoclinic_hfo2().repeat(repeat)
    atoms.set_cell(atoms.cell * (1 + strain), scale_atoms=True)
    atoms.rattle(stdev=rattle, seed=seed)
    return Structure.from_ase(atoms)


def _given(structure: Structure) -> Structure:
    return structure


def _a_ptge2(n_atoms: int, seed: int, gfn1_steps: int = 0) -> Structure:
    from zoo.data.covalent import amorphous_ptge2

    return Structure.from_ase(amorphous_ptge2(n_atoms, seed, gfn1_steps=gfn1_steps))


def _a_gst(n_formula: int, seed: int, gfn1_steps: int) -> Structure:
    from zoo.data.covalent import amorphous_gst

    return Structure.from_ase(amorphous_gst(n_formula, seed, gfn1_steps=gfn1_steps))


# -- catalogue entries ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Size:
    cutoff: float
    params: dict
    note: str = ""


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    engine: str
    sizes: dict[str, Size]
    plan: Callable[["Entry", str, int], list[tuple[str, str, Callable[[], Structure]]]]
    seed: int = 2024
    periodic: bool = True  # periodic cells from a Gamma-point engine are stored "gamma-folded"
    engine_options: dict = field(default_factory=dict)
    card_extra: dict = field(default_factory=dict)
    bond_cut: float | None = None  # coordination statistics in the card (zoo.data.covalent.coordination_stats)


def _plan_a_hfo2(entry: Entry, size: str, seed: int):
    p = entry.sizes[size].params
    jobs = []
    for k, split in enumerate(("train", "val", "test")):
        for v in p.get("vacancies", (0.0,)):
            tag = f"{split}-0" if not v else f"{split}-v{int(round(100 * v)):02d}"
            jobs.append((tag, split, partial(_a_hfo2, p["n_formula"], seed + 1000 * k, v)))
    return jobs


def _plan_amorphous(recipe: Callable[..., Structure], size_key: str):
    """Three independent cells (train / val / test) from `recipe(p[size_key], seed, **rest)`."""
    def plan(entry: Entry, size: str, seed: int):
        p = dict(entry.sizes[size].params)
        n = p.pop(size_key)
        return [(f"{split}-0", split, partial(recipe, n, seed + 1000 * k, **p))
                for k, split in enumerate(("train", "val", "test"))]

    return plan


def _plan_c_hfo2(entry: Entry, size: str, seed: int):
    p = entry.sizes[size].params
    jobs = []
    for k, split in enumerate(("train", "val", "test")):
        for m in range(p["per_split"]):
            strain = (-0.01, 0.0, 0.01)[m % 3]
            jobs.append((f"{split}-{m}", split, partial(_c_hfo2, p["repeat"], seed + 100 * k + m, p["rattle"], strain)))
    return jobs


def _plan_md17(molecule: str):
    def plan(entry: Entry, size: str, seed: int):
        from zoo.data.structures import md_snapshots

        counts = entry.sizes[size].params["counts"]
        snaps = md_snapshots(molecule, sum(counts), seed)
        order = np.random.default_rng(seed).permutation(len(snaps))  # random split of one trajectory
        jobs, start = [], 0
        for split, n in zip(("train", "val", "test"), counts):
            for k in order[start:start + n]:
                jobs.append((f"{split}-{int(k):04d}", split, partial(_given, Structure.from_ase(snaps[k]))))
            start += n
        return jobs

    return plan


def _plan_soc(entry: Entry, size: str, seed: int):
    """Per molecule, `counts` (train, val, test) geometries, each its own seeded displacement of the
    reference geometry (zoo.data.engines.pyscf_soc.displaced_molecule), so no two structures coincide."""
    from zoo.data.engines.pyscf_soc import displaced_molecule

    p = entry.sizes[size].params
    jobs = []
    for m, mol in enumerate(p["molecules"]):
        for k, (split, n) in enumerate(zip(("train", "val", "test"), p["counts"])):
            for c in range(n):
                jobs.append((f"{split}-{mol}-{c}", split,
                             partial(displaced_molecule, mol, seed + 10_000 * k + 100 * m + c, p["rattle"])))
    return jobs


_HFO2_SIZES = {
    "small": Size(5.0, {"n_formula": 64}, "192 atoms per cell, 21.0 x 10.5 x 10.5 A"),
    "medium": Size(7.0, {"n_formula": 216}, "648 atoms per cell, 31.4 x 15.7 x 15.7 A"),
    "paper": Size(8.0, {"n_formula": 1000}, "3,000 atoms per cell, 52.4 x 26.2 x 26.2 A (cluster-sized build)"),
}
_AMORPHOUS_NOTE = ("melt-quench (zoo.data.structures.amorphous_hfo2): random start at 9.7 g/cm^3, Langevin MD at "
                   "4000 K, linear quench to 300 K, FIRE relaxation with a Morse Hf-O / exponential-wall pair potential")

_MOLECULE_SIZES = {"small": Size(10.0, {"counts": (24, 12, 12)}, "24 / 12 / 12 geometries"),
                   "medium": Size(10.0, {"counts": (200, 100, 100)}, "200 / 100 / 100 geometries"),
                   "paper": Size(10.0, {"counts": (500, 500, 499)}, "500 / 500 / 499 geometries (seed's Appendix B)")}
_PTGE_NOTE = ("a-Ge melt-quench with the Ding-Andersen Stillinger-Weber potential (matscipy; 3500 K melt, quench to "
              "300 K, FIRE), a third of the sites made Pt with no Pt-Pt bonds where possible, cell rescaled to "
              "Vegard's volume (fcc Pt / a-Ge atomic volumes), not relaxed again (zoo.data.covalent.amorphous_ptge2)")
_GST_NOTE = ("pair-potential melt-quench (Morse Ge-Te / Sb-Te at 2.80 / 2.95 A, cation-cation and Te-Te walls; 2500 K "
             "melt, quench to 300 K), then fixed-cell FIRE with GFN1-xTB forces capped at gfn1_steps steps "
             "(zoo.data.covalent.amorphous_gst)")

CATALOGUE: dict[str, Entry] = {e.name: e for e in [
    Entry("a-hfo2", "amorphous HfO2 at 9.7 g/cm^3, three independent melt-quenched cells (train / val / test), "
          "elongated x = 2y = 2z", "tblite", _HFO2_SIZES, _plan_a_hfo2,
          card_extra={"structures": _AMORPHOUS_NOTE}, bond_cut=2.6),
    Entry("a-hfox", "amorphous HfO2-x: each a-hfo2 cell with 5 / 10 / 15 % of the O atoms removed (vacancies as removed "
          "atoms with every engine: tblite has no ghost atoms, and dataset schema v1 has no Z=0 sites for CP2K's "
          "GHOST kinds), relaxed again", "tblite",
          {k: Size(v.cutoff, {**v.params, "vacancies": (0.05, 0.10, 0.15)}, "9 cells (3 per split): " + v.note)
           for k, v in _HFO2_SIZES.items()},
          _plan_a_hfo2, seed=2024, card_extra={"structures": _AMORPHOUS_NOTE + "; then O removed and relaxed again"},
          bond_cut=2.6),
    Entry("c-hfo2", "monoclinic HfO2 supercells, rattled (0.05 A) and strained (-1, 0, +1 %)", "tblite",
          {"small": Size(4.9, {"repeat": 2, "per_split": 3, "rattle": 0.05}, "2x2x2, 96 atoms"),
           "medium": Size(7.0, {"repeat": 3, "per_split": 3, "rattle": 0.05}, "3x3x3, 324 atoms"),
           "paper": Size(8.0, {"repeat": 4, "per_split": 3, "rattle": 0.05}, "4x4x4, 768 atoms")},
          _plan_c_hfo2, seed=7, bond_cut=2.6),
    Entry("md17-h2o", "water geometries from a 500 K Langevin trajectory (GFN1-xTB forces), PBE/def2-SVP H and S",
          "pyscf", _MOLECULE_SIZES, _plan_md17("H2O"), seed=17, periodic=False),
    Entry("md17-ethanol", "ethanol geometries from a 500 K Langevin trajectory (GFN1-xTB forces), PBE/def2-SVP",
          "pyscf", _MOLECULE_SIZES, _plan_md17("CH3CH2OH"), seed=18, periodic=False),
    Entry("md17-malondialdehyde", "malondialdehyde (chelated enol) geometries from a 500 K Langevin trajectory "
          "(GFN1-xTB forces), PBE/def2-SVP", "pyscf", _MOLECULE_SIZES, _plan_md17("malondialdehyde"), seed=19,
          periodic=False),
    Entry("md17-uracil", "uracil geometries from a 500 K Langevin trajectory (GFN1-xTB forces), PBE/def2-SVP",
          "pyscf", _MOLECULE_SIZES, _plan_md17("uracil"), seed=20, periodic=False),
    Entry("soc-mini", "spinful (spin-orbit) Hamiltonians of small closed-shell bromides and iodides, X2C1e-GHF/3-21G "
          "complex Fock matrices, geometries randomly displaced from the reference", "pyscf-soc",
          {"small": Size(10.0, {"molecules": ("HI", "HBr", "IBr", "CH3I", "CH3Br"), "counts": (3, 1, 1),
                                "rattle": 0.05}, "5 molecules x 3 / 1 / 1 geometries (25 structures)"),
           "medium": Size(10.0, {"molecules": ("HI", "HBr", "IBr", "I2", "Br2", "CH3I", "CH3Br"),
                                 "counts": (20, 5, 5), "rattle": 0.05}, "7 molecules x 20 / 5 / 5 geometries")},
          _plan_soc, seed=53, periodic=False,
          card_extra={"structures": "reference geometries (NIST CCCBDB bond lengths) with every Cartesian coordinate "
                                    "displaced by N(0, 0.05^2) A (zoo.data.engines.pyscf_soc.displaced_molecule)"}),
    Entry("a-ptge", "amorphous PtGe2: Pt substituted into melt-quenched a-Ge, three independent cells "
          "(train / val / test), elongated x = 2y = 2z", "tblite",
          {"small": Size(6.0, {"n_atoms": 192}, "192 atoms per cell (64 Pt), 24.9 x 12.4 x 12.4 A"),
           "medium": Size(8.0, {"n_atoms": 648}, "648 atoms per cell, 37.4 x 18.7 x 18.7 A"),
           "paper": Size(10.0, {"n_atoms": 3000}, "3,000 atoms per cell, 62.3 x 31.1 x 31.1 A (cluster-sized build)")},
          _plan_amorphous(_a_ptge2, "n_atoms"), seed=31, card_extra={"structures": _PTGE_NOTE}, bond_cut=2.9),
    Entry("a-gst", "amorphous Ge1Sb2Te4 at 5.9 g/cm^3, three independent cells (train / val / test), "
          "elongated x = 2y = 2z", "tblite",
          {"small": Size(6.0, {"n_formula": 16, "gfn1_steps": 40}, "112 atoms per cell, 24.6 x 12.3 x 12.3 A"),
           "medium": Size(9.0, {"n_formula": 64, "gfn1_steps": 40}, "448 atoms per cell, 39.0 x 19.5 x 19.5 A"),
           "paper": Size(12.0, {"n_formula": 432, "gfn1_steps": 40},
                         "3,024 atoms per cell, 12 A (the seed's pair cutoff), cluster-sized build")},
          _plan_amorphous(_a_gst, "n_formula"), seed=41, card_extra={"structures": _GST_NOTE}, bond_cut=3.2),
]}


# -- paths --------------------------------------------------------------------------------------

def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """--cache, else $ZOO_CACHE, else ~/.cache/zoo/datasets."""
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("ZOO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "zoo" / "datasets"


def parse_name(spec: str, size: str | None = None) -> tuple[Entry, str]:
    """'a-hfo2' or 'a-hfo2@paper' -> (entry, size); ZooError for unknown names or sizes."""
    name, _, at = spec.partition("@")
    size = size or at or "small"
    if name not in CATALOGUE:
        raise ZooError(f"unknown dataset {name!r}; the catalogue has: {', '.join(sorted(CATALOGUE))}")
    if size not in CATALOGUE[name].sizes:
        raise ZooError(f"dataset {name!r} has no size {size!r} (sizes: {', '.join(CATALOGUE[name].sizes)})")
    return CATALOGUE[name], size


def dataset_path(name: str, size: str | None = None, cache: str | os.PathLike | None = None,
                 unfolded: bool = False) -> Path:
    """Directory of a catalogue dataset (built or not); 'a-hfo2+unfolded@paper' is understood."""
    if "+unfolded" in name:
        name, unfolded = name.replace("+unfolded", ""), True
    entry, size = parse_name(name, size)
    return cache_dir(cache) / entry.name / (f"{size}-unfolded" if unfolded else size)


def is_built(name: str, size: str | None = None, cache: str | os.PathLike | None = None) -> bool:
    return (dataset_path(name, size, cache) / CARD_NAME).is_file()


def ensure_built(name: str, size: str | None = None, cache: str | os.PathLike | None = None, jobs: int = 1,
                 progress: bool = True) -> Path:
    """The dataset's directory, building it first if it is not there yet."""
    if is_built(name, size, cache):
        return dataset_path(name, size, cache)
    return build(name, size, cache=cache, jobs=jobs, progress=progress)


# -- building -----------------------------------------------------------------------------------

def _worker_env(jobs: int, engine: str) -> dict[str, str]:
    """Environment of the worker processes. tblite and CP2K: cpus/jobs threads each; tblite also
    gets OpenBLAS preloaded when installed (the wheel bundles reference BLAS, ~8x slower;
    ZOO_NO_OPENBLAS=1 turns it off). PySCF: one thread per worker (on small molecules processes
    beat threads, and the preload made it 10x slower here)."""
    threads = str(max(1, (os.cpu_count() or 1) // max(jobs, 1)))
    if engine == "cp2k":
        return {"OMP_NUM_THREADS": threads}
    if engine != "tblite":
        return {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env = {"OMP_NUM_THREADS": threads}
    if OPENBLAS.is_file() and not os.environ.get("ZOO_NO_OPENBLAS"):
        env["LD_PRELOAD"] = " ".join(x for x in (os.environ.get("LD_PRELOAD", ""), str(OPENBLAS)) if x)
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"]
    return env


def unfold_repeat(structure: Structure, cutoff: float, margin: float) -> tuple[int, int, int]:
    """Smallest supercell whose periodic widths reach cutoff + margin (and 2 x cutoff)."""
    from zoo.data.graph import perpendicular_widths

    w = perpendicular_widths(structure.cell)
    need = max(cutoff + margin, 2 * cutoff)
    return tuple(int(np.ceil(need / w[k] - 1e-9)) if structure.pbc[k] else 1 for k in range(3))


def _compute(engine_name: str, engine_options: dict, make: Callable[[], Structure], cutoff: float, name: str,
             unfold_margin: float | None = None) -> Record:
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
    rec.meta["openblas_loaded"] = _openblas_loaded()
    return rec


def _openblas_loaded() -> bool:
    try:
        return str(OPENBLAS.parent) in Path("/proc/self/maps").read_text()
    except OSError:
        return False


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


def _build_locked(name: str, size: str | None, cache, jobs: int, engine: str | None, progress: bool, overwrite: bool,
                  unfold: bool, unfold_margin: float) -> Path:
    from tqdm.auto import tqdm

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
    card_name = entry.name + ("+unfolded" if unfold else "") + ("" if size == "small" else f"@{size}")
    lot = {**eng.level_of_theory(), **{k: v for k, v in entry.card_extra.items() if k != "structures"}}
    writer = DatasetWriter(dest, card_name, eng.basis(), spec.cutoff, lot,
                           image_convention="gamma-folded" if entry.periodic and not unfold else "explicit",
                           resume=True, keep_on_error=True, overwrite=overwrite)
    todo = [(n, make) for n, _, make in plan if not writer.has(n)]
    per_structure: dict[str, dict] = {}
    with writer:
        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc=f"{card_name}", unit="structure",
                   disable=not progress)
        failure: BaseException | None = None
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "LD_PRELOAD", "OPENBLAS_NUM_THREADS")}
        os.environ.update(_worker_env(jobs, engine_name))  # workers start lazily on submit and inherit this environment
        try:
            with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(_compute, engine_name, entry.engine_options, make, spec.cutoff, n,
                                       unfold_margin if unfold else None): n for n, make in todo}
                try:
                    done = as_completed(futures)
                    for fut in done:
                        n = futures[fut]
                        try:
                            rec = fut.result()
                        except Exception as exc:  # engine, structure recipe or worker failure: name the structure
                            what = str(exc) if isinstance(exc, ZooError) else f"{type(exc).__name__}: {exc}"
                            failure = failure or ZooError(
                                f"building {card_name}: structure {n!r} failed: {what}. Finished structures are kept "
                                f"in {writer.staging}; re-run to resume")
                            continue
                        writer.add(rec)
                        bar.update(1)
                except KeyboardInterrupt:
                    # running jobs (and their engine binaries) would otherwise go on, and interpreter exit
                    # would wait for them. ProcessPoolExecutor keeps its workers in `_processes` (pid ->
                    # Process; since Python 3.8), which shutdown() clears: read it first.
                    workers = list(getattr(pool, "_processes", None) or {})
                    pool.shutdown(wait=False, cancel_futures=True)
                    _stop_workers(workers)
                    raise
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        bar.close()
        if failure is not None:
            raise failure
        stats: dict[str, dict] = {}
        for n, _, _ in plan:
            rec = read_record(writer.staging / "structures" / f"{n}.h5", eng.basis())
            per_structure[n] = rec.meta
            if entry.bond_cut:
                stats[n] = structure_stats(rec.structure, entry.bond_cut)
        walls = [m.get("wall_s", 0.0) + m.get("structure_wall_s", 0.0) for m in per_structure.values()]
        writer.provenance = {
            "catalogue_entry": entry.name, "size": size, "size_note": spec.note, "generation_seed": entry.seed,
            "structures": entry.card_extra.get("structures", entry.description),
            "build_cost": {"sum_structure_wall_s": round(float(sum(walls)), 1), "this_run_wall_s": round(time.time() - t0, 1),
                           "jobs": jobs, "host": f"{platform.machine()} {os.cpu_count()} cpus",
                           "openblas_preloaded": all(m.get("openblas_loaded", False) for m in per_structure.values())},
            "truncation": _summarize(per_structure),
            "per_structure": per_structure,
        }
        if stats:
            writer.provenance["structure_stats"] = stats
        contamination = IMAGE_CONTAMINATION.get((entry.name, size))
        if contamination and engine_name == "tblite" and not unfold:
            writer.provenance["image_contamination"] = contamination
        splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for n, split, _ in plan:
            splits[split].append(n)
        ds = writer.finalize(splits, description=entry.description, overwrite=overwrite)
    return ds.path


def structure_stats(structure: Structure, bond_cut: float) -> dict:
    """Coordination per species, shortest distances per species pair, density (for cards and
    `zoo data stats`)."""
    from zoo.data.covalent import coordination_stats

    return coordination_stats(structure.to_ase(), bond_cut)


def _stop_workers(pids: list[int]) -> None:
    """Kill the given worker processes and terminate their descendants (e.g. CP2K runs).

    The workers are only signalled, never waited for here: reaping them (psutil's wait does
    waitpid) would leave multiprocessing polling pids it can no longer wait for, and its
    executor thread then spins forever at interpreter exit."""
    import psutil

    workers, descendants = [], []
    for pid in pids:
        try:
            w = psutil.Process(pid)
            descendants += w.children(recursive=True)
            workers.append(w)
        except psutil.NoSuchProcess:
            pass
    for p in workers:
        try:
            p.kill()  # their results are not needed: every finished structure is already on disk
        except psutil.NoSuchProcess:
            pass
    for p in descendants:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(descendants, timeout=5)  # not our children: polled, not reaped
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _summarize(per: dict[str, dict]) -> dict:
    out = {}
    for key in ("dropped_max_abs_h", "dropped_max_abs_s", "dropped_frac_frobenius_h"):
        vals = [m[key] for m in per.values() if key in m]
        if vals:
            out[f"max_{key}"] = float(max(vals))
    return out


def catalogue_table(cache: str | os.PathLike | None = None) -> list[dict]:
    """One row per (dataset, size): engine, method, cutoff, atoms, built?, disk size."""
    rows = []
    for entry in CATALOGUE.values():
        for size, spec in entry.sizes.items():
            for unfolded in (False, True):
                path = dataset_path(entry.name, size, cache, unfolded=unfolded)
                built = (path / CARD_NAME).is_file()
                if unfolded and not built:
                    continue  # unfolded variants are listed once built
                name = entry.name + ("+unfolded" if unfolded else "") + ("" if size == "small" else f"@{size}")
                row = {"name": name, "size": size, "engine": entry.engine, "cutoff_A": spec.cutoff,
                       "cells": spec.note or "", "built": "yes" if built else "no", "disk": ""}
                if built:
                    nbytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                    row["disk"] = f"{nbytes / 2**20:.1f} MiB"
                    try:
                        ds = Dataset.open(path, validate=False)
                        row["cells"] = f"{len(ds)} structures, {sum(s['n_atoms'] for s in ds.card.structures.values())} atoms"
                    except ZooError:
                        row["built"] = "broken"
                rows.append(row)
    return rows


# -- a tiny dataset for tests -----------------------------------------------------------------

# fixture recipes per engine: (structure factory, cutoff, engine options); all run in seconds
def _fixture_water(seed: int) -> Structure:
    from ase.build import molecule

    atoms = molecule("H2O")
    atoms.rattle(0.05, seed=seed)
    return Structure.from_ase(atoms)


_FIXTURES: dict[str, tuple[Callable[[int, float], Structure], float, dict, str]] = {
    "tblite": (lambda k, strain: _c_hfo2(1, 100 + k, 0.05, strain), 2.4, {},
               "m-HfO2 unit cells (12 atoms), rattle 0.05 A, strain -1 / 0 / +1 %"),
    "pyscf": (lambda k, strain: _fixture_water(200 + k), 10.0, {}, "H2O rattled by 0.05 A"),
    "cp2k": (lambda k, strain: _fixture_water(300 + k), 10.0,
             {"cutoff_ry": 150.0, "rel_cutoff_ry": 30.0, "vacuum": 3.5, "eps_scf": 1e-7},
             "H2O rattled by 0.05 A, in a box, coarse grid (150 Ry)"),
}


def build_fixture(path: str | os.PathLike, overwrite: bool = True, engine: str = "tblite") -> Path:
    """A three-structure dataset (train / val / test) computed by `engine` in seconds: CI-safe
    (no download, no cache). tblite: 12-atom m-HfO2 cells, 2.4 A cutoff (~2 s); pyscf: water
    PBE/def2-SVP (~1 s); cp2k: water in a box on a coarse grid (~10 s)."""
    from zoo.data.engines import EngineError, get_engine

    if engine not in _FIXTURES:
        raise EngineError(f"no fixture recipe for engine {engine!r}; known: {', '.join(sorted(_FIXTURES))}")
    make, cutoff, options, recipe = _FIXTURES[engine]
    eng = get_engine(engine, **options)
    path = Path(path)
    writer = DatasetWriter(path, f"fixture-{engine}" if engine != "tblite" else "fixture-hfo2", eng.basis(), cutoff,
                           eng.level_of_theory(), image_convention="gamma-folded" if engine == "tblite" else "explicit",
                           overwrite=overwrite, provenance={"recipe": f"zoo.data.catalogue.build_fixture: {recipe}"})
    with writer:
        for k, (split, strain) in enumerate((("train", -0.01), ("val", 0.0), ("test", 0.01))):
            writer.add(eng.record(make(k, strain), cutoff, split))
        ds = writer.finalize({"train": ["train"], "val": ["val"], "test": ["test"]},
                             description=f"tiny {engine} fixture for tests", overwrite=overwrite)
    return ds.path
