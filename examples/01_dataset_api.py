"""Open a dataset, get plain numpy arrays per structure, assemble and diagonalize H.

Run:  python examples/01_dataset_api.py [DATASET_DIR]
Without an argument it writes a small synthetic dataset to a temporary directory first.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
from ase.build import bulk

from zoo.data import Dataset, DatasetWriter, Structure
from zoo.data.synthetic import toy_record
from zoo.physics.basis import get_basis


def synthetic_dataset(path: Path) -> Path:
    basis = get_basis("gfn1-xtb")
    with DatasetWriter(path, "example-si", basis, 4.0, {"code": "synthetic", "method": "toy two-centre"}) as w:
        for k in range(3):
            atoms = bulk("Si", "diamond", 5.43, cubic=True)
            atoms.rattle(0.05, seed=k)
            w.add(toy_record(Structure.from_ase(atoms), basis, 4.0, name=f"si{k}"))
        w.finalize({"train": ["si0"], "val": ["si1"], "test": ["si2"]})
    return path


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else synthetic_dataset(Path(tempfile.mkdtemp()) / "example")
    ds = Dataset.open(path)
    print(ds, "level of theory:", ds.card.level_of_theory)
    rec = ds.read(ds.split("test")[0])
    print("atoms", rec.numbers.shape, "positions", rec.positions.shape, "cell", rec.cell.shape, "pbc", rec.pbc)
    print("edges", rec.edge_index.shape, "shifts", rec.edge_shift.shape, "basis", rec.basis.name)
    print("first on-site block", rec.onsite_blocks()[0].shape, "first edge block", rec.edge_blocks()[0].shape)
    eigs = rec.eigvalsh()  # H (with S) at Gamma, hermitized, in Hartree
    print(f"{eigs.size} eigenvalues, lowest {eigs[0]:.4f} Ha, highest {eigs[-1]:.4f} Ha")
    hk = rec.matrix("H", k=[0.5, 0, 0])  # scipy.sparse Bloch sum at X
    print("H(k) non-zeros:", hk.nnz, "hermitian:", bool(np.allclose((hk - hk.conj().T).toarray(), 0)))


if __name__ == "__main__":
    main()
