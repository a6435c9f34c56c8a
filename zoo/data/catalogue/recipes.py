"""Structure recipes and the plans that turn a catalogue entry into named structures per split.

A plan is `plan(entry, size, seed) -> [(structure name, split, make)]`, `make()` returning the
unlabelled `Structure`. The recipes are module-level functions bound with functools.partial, so
that a build's spawned worker processes can unpickle `make` and run the recipe themselves.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

import numpy as np

from zoo.data.format import Structure
from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.data.catalogue.entries import Entry

#: one planned structure: (name, split, recipe bound to its arguments)
Job = tuple[str, str, Callable[[], Structure]]
SPLITS = ("train", "val", "test")


# -- structure recipes -------------------------------------------------------------------------

def a_hfo2_cell(n_formula: int, seed: int, vacancy: float = 0.0) -> Structure:
    """Melt-quenched a-HfO2; with `vacancy`, that fraction of the O removed and the cell relaxed again."""
    from zoo.data.structures import HFO2_POTENTIAL, PairPotential, amorphous_hfo2, remove_oxygen

    atoms = amorphous_hfo2(n_formula, seed)
    if vacancy:
        from ase.optimize import FIRE

        atoms = remove_oxygen(atoms, vacancy, seed)
        atoms.calc = PairPotential(HFO2_POTENTIAL)
        FIRE(atoms, logfile=None).run(fmax=0.05, steps=300)
        atoms.calc = None
    return Structure.from_ase(atoms)


def c_hfo2_cell(repeat: int, seed: int, rattle: float = 0.05, strain: float = 0.0) -> Structure:
    """Monoclinic HfO2 repeated `repeat` times along each axis, strained isotropically, then rattled."""
    from zoo.data.structures import monoclinic_hfo2

    atoms = monoclinic_hfo2().repeat(repeat)
    atoms.set_cell(atoms.cell * (1 + strain), scale_atoms=True)
    atoms.rattle(stdev=rattle, seed=seed)
    return Structure.from_ase(atoms)


def given(structure: Structure) -> Structure:
    """A structure made in the plan itself (an MD snapshot), passed through unchanged."""
    return structure


def a_ptge2_cell(n_atoms: int, seed: int, gfn1_steps: int = 0) -> Structure:
    from zoo.data.covalent import amorphous_ptge2

    return Structure.from_ase(amorphous_ptge2(n_atoms, seed, gfn1_steps=gfn1_steps))


def a_gst_cell(n_formula: int, seed: int, gfn1_steps: int) -> Structure:
    from zoo.data.covalent import amorphous_gst

    return Structure.from_ase(amorphous_gst(n_formula, seed, gfn1_steps=gfn1_steps))


# -- plans -------------------------------------------------------------------------------------

def plan_a_hfo2(entry: Entry, size: str, seed: int) -> list[Job]:
    """One cell per split (seed + 1000 k), and per vacancy fraction in `vacancies` one defective copy."""
    p = entry.sizes[size].params
    jobs = []
    for k, split in enumerate(SPLITS):
        for v in p.get("vacancies", (0.0,)):
            tag = f"{split}-0" if not v else f"{split}-v{int(round(100 * v)):02d}"
            jobs.append((tag, split, partial(a_hfo2_cell, p["n_formula"], seed + 1000 * k, v)))
    return jobs


def plan_amorphous(recipe: Callable[..., Structure], size_key: str) -> Callable[[Entry, str, int], list[Job]]:
    """Three independent cells (train / val / test) from `recipe(p[size_key], seed, **rest)`."""
    def plan(entry: Entry, size: str, seed: int) -> list[Job]:
        p = dict(entry.sizes[size].params)
        n = p.pop(size_key)
        return [(f"{split}-0", split, partial(recipe, n, seed + 1000 * k, **p)) for k, split in enumerate(SPLITS)]

    return plan


def plan_c_hfo2(entry: Entry, size: str, seed: int) -> list[Job]:
    """`per_split` rattled supercells per split, strained -1 / 0 / +1 % in turn."""
    p = entry.sizes[size].params
    jobs = []
    for k, split in enumerate(SPLITS):
        for m in range(p["per_split"]):
            strain = (-0.01, 0.0, 0.01)[m % 3]
            jobs.append((f"{split}-{m}", split, partial(c_hfo2_cell, p["repeat"], seed + 100 * k + m, p["rattle"],
                                                        strain)))
    return jobs


def plan_md17(molecule: str) -> Callable[[Entry, str, int], list[Job]]:
    """Snapshots of one MD trajectory of `molecule`, split at random into `counts` (train, val, test)."""
    def plan(entry: Entry, size: str, seed: int) -> list[Job]:
        from zoo.data.structures import md_snapshots

        counts = entry.sizes[size].params["counts"]
        snaps = md_snapshots(molecule, sum(counts), seed)
        order = np.random.default_rng(seed).permutation(len(snaps))  # random split of one trajectory
        jobs, start = [], 0
        for split, n in zip(SPLITS, counts):
            for k in order[start:start + n]:
                jobs.append((f"{split}-{int(k):04d}", split, partial(given, Structure.from_ase(snaps[k]))))
            start += n
        return jobs

    return plan


def plan_soc(entry: Entry, size: str, seed: int) -> list[Job]:
    """Per molecule, `counts` (train, val, test) geometries, each its own seeded displacement of the
    reference geometry (zoo.data.engines.pyscf_soc.displaced_molecule), so no two structures coincide.

    split_by="molecule" (default "geometry") splits by molecule instead: the molecules listed in
    `holdout[split]` go whole into val or test (molecules never seen in training), all others into
    train, each with the same sum(counts) geometries the geometry split would give it."""
    from zoo.data.engines.pyscf_soc import displaced_molecule

    p = entry.sizes[size].params
    by = p.get("split_by", "geometry")
    held = {mol: split for split, mols in p.get("holdout", {}).items() for mol in mols}
    if by not in ("geometry", "molecule"):
        raise ZooError(f"{entry.name}@{size}: split_by is 'geometry' or 'molecule', not {by!r}")
    if by == "molecule":
        wrong = sorted(set(held) - set(p["molecules"])) + sorted(set(held.values()) - {"val", "test"})
        if wrong or {"val", "test"} - set(held.values()):
            raise ZooError(f"{entry.name}@{size}: holdout must name val and test molecules from {p['molecules']} "
                           f"(wrong: {wrong or 'a split without molecules'})")
    jobs = []
    for m, mol in enumerate(p["molecules"]):
        g = 0  # the molecule's geometry counter across splits (molecule split: names stay unique)
        for k, (split, n) in enumerate(zip(SPLITS, p["counts"])):
            for c in range(n):
                make = partial(displaced_molecule, mol, seed + 10_000 * k + 100 * m + c, p["rattle"])
                if by == "geometry":
                    jobs.append((f"{split}-{mol}-{c}", split, make))
                else:
                    dest = held.get(mol, "train")
                    jobs.append((f"{dest}-{mol}-{g}", dest, make))
                g += 1
    return jobs
