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


def perturbed(model, scale: float = 0.1, seed: int = 0):
    """The model in float64 with every parameter moved by scale x N(0, 1), in eval mode: a zero-initialised
    term (heads, gates) then cannot pass a symmetry test by accident."""
    torch.manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model.eval()


def sige_chain_atoms() -> Atoms:
    """A rattled 4x1x1 diamond Si supercell with every fifth atom Ge: two elements, no symmetry ties."""
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 1, 1))
    atoms.rattle(0.05, seed=7)
    z = atoms.numbers.copy()
    z[::5] = 32
    atoms.numbers = z
    return atoms


def run_ranks(target, args: tuple, world: int = 2, timeout: float = 150.0) -> None:
    """Spawn `world` processes target(rank, world, *args), wait, and kill any that hang (never leave a stuck rank)."""
    import torch.multiprocessing as tmp

    ctx = tmp.get_context("spawn")
    procs = [ctx.Process(target=target, args=(r, world, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join()
    assert not hung, f"a DDP rank did not finish within {timeout:g} s"
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]


def check_raw_hermiticity(name: str, pred, data) -> float:
    """Print a backbone's raw hermiticity defect (relative to max|H|); hold `hermitian = True` ones to 1e-10."""
    from zoo.models.contract import hermiticity_error
    from zoo.models.registry import model_class

    err = hermiticity_error(pred, data, relative=True)
    declared = bool(model_class(name).hermitian)
    print(f"\n{name}: raw hermiticity error {err:.3e} (relative to max|H|), declares hermitian={declared}")
    if declared:
        assert err < 1e-10, f"{name} declares hermitian = True but its raw output is off by {err:.3e} (relative)"
    return err
