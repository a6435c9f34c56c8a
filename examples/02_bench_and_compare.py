"""Bench two models with two seeds each on two small datasets, then compare them.

Run:  python examples/02_bench_and_compare.py [WORK_DIR]
The same steps on the command line (with a catalogue dataset instead of these synthetic ones):

    zoo bench --model sk --dataset a-hfo2 --seeds 0,1,2
    zoo bench --model mean --dataset a-hfo2
    zoo leaderboard a-hfo2                 # seeds aggregated: mean ± std, n
    zoo leaderboard --compare              # models x datasets, ranked within each dataset
    zoo leaderboard --compare --write      # regenerate leaderboards/README.md and its charts

Everything goes to WORK_DIR (a temporary directory by default), never to ./leaderboards.
"""

import sys
import tempfile
from pathlib import Path

from ase.build import bulk

from zoo.cli.main import main as zoo
from zoo.data import DatasetWriter, Structure
from zoo.data.synthetic import toy_record
from zoo.physics.basis import get_basis


def synthetic_dataset(path: Path, element: str, a: float) -> Path:
    """Three rattled diamond cells with a toy equivariant H (train / val / test)."""
    basis = get_basis("gfn1-xtb")
    with DatasetWriter(path, f"example-{element.lower()}", basis, 3.0, {"code": "synthetic", "method": "toy"}) as w:
        for k in range(3):
            atoms = bulk(element, "diamond", a, cubic=True)
            atoms.rattle(0.05, seed=k)
            w.add(toy_record(Structure.from_ase(atoms), basis, 3.0, name=f"s{k}"))
        w.finalize({"train": ["s0"], "val": ["s1"], "test": ["s2"]})
    return path


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    lb, runs = work / "leaderboards", work / "runs"
    out = ["--leaderboard-dir", str(lb), "--runs-dir", str(runs), "--quiet"]
    for element, a in (("Si", 5.43), ("C", 3.57)):
        data = synthetic_dataset(work / element, element, a)
        zoo(["bench", "--model", "mean", "--dataset", str(data), *out])  # the calibration row
        zoo(["bench", "--model", "sk", "--dataset", str(data), "--max-epochs", "40", "--seeds", "0,1", *out])
    zoo(["leaderboard", "example-si", "--leaderboard-dir", str(lb)])
    zoo(["leaderboard", "--compare", "--leaderboard-dir", str(lb)])
    zoo(["leaderboard", "--compare", "--write", "--leaderboard-dir", str(lb), "--runs-dir", str(runs)])


if __name__ == "__main__":
    main()
