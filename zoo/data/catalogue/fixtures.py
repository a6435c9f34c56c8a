"""A tiny real dataset for tests: three structures from one engine in seconds, no cache, no download."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from zoo.data.catalogue.recipes import c_hfo2_cell
from zoo.data.catalogue.spectrum import SPECTRUM_KEY, lowest_s_eigenvalue, spectrum_summary
from zoo.data.format import DatasetWriter, Structure


def _fixture_water(seed: int) -> Structure:
    from ase.build import molecule

    atoms = molecule("H2O")
    atoms.rattle(0.05, seed=seed)
    return Structure.from_ase(atoms)


# per engine: (structure factory (index, strain), cutoff, engine options, recipe text); all run in seconds
_FIXTURES: dict[str, tuple[Callable[[int, float], Structure], float, dict, str]] = {
    "tblite": (lambda k, strain: c_hfo2_cell(1, 100 + k, 0.05, strain), 2.4, {},
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
    # the recipe text is hashed into the card's recipe hash: it keeps the public path of build_fixture
    writer = DatasetWriter(path, f"fixture-{engine}" if engine != "tblite" else "fixture-hfo2", eng.basis(), cutoff,
                           eng.level_of_theory(), image_convention="gamma-folded" if engine == "tblite" else "explicit",
                           overwrite=overwrite, provenance={"recipe": f"zoo.data.catalogue.build_fixture: {recipe}"})
    with writer:
        lowest = []
        for k, (split, strain) in enumerate((("train", -0.01), ("val", 0.0), ("test", 0.01))):
            rec = eng.record(make(k, strain), cutoff, split)
            writer.add(rec)
            lowest.append(lowest_s_eigenvalue(rec))
        writer.provenance[SPECTRUM_KEY] = spectrum_summary(lowest)
        ds = writer.finalize({"train": ["train"], "val": ["val"], "test": ["test"]},
                             description=f"tiny {engine} fixture for tests", overwrite=overwrite)
    return ds.path
