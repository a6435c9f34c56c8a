"""Shared test fixtures: tiny synthetic datasets that build in well under a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from zoo.data.format import DatasetWriter, Structure
from zoo.data.synthetic import toy_record
from zoo.physics.basis import get_basis

SHARED = Path(__file__).resolve().parents[2] / "shared"


def tiny_hfo2(seed: int = 0, reps=(2, 1, 1), a: float = 5.1) -> Atoms:
    """A rattled fluorite-like HfO2 cell (12 atoms per repeat): small, periodic, with s, p and d shells."""
    frac_hf = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    frac_o = np.array([[x, y, z] for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.25, 0.75)])
    atoms = Atoms(["Hf"] * 4 + ["O"] * 8, scaled_positions=np.vstack([frac_hf, frac_o]), cell=[a] * 3, pbc=True)
    atoms = atoms.repeat(reps)
    atoms.rattle(0.08, seed=seed)
    return atoms


def write_toy_dataset(path: Path, n: int = 3, cutoff: float = 4.0, basis: str = "szv-molopt-sr",
                      reps=(2, 1, 1)) -> Path:
    b = get_basis(basis)
    names = [f"s{k}" for k in range(n)]
    with DatasetWriter(path, "toy-hfo2", b, cutoff, {"code": "synthetic", "method": "toy two-centre"}) as w:
        for k, name in enumerate(names):
            w.add(toy_record(Structure.from_ase(tiny_hfo2(k, reps)), b, cutoff, name=name, seed=0))
        w.finalize({"train": names[:-2] or names[:1], "val": [names[-2]], "test": [names[-1]]})
    return path


@pytest.fixture
def toy_dataset(tmp_path) -> Path:
    return write_toy_dataset(tmp_path / "toy")


@pytest.fixture(autouse=True)
def _float64_default():
    old = torch.get_default_dtype()
    yield
    torch.set_default_dtype(old)
