"""The structure family `zoo perf` measures on: one a-HfO2 cell, made once, repeated to every size.

The base cell is the a-hfo2 catalogue entry's own test cell at a catalogue size (the melt-quench
`zoo data structure a-hfo2 --size S` runs), cached as extended XYZ under the zoo cache, or a
structure file given by the user. Larger structures are supercells of it (`repeat_structure`),
so the local environment, hence the cost per atom, is the same at every size and only N varies.
A supercell is accepted only when every periodic width is at least 2 x cutoff, as in the datasets
(no atom meets its own image, no pair is joined through two images).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from zoo.data.format import Structure
from zoo.errors import ConfigError

#: the catalogue entry whose cell, cutoff and basis `zoo perf` uses
FAMILY = "a-hfo2"
#: a size is refused when the nearest valid supercell is further than this factor from it
SIZE_TOLERANCE = 1.5
#: supercells within this factor of a size count as equally near: the most nearly cubic of them is taken
SIZE_SLACK = 1.2


@dataclass(frozen=True)
class Family:
    """The base cell and what a model built for it needs (the dataset's cutoff and basis)."""

    cell: Structure
    source: str  # where the cell came from (catalogue size or file)
    cutoff: float
    basis: str

    def info(self, spinful: bool = False):
        """DatasetInfo of an untrained model for this family (elements of the cell, its basis)."""
        from zoo.data.torch_data import DatasetInfo
        from zoo.physics.basis import OrbitalLayout, get_basis

        zs = sorted(int(z) for z in np.unique(self.cell.numbers))
        return DatasetInfo(OrbitalLayout(get_basis(self.basis), zs), self.cutoff, spinful=spinful,
                           name=f"perf-{FAMILY}")


def family_defaults(size: str = "paper") -> tuple[float, str]:
    """(cutoff of the catalogue entry at `size`, basis its engine writes), e.g. (8.0, 'gfn1-xtb') for paper."""
    from zoo.data.catalogue import parse_name
    from zoo.data.engines import get_engine

    entry, size = parse_name(FAMILY, size)
    return float(entry.sizes[size].cutoff), get_engine(entry.engine).basis().name


def base_cell(size: str = "small", structure: str | Path | None = None, cache: str | Path | None = None,
              progress: bool = False) -> tuple[Structure, str]:
    """(cell, description): `structure` read from its file, else the a-hfo2 test cell at catalogue
    `size`, made once by its melt-quench recipe and cached under `<zoo cache>/structures/`."""
    from zoo.data.big import catalogue_structure, write_structure
    from zoo.data.catalogue import cache_dir, parse_name
    from zoo.data.structure_io import read_structure

    if structure is not None:
        return read_structure(structure), str(structure)
    entry, size = parse_name(FAMILY, size)
    path = cache_dir(cache) / "structures" / f"{entry.name}-{size}-test-0.extxyz"
    if not path.is_file():
        if progress:
            print(f"zoo perf: making the {entry.name} {size} test cell once (melt-quench; cached at {path})",
                  file=sys.stderr, flush=True)
        write_structure(catalogue_structure(entry.name, size), path)
    return read_structure(path), f"{entry.name} {size} test cell"


def parse_sizes(text: str) -> list[int]:
    """'1k,3k,10k,30000' -> [1000, 3000, 10000, 30000] (ascending, distinct); ConfigError otherwise."""
    sizes = []
    for part in (p.strip().lower() for p in text.split(",")):
        scale = 1000 if part.endswith("k") else 1
        try:
            n = int(round(float(part[:-1] if scale > 1 else part) * scale))
        except ValueError:
            raise ConfigError(f"--sizes expects atom counts such as 1k,3k,10k, got {text!r}") from None
        if n < 1:
            raise ConfigError(f"--sizes: atom counts must be positive, got {part!r}")
        sizes.append(n)
    if not sizes:
        raise ConfigError("--sizes is empty")
    return sorted(set(sizes))


def smallest_repeat(cell: Structure, cutoff: float) -> tuple[int, int, int]:
    """The fewest repeats that make every periodic width >= 2 x cutoff."""
    from zoo.data.graph import perpendicular_widths

    w = perpendicular_widths(cell.cell)
    return tuple(max(1, math.ceil(2 * cutoff / w[k])) if cell.pbc[k] else 1 for k in range(3))


def choose_repeat(cell: Structure, target: int | None, cutoff: float) -> tuple[int, int, int]:
    """The supercell of `cell` near `target` atoms whose periodic widths are all >= 2 x cutoff: the
    most nearly cubic one within SIZE_SLACK of the target, else the nearest (target None: the
    smallest such supercell). ConfigError when none is within SIZE_TOLERANCE of the target."""
    from zoo.data.graph import perpendicular_widths

    lo = smallest_repeat(cell, cutoff)
    if target is None:
        return lo
    pbc = np.asarray(cell.pbc, dtype=bool)
    w = perpendicular_widths(cell.cell)
    n0 = cell.n_atoms
    limit = max(int(SIZE_TOLERANCE * target / n0), lo[0] * lo[1] * lo[2])  # most cells worth trying
    hi = [limit if pbc[k] else 1 for k in range(3)]
    best, best_key = None, None
    for a in range(lo[0], hi[0] + 1):
        for b in range(lo[1], hi[1] + 1):
            if a * b * lo[2] > limit:
                break
            for c in range(lo[2], min(hi[2], limit // (a * b)) + 1):
                wr = [w[k] * r for k, r in enumerate((a, b, c)) if pbc[k]]
                dist = abs(math.log(a * b * c * n0 / target))
                key = (max(round(dist, 9), math.log(SIZE_SLACK)), -(min(wr) / max(wr)) if wr else 0.0, dist)
                if best_key is None or key < best_key:
                    best, best_key = (a, b, c), key
    n_best = n0 * best[0] * best[1] * best[2]
    if not (target / SIZE_TOLERANCE <= n_best <= target * SIZE_TOLERANCE):
        smallest = n0 * lo[0] * lo[1] * lo[2]
        raise ConfigError(f"size {target} atoms is too far from every supercell of the {n0}-atom base cell with all "
                          f"periodic widths >= 2 x cutoff ({2 * cutoff:g} A): the nearest has {n_best} atoms "
                          f"({'x'.join(map(str, best))}), the smallest {smallest}. Choose sizes of at least {smallest} "
                          f"atoms, a smaller cutoff or another base cell")
    return tuple(int(r) for r in best)


def slab_repeat(cell: Structure, target: int, cutoff: float) -> tuple[int, int, int]:
    """A supercell of at least `target` atoms that is long along the base cell's widest periodic
    direction and as thin as 2 x cutoff allows across it, so slabs cut along it stay thick compared
    with their halo (the seed's training cells are such rods)."""
    from zoo.data.graph import perpendicular_widths

    pbc = np.asarray(cell.pbc, dtype=bool)
    if not pbc.any():
        raise ConfigError("the training cell must be periodic in at least one direction (slabs are cut along one)")
    w = perpendicular_widths(cell.cell)
    reps = list(smallest_repeat(cell, cutoff))
    axis = int(np.argmax(np.where(pbc, w, -1.0)))
    across = cell.n_atoms * int(np.prod([reps[k] for k in range(3) if k != axis]))
    reps[axis] = max(reps[axis], math.ceil(target / across))
    return tuple(int(r) for r in reps)


def write_supercell(cell: Structure, reps: Sequence[int], cutoff: float, path: Path) -> tuple[Path, dict]:
    """Write the supercell `reps` of `cell` to `path`: (path, {atoms, repeat, cutoff, widths_A})."""
    from zoo.data.big import repeat_structure, write_structure
    from zoo.data.graph import perpendicular_widths

    st = repeat_structure(cell, reps)
    return write_structure(st, path), {"atoms": st.n_atoms, "repeat": "x".join(map(str, reps)), "cutoff": cutoff,
                                       "widths_A": [round(float(x), 1) for x in perpendicular_widths(st.cell)]}


def supercells(cell: Structure, sizes: Sequence[int], cutoff: float) -> list[tuple[int, tuple[int, int, int]]]:
    """[(target, repeat)] for every size; ConfigError when two sizes give the same supercell."""
    out = [(n, choose_repeat(cell, n, cutoff)) for n in sizes]
    seen: dict[tuple[int, int, int], int] = {}
    for n, reps in out:
        if reps in seen:
            raise ConfigError(f"sizes {seen[reps]} and {n} give the same supercell ({'x'.join(map(str, reps))} of the "
                              f"{cell.n_atoms}-atom base cell); give sizes further apart")
        seen[reps] = n
    return out
