"""Structures for the built-in datasets: crystals, melt-quenched amorphous networks, MD snapshots.

Amorphous cells are made by melt-and-quench with a cheap, short-ranged pair potential
(`PairPotential`, an ASE calculator): random start at the target density, Langevin MD in the
melt, a linear quench, then FIRE relaxation. For HfO2 the potential (`HFO2_POTENTIAL`) is a
Morse Hf-O bond (r0 = 2.08 A, the Hf-O bond of monoclinic HfO2) plus exponential Hf-Hf and
O-O walls; it is fitted to nothing more than bond length and contact distances, which is
what a tight-binding or DFT single point needs: a connected network with Hf 6-8-fold
coordinated by O, O 3-4-fold by Hf, and no unphysical contacts (see `network_stats`). It is
no substitute for a validated force field when structural statistics are the point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.data import atomic_masses, atomic_numbers
from ase.neighborlist import neighbor_list

from zoo.errors import ZooError

AMU_G = 1.66053906660e-24  # grams per atomic mass unit


@dataclass(frozen=True)
class PairTerm:
    """V(r) = D[(1 - e^{-a(r-r0)})^2 - 1] (Morse, if D > 0) + A e^{-r/rho} (wall, if A > 0)."""

    morse_d: float = 0.0
    morse_a: float = 1.0
    morse_r0: float = 2.0
    wall_a: float = 0.0
    wall_rho: float = 0.3

    def energy_force(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """V(r) and -dV/dr."""
        e = np.zeros_like(r)
        f = np.zeros_like(r)
        if self.morse_d:
            x = np.exp(-self.morse_a * (r - self.morse_r0))
            e += self.morse_d * ((1 - x) ** 2 - 1)
            f -= 2 * self.morse_d * self.morse_a * (1 - x) * x
        if self.wall_a:
            w = self.wall_a * np.exp(-r / self.wall_rho)
            e += w
            f += w / self.wall_rho
        return e, f


def _wall(energy_ev: float, at_r: float, rho: float = 0.25) -> PairTerm:
    """Exponential wall that costs `energy_ev` at distance `at_r`."""
    return PairTerm(wall_a=energy_ev * np.exp(at_r / rho), wall_rho=rho)


#: Hf-O Morse bond at 2.08 A; Hf-Hf and O-O walls (0.3 eV at 3.2 A / 2.6 A)
HFO2_POTENTIAL: dict[tuple[str, str], PairTerm] = {
    ("Hf", "O"): PairTerm(morse_d=1.2, morse_a=1.7, morse_r0=2.08, wall_a=0.0),
    ("Hf", "Hf"): _wall(0.3, 3.2),
    ("O", "O"): _wall(0.3, 2.6),
}


class PairPotential(Calculator):
    """Shifted-force pair potential from a table {(sym_a, sym_b): PairTerm} (energy in eV)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, terms: dict[tuple[str, str], PairTerm], cutoff: float = 5.0, skin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.terms = {}
        for (a, b), t in terms.items():
            za, zb = atomic_numbers[a], atomic_numbers[b]
            self.terms[(za, zb)] = self.terms[(zb, za)] = t
        self._list = None  # Verlet list (i, j, shift, reference positions, cell): rebuilt when atoms move > skin/2

    def _pairs(self, atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        pos, cell = atoms.positions, np.asarray(atoms.cell)
        lst = self._list
        if (lst is None or lst[3].shape != pos.shape or not np.array_equal(lst[4], cell)
                or np.linalg.norm(pos - lst[3], axis=1).max() > 0.5 * self.skin):
            i, j, S = neighbor_list("ijS", atoms, self.cutoff + self.skin)
            lst = self._list = (i, j, S @ cell, pos.copy(), cell.copy())
        i, j, shift = lst[0], lst[1], lst[2]
        D = pos[j] + shift - pos[i]
        d = np.linalg.norm(D, axis=1)
        m = d < self.cutoff
        return i[m], j[m], d[m], D[m]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j, d, D = self._pairs(self.atoms)
        z = self.atoms.numbers
        energy = 0.0
        forces = np.zeros((len(z), 3))
        rc = np.array([self.cutoff])
        for (za, zb), t in self.terms.items():
            m = (z[i] == za) & (z[j] == zb)
            if not m.any():
                continue
            e, f = t.energy_force(d[m])
            ec, fc = t.energy_force(rc)
            # shifted force: V(r) - V(rc) + (r - rc) V'(rc), so energy and force vanish at rc
            e = e - ec + (d[m] - rc) * fc
            f = f - fc
            energy += 0.5 * e.sum()  # each pair appears as (i, j) and (j, i)
            # force on j from i along r_ij; the (j, i) entry gives i its share
            np.add.at(forces, j[m], (f / d[m])[:, None] * D[m])
        self.results = {"energy": float(energy), "forces": forces}


def monoclinic_hfo2() -> Atoms:
    """m-HfO2 (P2_1/c, 12 atoms): a, b, c = 5.117, 5.175, 5.291 A, beta = 99.22 deg."""
    from ase.spacegroup import crystal

    return crystal(["Hf", "O", "O"], basis=[(0.2759, 0.0412, 0.2078), (0.0736, 0.3317, 0.3470), (0.4492, 0.7569, 0.4800)],
                   spacegroup=14, cellpar=[5.117, 5.175, 5.291, 90, 99.22, 90])


def density_g_cm3(atoms: Atoms) -> float:
    return float(atoms.get_masses().sum() * AMU_G / (atoms.get_volume() * 1e-24))


def elongated_cell(mass_amu: float, density: float, aspect: tuple[float, float, float] = (2, 1, 1)) -> np.ndarray:
    """Orthorhombic cell of the given density with edge ratios `aspect` (x = 2y = 2z by default)."""
    vol = mass_amu * AMU_G / density * 1e24  # A^3
    a = np.asarray(aspect, dtype=float)
    scale = (vol / a.prod()) ** (1 / 3)
    return np.diag(a * scale)


def random_start(symbols: list[str], cell: np.ndarray, rng: np.random.Generator, min_dist: dict[tuple[str, str], float],
                 max_tries: int = 20000) -> Atoms:
    """Random sequential placement with minimum distances per species pair (the melt's start)."""
    atoms = Atoms(cell=cell, pbc=True)
    for sym in symbols:
        for _ in range(max_tries):
            p = rng.random(3) @ cell
            if len(atoms) == 0:
                break
            delta = atoms.positions - p
            frac = np.linalg.solve(cell.T, delta.T).T
            frac -= np.round(frac)
            dist = np.linalg.norm(frac @ cell, axis=1)
            lim = np.array([min_dist.get((sym, s), min_dist.get((s, sym), 1.5)) for s in atoms.get_chemical_symbols()])
            if np.all(dist > lim):
                break
        else:
            raise ZooError(f"could not place {len(symbols)} atoms at this density (random start failed)")
        atoms.append(sym)
        atoms.positions[-1] = p
    return atoms


def melt_quench(atoms: Atoms, calc: Calculator, seed: int, t_melt: float = 4000.0, t_final: float = 300.0,
                melt_steps: int = 300, quench_steps: int = 500, timestep_fs: float = 2.0, fmax: float = 0.02,
                relax_steps: int = 800) -> Atoms:
    """Langevin melt at t_melt, linear quench to t_final, FIRE relaxation (fixed cell)."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.optimize import FIRE

    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, t_melt, rng=rng)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=t_melt, friction=0.02, fixcm=False, rng=rng)
    dyn.run(melt_steps)
    for k in range(quench_steps // 50):
        dyn.set_temperature(temperature_K=t_melt + (t_final - t_melt) * (k + 1) / (quench_steps // 50))
        dyn.run(50)
    FIRE(atoms, logfile=None).run(fmax=fmax, steps=relax_steps)
    atoms.wrap()
    out = atoms.copy()
    out.calc = None
    return out


def amorphous_hfo2(n_formula: int, seed: int, density: float = 9.7, aspect=(2, 1, 1), **mq) -> Atoms:
    """Melt-quenched a-HfO2 with n_formula HfO2 units in an elongated orthorhombic cell."""
    rng = np.random.default_rng(seed)
    mass = n_formula * (atomic_masses[72] + 2 * atomic_masses[8])
    symbols = ["Hf"] * n_formula + ["O"] * (2 * n_formula)
    cell = elongated_cell(mass, density, aspect)
    start = random_start(symbols, cell, rng, {("Hf", "Hf"): 2.4, ("O", "O"): 1.8, ("Hf", "O"): 1.5})
    out = melt_quench(start, PairPotential(HFO2_POTENTIAL), seed, **mq)
    return out


def remove_oxygen(atoms: Atoms, fraction: float, seed: int) -> Atoms:
    """Oxygen vacancies: remove round(fraction * n_O) randomly chosen O atoms."""
    o = np.flatnonzero(atoms.numbers == 8)
    rng = np.random.default_rng(seed)
    drop = rng.choice(o, size=int(round(fraction * o.size)), replace=False)
    keep = np.setdiff1d(np.arange(len(atoms)), drop)
    return atoms[keep]


def network_stats(atoms: Atoms, a: str = "Hf", b: str = "O", bond_cut: float = 2.6) -> dict:
    """Coordination of a by b within bond_cut, shortest a-a, b-b, a-b distances, first g(r) peak of a-b."""
    za, zb = atomic_numbers[a], atomic_numbers[b]
    i, j, d = neighbor_list("ijd", atoms, 6.0)
    z = atoms.numbers
    ab = (z[i] == za) & (z[j] == zb)
    cn = np.bincount(i[ab & (d < bond_cut)], minlength=len(atoms))[z == za]
    ba = np.bincount(i[(z[i] == zb) & (z[j] == za) & (d < bond_cut)], minlength=len(atoms))[z == zb]
    hist, edges = np.histogram(d[ab], bins=np.arange(1.5, 3.5, 0.05))
    mid = 0.5 * (edges[1:] + edges[:-1])
    # g(r) ~ hist / r^2: the first peak
    peak = float(mid[np.argmax(hist / mid**2)])

    def dmin(m):
        return float(d[m].min()) if m.any() else float("inf")

    return {"cn_mean": float(cn.mean()), "cn_std": float(cn.std()),
            "cn_hist": {int(k): int(v) for k, v in zip(*np.unique(cn, return_counts=True))},
            f"cn_{b}_by_{a}_mean": float(ba.mean()),
            f"dmin_{a}{a}": dmin((z[i] == za) & (z[j] == za)), f"dmin_{b}{b}": dmin((z[i] == zb) & (z[j] == zb)),
            f"dmin_{a}{b}": dmin(ab), "gr_first_peak": peak, "density_g_cm3": density_g_cm3(atoms)}


def md_snapshots(name: str, n: int, seed: int, temperature_k: float = 500.0, every: int = 10,
                 timestep_fs: float = 0.5) -> list[Atoms]:
    """n geometries of a molecule (`zoo.data.molecules.molecule_geometry`: "H2O", "CH3CH2OH",
    "uracil", "malondialdehyde", ...) from a Langevin MD trajectory
    driven by GFN1-xTB (tblite's ASE calculator), one snapshot every `every` steps after 200
    steps of equilibration."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta
    from tblite.ase import TBLite

    from zoo.data.molecules import molecule_geometry

    atoms = molecule_geometry(name)
    atoms.calc = TBLite(method="GFN1-xTB", verbosity=0)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_k, rng=rng)
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature_k, friction=0.02, fixcm=False, rng=rng)
    dyn.run(200)
    out = []
    for _ in range(n):
        dyn.run(every)
        snap = atoms.copy()
        snap.calc = None
        snap.positions -= snap.positions.mean(axis=0)
        out.append(snap)
    return out
