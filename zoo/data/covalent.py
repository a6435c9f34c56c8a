"""Amorphous covalent and phase-change cells: a-Ge, a-PtGe2 and a-Ge1Sb2Te4.

- a-Ge: melt-quench with the Stillinger-Weber potential for Ge of Ding & Andersen (PRB 34, 6987,
  1986), evaluated by matscipy's many-body calculator; the standard route to a fourfold a-Ge
  network (~85 % fourfold atoms with 2 fs steps and a ~1e15 K/s quench).
- a-PtGe2: "Pt substituted into amorphous Ge": one third of the a-Ge sites become Pt, chosen so
  that no two Pt are bonded where possible (crystalline PtGe2 has no Pt-Pt bonds), then the cell
  is rescaled to Vegard's volume (mean of the elemental atomic volumes, fcc Pt and a-Ge). The
  substituted network is not relaxed again: no PyPI potential knows Pt-Ge, and GFN1 (`gfn1_steps`
  turns a relaxation on) still lowers a 192-atom cell by ~1.5 eV per FIRE step after 45 steps of
  ~20 s (benchmarks/gfn1_relaxation.py, docs/datasets.md).
- a-Ge1Sb2Te4: decorate-and-relax. A melt-quench with a pair potential of the HfO2 kind
  (Morse Ge-Te / Sb-Te bonds at the a-GST bond lengths, exponential cation-cation and Te-Te walls)
  gives a chemically ordered, overcoordinated network (rocksalt-like, Ge ~5.4, Sb ~5.1, Te ~3.9
  within 3.2 A); a fixed-cell FIRE relaxation with GFN1-xTB forces (tblite, the labelling
  method itself) then lets bonds break towards the Peierls-distorted, lower coordination of
  real a-GST. The relaxation is capped at `gfn1_steps` and need not reach fmax; the card says so.

`coordination_stats` gives the numbers the tests and the cards quote.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from ase.neighborlist import neighbor_list

from zoo.data.structures import AMU_G, PairPotential, PairTerm, _wall, elongated_cell, melt_quench, random_start

#: Stillinger-Weber for Ge, Ding & Andersen, Phys. Rev. B 34, 6987 (1986): the Si form with
#: epsilon = 1.93 eV, sigma = 2.181 A, lambda = 31 (matscipy's parameter-dictionary layout)
GE_STILLINGER_WEBER = {
    "__ref__": "K. Ding and H. C. Andersen, Phys. Rev. B 34, 6987 (1986)",
    "el": "Ge", "epsilon": 1.93, "sigma": 2.181, "costheta0": 1.0 / 3.0, "A": 7.049556277, "B": 0.6022245584,
    "p": 4, "a": 1.80, "lambda1": 31.0, "gamma": 1.20,
}
A_GE_DENSITY = 5.32  # g/cm^3, a-Ge (~2 % below c-Ge)
PT_FCC_VOLUME = 3.924**3 / 4  # A^3 per atom, fcc Pt (a = 3.924 A)

#: Ge-Sb-Te pair potential: Morse cation-Te bonds at the a-GST bond lengths (Ge-Te 2.80 A,
#: Sb-Te 2.95 A), walls of 0.3 eV at 3.2-3.4 A against homopolar and cation-cation contacts.
GST_POTENTIAL: dict[tuple[str, str], PairTerm] = {
    ("Ge", "Te"): PairTerm(morse_d=1.0, morse_a=1.5, morse_r0=2.80),
    ("Sb", "Te"): PairTerm(morse_d=1.0, morse_a=1.5, morse_r0=2.95),
    ("Te", "Te"): _wall(0.3, 3.4),
    ("Ge", "Ge"): _wall(0.3, 3.2),
    ("Ge", "Sb"): _wall(0.3, 3.2),
    ("Sb", "Sb"): _wall(0.3, 3.3),
}
A_GST_DENSITY = 5.9  # g/cm^3: cubic Ge1Sb2Te4 (a = 6.04 A) is 6.2; the amorphous phase is ~5 % lighter


def _mass(symbols: list[str]) -> float:
    return float(sum(atomic_masses[atomic_numbers[s]] for s in symbols))


def stillinger_weber_ge():
    """matscipy calculator for the Ding-Andersen Ge potential."""
    from matscipy.calculators.manybody import Manybody
    from matscipy.calculators.manybody.explicit_forms import StillingerWeber

    return Manybody(**StillingerWeber(GE_STILLINGER_WEBER))


def amorphous_ge(n_atoms: int, seed: int, density: float = A_GE_DENSITY, aspect=(2, 1, 1), melt_steps: int = 500,
                 quench_steps: int = 2000, relax_steps: int = 800) -> Atoms:
    """Melt-quenched a-Ge: random start, 3500 K melt, linear quench to 300 K (2 fs steps), FIRE."""
    rng = np.random.default_rng(seed)
    cell = elongated_cell(_mass(["Ge"] * n_atoms), density, aspect)
    start = random_start(["Ge"] * n_atoms, cell, rng, {("Ge", "Ge"): 2.2})
    return melt_quench(start, stillinger_weber_ge(), seed, t_melt=3500.0, t_final=300.0, melt_steps=melt_steps,
                       quench_steps=quench_steps, timestep_fs=2.0, relax_steps=relax_steps)


def substitute_apart(atoms: Atoms, symbol: str, count: int, seed: int, bond_cut: float = 2.9) -> Atoms:
    """Replace `count` atoms by `symbol`, never two bonded ones while unbonded sites remain.

    Minimum-degree greedy independent set (ties broken at random): take the free site with the
    fewest free neighbours, block its neighbours, repeat. It reaches ~0.43 N on a fourfold
    network, where a random greedy order stops near 0.37 N, short of PtGe2's N / 3. Any sites
    still missing are then chosen at random (and will have bonded pairs)."""
    from scipy.sparse import coo_matrix

    n = len(atoms)
    i, j = neighbor_list("ij", atoms, bond_cut)
    adj = coo_matrix((np.ones(i.size), (i, j)), shape=(n, n)).tocsr()
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(n)
    chosen = np.zeros(n, dtype=bool)
    free = np.ones(n, dtype=bool)
    while chosen.sum() < count and free.any():
        degree = adj @ free.astype(float)
        key = np.where(free, degree + tiebreak, np.inf)
        a = int(np.argmin(key))
        chosen[a] = True
        free[a] = False
        free[adj.indices[adj.indptr[a]:adj.indptr[a + 1]]] = False
    missing = count - int(chosen.sum())
    if missing > 0:
        chosen[rng.choice(np.flatnonzero(~chosen), size=missing, replace=False)] = True
    out = atoms.copy()
    out.numbers[chosen] = atomic_numbers[symbol]
    return out


def amorphous_ptge2(n_atoms: int, seed: int, gfn1_steps: int = 0, **mq) -> Atoms:
    """a-PtGe2: a-Ge network, a third of its sites Pt (kept apart), cell at Vegard's volume."""
    if n_atoms % 3:
        raise ValueError(f"a-PtGe2 needs a multiple of 3 atoms, got {n_atoms}")
    ge = amorphous_ge(n_atoms, seed, **mq)
    out = substitute_apart(ge, "Pt", n_atoms // 3, seed)
    ge_volume = atomic_masses[32] * AMU_G * 1e24 / A_GE_DENSITY  # A^3 per atom
    target = n_atoms * (PT_FCC_VOLUME + 2 * ge_volume) / 3
    out.set_cell(out.cell * (target / out.get_volume()) ** (1 / 3), scale_atoms=True)
    return gfn1_relax(out, gfn1_steps) if gfn1_steps else out


def amorphous_gst(n_formula: int, seed: int, density: float = A_GST_DENSITY, gfn1_steps: int = 40,
                  aspect=(2, 1, 1), melt_steps: int = 500, quench_steps: int = 1500) -> Atoms:
    """a-Ge1Sb2Te4 (n_formula x 7 atoms): pair-potential melt-quench, then GFN1-xTB relaxation."""
    symbols = ["Ge"] * n_formula + ["Sb"] * (2 * n_formula) + ["Te"] * (4 * n_formula)
    rng = np.random.default_rng(seed)
    cell = elongated_cell(_mass(symbols), density, aspect)
    # loose contact limits: random sequential placement jams at 5.9 g/cm^3 with tighter ones (the melt reorders anyway)
    start = random_start(symbols, cell, rng, {("Te", "Te"): 2.6, ("Ge", "Ge"): 2.4, ("Sb", "Sb"): 2.4,
                                              ("Ge", "Sb"): 2.4, ("Ge", "Te"): 2.3, ("Sb", "Te"): 2.3})
    out = melt_quench(start, PairPotential(GST_POTENTIAL, cutoff=6.0), seed, t_melt=2500.0, t_final=300.0,
                      melt_steps=melt_steps, quench_steps=quench_steps, timestep_fs=2.0)
    return gfn1_relax(out, gfn1_steps) if gfn1_steps else out


def gfn1_relax(atoms: Atoms, steps: int, fmax: float = 0.05, temperature_k: float = 1000.0, calc=None) -> Atoms:
    """Fixed-cell FIRE with GFN1-xTB forces (tblite), at most `steps` steps; ends early at the
    last good geometry if the SCC fails to converge on the way."""
    from ase.calculators.calculator import CalculationFailed
    from ase.optimize import FIRE
    from tblite.ase import TBLite

    work = atoms.copy()
    work.calc = calc or TBLite(method="GFN1-xTB", electronic_temperature=temperature_k, max_iterations=300,
                               verbosity=0)  # `calc`: another ASE calculator (tests)
    opt = FIRE(work, logfile=None)
    last = work.positions.copy()

    def remember() -> None:  # observers run after a successful force call, before the step
        last[:] = work.positions

    opt.attach(remember, interval=1)
    try:
        opt.run(fmax=fmax, steps=steps)
    except CalculationFailed:
        # a FIRE step can land where the SCC does not converge (seen once in 40 steps of a-GST):
        # the relaxation ends at the last geometry whose forces were computed
        work.positions = last
    work.wrap()
    out = work.copy()
    out.calc = None
    return out


def coordination_stats(atoms: Atoms, bond_cut: float) -> dict:
    """Per species: mean coordination (all neighbours within bond_cut) and its histogram; the
    shortest distance of every species pair; the density (periodic cells)."""
    from zoo.data.structures import density_g_cm3

    i, j, d = neighbor_list("ijd", atoms, max(bond_cut, 4.0))
    z = atoms.numbers
    bonded = d < bond_cut
    cn = np.bincount(i[bonded], minlength=len(atoms))
    density = round(density_g_cm3(atoms), 4) if atoms.pbc.all() else None  # molecules have no volume
    out: dict = {"bond_cut_A": bond_cut, "density_g_cm3": density, "cn_mean": {}, "cn_hist": {}, "dmin": {}}
    species = sorted(set(z.tolist()))
    for za in species:
        sym = chemical_symbols[za]
        c = cn[z == za]
        out["cn_mean"][sym] = round(float(c.mean()), 3)
        out["cn_hist"][sym] = {int(k): int(v) for k, v in zip(*np.unique(c, return_counts=True))}
        for zb in species:
            m = (z[i] == za) & (z[j] == zb)
            if zb >= za and m.any():
                out["dmin"][f"{sym}-{chemical_symbols[zb]}"] = round(float(d[m].min()), 3)
    return out
