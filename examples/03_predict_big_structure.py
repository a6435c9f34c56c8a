"""Structure -> H -> DOS: predict the Hamiltonian of a bigger cell than any training cell.

Run:  python examples/03_predict_big_structure.py [--checkpoint CKPT] [--repeat 4] [--out DIR]

Without --checkpoint it first trains the `sk` baseline for a few epochs on a small synthetic,
orthogonal-basis Si dataset (three rattled 8-atom cells; zoo.data.synthetic), so the example runs
anywhere in seconds. Then, as a user would on the command line:

    zoo data structure si.extxyz --repeat 4,4,4 -o big.extxyz       # 512 atoms
    zoo predict CKPT big.extxyz -o H.npz --eig --electrons 2048     # streamed, hermitized H + DOS

writing H.npz (ragged blocks, Hartree), H.eig.npz (eigenvalues, DOS, gap) and H.dos.png.
"""

import argparse
from pathlib import Path

import numpy as np
from ase.build import bulk

from zoo.cli.main import main as zoo
from zoo.data import DatasetWriter, Structure
from zoo.data.synthetic import toy_record
from zoo.physics.basis import get_basis
from zoo.physics.units import HARTREE_EV


def train_toy(out: Path) -> Path:
    """A checkpoint of `sk` trained for 3 epochs on synthetic Si (its runs and leaderboard stay in `out`)."""
    basis = get_basis("gfn1-xtb")
    with DatasetWriter(out / "si-toy", "si-toy", basis, 4.0, {"code": "synthetic", "method": "toy two-centre"},
                       overwrite=True) as w:
        for k in range(3):
            atoms = bulk("Si", "diamond", 5.43, cubic=True)
            atoms.rattle(0.05, seed=k)
            w.add(toy_record(Structure.from_ase(atoms), basis, 4.0, name=f"si{k}", overlap=False))
        w.finalize({"train": ["si0"], "val": ["si1"], "test": ["si2"]})
    assert zoo(["bench", "--model", "sk", "--dataset", str(out / "si-toy"), "--max-epochs", "3", "--quiet",
                "--leaderboard-dir", str(out / "leaderboards"), "--runs-dir", str(out / "runs")]) == 0
    return next((out / "runs" / "si-toy").iterdir()) / "checkpoint.pt"


def run(checkpoint: str | None, repeat: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(checkpoint) if checkpoint else train_toy(out)
    bulk("Si", "diamond", 5.43, cubic=True).write(out / "si.extxyz", format="extxyz")
    assert zoo(["data", "structure", str(out / "si.extxyz"), "--repeat", f"{repeat},{repeat},{repeat}",
                "-o", str(out / "big.extxyz")]) == 0
    n_atoms = 8 * repeat**3
    assert zoo(["predict", str(ckpt), str(out / "big.extxyz"), "-o", str(out / "H.npz"), "--eig",
                "--electrons", str(4 * n_atoms), "--quiet"]) == 0  # Si: 4 valence electrons per atom
    spec = np.load(out / "H.eig.npz")
    print(f"{n_atoms} atoms: {spec['eigenvalues'].size} states, gap {HARTREE_EV * float(spec['gap']):.3f} eV; "
          f"DOS plot in {out / 'H.dos.png'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="a zoo bench checkpoint.pt (default: train a toy one)")
    ap.add_argument("--repeat", type=int, default=2, help="supercell of the 8-atom cubic Si cell, N x N x N")
    ap.add_argument("--out", default="example-03", help="output folder")
    a = ap.parse_args()
    run(a.checkpoint, a.repeat, Path(a.out))
