"""The catalogue's entries: what each built-in dataset is, at which sizes, and the text its card carries.

An `Entry` names its engine, its sizes (cutoff, recipe parameters, a note on the cells), the plan
that lists its structures (zoo.data.catalogue.recipes), its generation seed and the text that goes
into the card (`description`, `card_extra`). Changing any of these changes the recipe hash of the
datasets built from it (zoo.data.format.recipe_hash).

`engines` holds the recipe for a build with another engine (`zoo data build a-hfo2 --engine
cp2k`): its options and cutoffs. The periodic seed sets carry the seed's own level of theory
(`seed_cp2k`): CP2K PBE, SZV-MOLOPT-SR-GTH (DZVP for a-GST), GTH-PBE, per-image blocks, the
seed's pair cutoffs (8 A; 12 A for a-GST) at every size, which per-image blocks allow in cells
narrower than 2 x cutoff.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from zoo.data.catalogue.recipes import (Job, a_gst_cell, a_ptge2_cell, plan_a_hfo2, plan_amorphous, plan_c_hfo2,
                                        plan_md17, plan_soc)
from zoo.errors import ZooError

SIZES = ("small", "medium", "paper")


@dataclass(frozen=True)
class Size:
    cutoff: float
    params: dict
    note: str = ""


@dataclass(frozen=True)
class EngineRecipe:
    """A build of an entry with an engine other than its own: the engine's options and the cutoff
    per size (sizes not named keep their own)."""

    options: dict
    cutoffs: dict[str, float] = field(default_factory=dict)
    note: str = ""


def seed_cp2k(basis: str, cutoff: float) -> EngineRecipe:
    """The seed's level of theory (Xia et al.): CP2K PBE / `basis` / GTH-PBE, real per-image blocks
    (k-point code at Gamma, so no Gamma folding at any cell width) within the seed's pair cutoff."""
    return EngineRecipe({"basis": basis, "images": True}, {size: cutoff for size in SIZES},
                        f"seed level of theory: CP2K PBE, {basis.upper()}-GTH, GTH-PBE, per-image H(R) and S(R), "
                        f"{cutoff:g} A pair cutoff at every size")


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    engine: str
    sizes: dict[str, Size]
    plan: Callable[["Entry", str, int], list[Job]]
    seed: int = 2024
    periodic: bool = True  # periodic cells from a Gamma-point engine are stored "gamma-folded"
    engine_options: dict = field(default_factory=dict)
    card_extra: dict = field(default_factory=dict)
    bond_cut: float | None = None  # coordination statistics in the card (zoo.data.covalent.coordination_stats)
    engines: dict[str, EngineRecipe] = field(default_factory=dict)  # builds with another engine

    def engine_recipe(self, engine: str | None = None) -> tuple[str, dict, dict[str, float]]:
        """(engine name, its options, cutoff per size) of a build with `engine` (None: the entry's)."""
        name = (engine or self.engine).lower()
        cutoffs = {k: v.cutoff for k, v in self.sizes.items()}
        if name == self.engine:
            return name, dict(self.engine_options), cutoffs
        recipe = self.engines.get(name, EngineRecipe({}))
        return name, dict(recipe.options), {**cutoffs, **recipe.cutoffs}


_HFO2_SIZES = {
    "small": Size(5.0, {"n_formula": 64}, "192 atoms per cell, 21.0 x 10.5 x 10.5 A"),
    "medium": Size(7.0, {"n_formula": 216}, "648 atoms per cell, 31.4 x 15.7 x 15.7 A"),
    "paper": Size(8.0, {"n_formula": 1000}, "3,000 atoms per cell, 52.4 x 26.2 x 26.2 A (cluster-sized build)"),
}
_AMORPHOUS_NOTE = ("melt-quench (zoo.data.structures.amorphous_hfo2): random start at 9.7 g/cm^3, Langevin MD at "
                   "4000 K, linear quench to 300 K, FIRE relaxation with a Morse Hf-O / exponential-wall pair potential")

_MOLECULE_SIZES = {"small": Size(10.0, {"counts": (24, 12, 12)}, "24 / 12 / 12 geometries"),
                   "medium": Size(10.0, {"counts": (200, 100, 100)}, "200 / 100 / 100 geometries"),
                   "paper": Size(10.0, {"counts": (500, 500, 499)}, "500 / 500 / 499 geometries (seed's Appendix B)")}
_PTGE_NOTE = ("a-Ge melt-quench with the Ding-Andersen Stillinger-Weber potential (matscipy; 3500 K melt, quench to "
              "300 K, FIRE), a third of the sites made Pt with no Pt-Pt bonds where possible, cell rescaled to "
              "Vegard's volume (fcc Pt / a-Ge atomic volumes), not relaxed again (zoo.data.covalent.amorphous_ptge2)")
_GST_NOTE = ("pair-potential melt-quench (Morse Ge-Te / Sb-Te at 2.80 / 2.95 A, cation-cation and Te-Te walls; 2500 K "
             "melt, quench to 300 K), then fixed-cell FIRE with GFN1-xTB forces capped at gfn1_steps steps "
             "(zoo.data.covalent.amorphous_gst)")

_SOC_MOLECULES_GKS = {"xc": "PBE", "basis": "dzp-dkh"}
_SOC_MOLECULES_NOTE = ("reference geometries (Bi2, PbSe, PbTe: Huber-Herzberg r_e; H2Se, H2Te, HI, CH3I: NIST CCCBDB; "
                       "BiH3: Jerzembeck et al. 2002) with every Cartesian coordinate displaced by N(0, 0.05^2) A "
                       "(zoo.data.engines.pyscf_soc.displaced_molecule)")
_SOC_SMALL = ("HI", "H2Se", "H2Te", "BiH3", "PbTe", "Bi2")
_SOC_MEDIUM = ("HI", "HBr", "IBr", "H2Se", "H2Te", "BiH3", "CH3I", "PbSe", "PbTe", "Bi2")

CATALOGUE: dict[str, Entry] = {e.name: e for e in [
    Entry("a-hfo2", "amorphous HfO2 at 9.7 g/cm^3, three independent melt-quenched cells (train / val / test), "
          "elongated x = 2y = 2z", "tblite", _HFO2_SIZES, plan_a_hfo2,
          card_extra={"structures": _AMORPHOUS_NOTE}, bond_cut=2.6,
          engines={"cp2k": seed_cp2k("szv-molopt-sr", 8.0)}),
    Entry("a-hfox", "amorphous HfO2-x: each a-hfo2 cell with 5 / 10 / 15 % of the O atoms removed (vacancies as removed "
          "atoms with every engine: tblite has no ghost atoms, and dataset schema v1 has no Z=0 sites for CP2K's "
          "GHOST kinds), relaxed again", "tblite",
          {k: Size(v.cutoff, {**v.params, "vacancies": (0.05, 0.10, 0.15)}, "9 cells (3 per split): " + v.note)
           for k, v in _HFO2_SIZES.items()},
          plan_a_hfo2, seed=2024, card_extra={"structures": _AMORPHOUS_NOTE + "; then O removed and relaxed again"},
          bond_cut=2.6, engines={"cp2k": seed_cp2k("szv-molopt-sr", 8.0)}),
    Entry("c-hfo2", "monoclinic HfO2 supercells, rattled (0.05 A) and strained (-1, 0, +1 %)", "tblite",
          {"small": Size(4.9, {"repeat": 2, "per_split": 3, "rattle": 0.05}, "2x2x2, 96 atoms"),
           "medium": Size(7.0, {"repeat": 3, "per_split": 3, "rattle": 0.05}, "3x3x3, 324 atoms"),
           "paper": Size(8.0, {"repeat": 4, "per_split": 3, "rattle": 0.05}, "4x4x4, 768 atoms")},
          plan_c_hfo2, seed=7, bond_cut=2.6),
    Entry("md17-h2o", "water geometries from a 500 K Langevin trajectory (GFN1-xTB forces), PBE/def2-SVP H and S",
          "pyscf", _MOLECULE_SIZES, plan_md17("H2O"), seed=17, periodic=False),
    Entry("md17-ethanol", "ethanol geometries from a 500 K Langevin trajectory (GFN1-xTB forces), PBE/def2-SVP",
          "pyscf", _MOLECULE_SIZES, plan_md17("CH3CH2OH"), seed=18, periodic=False),
    Entry("md17-malondialdehyde", "malondialdehyde (chelated enol) geometries from a 500 K Langevin trajectory "
          "(GFN1-xTB forces), PBE/def2-SVP", "pyscf", _MOLECULE_SIZES, plan_md17("malondialdehyde"), seed=19,
          periodic=False),
    Entry("md17-uracil", "uracil geometries from a 500 K Langevin trajectory (GFN1-xTB forces), PBE/def2-SVP",
          "pyscf", _MOLECULE_SIZES, plan_md17("uracil"), seed=20, periodic=False),
    Entry("soc-mini", "spinful (spin-orbit) Hamiltonians of small closed-shell bromides and iodides, X2C1e-GHF/3-21G "
          "complex Fock matrices, geometries randomly displaced from the reference", "pyscf-soc",
          {"small": Size(10.0, {"molecules": ("HI", "HBr", "IBr", "CH3I", "CH3Br"), "counts": (3, 1, 1),
                                "rattle": 0.05}, "5 molecules x 3 / 1 / 1 geometries (25 structures)"),
           "medium": Size(10.0, {"molecules": ("HI", "HBr", "IBr", "I2", "Br2", "CH3I", "CH3Br"),
                                 "counts": (20, 5, 5), "rattle": 0.05}, "7 molecules x 20 / 5 / 5 geometries")},
          plan_soc, seed=53, periodic=False,
          card_extra={"structures": "reference geometries (NIST CCCBDB bond lengths) with every Cartesian coordinate "
                                    "displaced by N(0, 0.05^2) A (zoo.data.engines.pyscf_soc.displaced_molecule)"}),
    Entry("soc-molecules", "spinful (spin-orbit) Hamiltonians of closed-shell molecules with heavy p-block atoms "
          "(Se, Br, Te, I, Pb, Bi), X2C1e-GKS PBE/DZP-DKH complex Kohn-Sham matrices, geometries randomly displaced "
          "from the reference; split by geometry", "pyscf-soc",
          {"small": Size(10.0, {"molecules": _SOC_SMALL, "counts": (3, 1, 1), "rattle": 0.05},
                         "6 molecules x 3 / 1 / 1 geometries (30 structures)"),
           "medium": Size(10.0, {"molecules": _SOC_MEDIUM, "counts": (20, 5, 5), "rattle": 0.05},
                          "10 molecules x 20 / 5 / 5 geometries (300 structures)")},
          plan_soc, seed=83, periodic=False, engine_options=_SOC_MOLECULES_GKS,
          card_extra={"structures": _SOC_MOLECULES_NOTE}),
    Entry("soc-molecules-unseen", "soc-molecules split by molecule: val and test hold molecules never seen in "
          "training (their elements are), X2C1e-GKS PBE/DZP-DKH", "pyscf-soc",
          {"small": Size(10.0, {"molecules": _SOC_SMALL, "counts": (3, 1, 1), "rattle": 0.05,
                                "split_by": "molecule", "holdout": {"val": ("Bi2",), "test": ("H2Te",)}},
                         "6 molecules x 5 geometries; val Bi2 (Bi seen in BiH3), test H2Te (Te seen in PbTe)"),
           "medium": Size(10.0, {"molecules": _SOC_MEDIUM, "counts": (20, 5, 5), "rattle": 0.05,
                                 "split_by": "molecule",
                                 "holdout": {"val": ("PbSe", "BiH3"), "test": ("IBr", "H2Te")}},
                          "10 molecules x 30 geometries; val PbSe, BiH3; test IBr, H2Te")},
          plan_soc, seed=83, periodic=False, engine_options=_SOC_MOLECULES_GKS,
          card_extra={"structures": _SOC_MOLECULES_NOTE}),
    Entry("a-ptge", "amorphous PtGe2: Pt substituted into melt-quenched a-Ge, three independent cells "
          "(train / val / test), elongated x = 2y = 2z", "tblite",
          {"small": Size(6.0, {"n_atoms": 192}, "192 atoms per cell (64 Pt), 24.9 x 12.4 x 12.4 A"),
           "medium": Size(8.0, {"n_atoms": 648}, "648 atoms per cell, 37.4 x 18.7 x 18.7 A"),
           "paper": Size(10.0, {"n_atoms": 3000}, "3,000 atoms per cell, 62.3 x 31.1 x 31.1 A (cluster-sized build)")},
          plan_amorphous(a_ptge2_cell, "n_atoms"), seed=31, card_extra={"structures": _PTGE_NOTE}, bond_cut=2.9,
          engines={"cp2k": seed_cp2k("szv-molopt-sr", 8.0)}),
    Entry("a-gst", "amorphous Ge1Sb2Te4 at 5.9 g/cm^3, three independent cells (train / val / test), "
          "elongated x = 2y = 2z", "tblite",
          {"small": Size(6.0, {"n_formula": 16, "gfn1_steps": 40}, "112 atoms per cell, 24.6 x 12.3 x 12.3 A"),
           "medium": Size(9.0, {"n_formula": 64, "gfn1_steps": 40}, "448 atoms per cell, 39.0 x 19.5 x 19.5 A"),
           "paper": Size(12.0, {"n_formula": 432, "gfn1_steps": 40},
                         "3,024 atoms per cell, 12 A (the seed's pair cutoff), cluster-sized build")},
          plan_amorphous(a_gst_cell, "n_formula"), seed=41, card_extra={"structures": _GST_NOTE}, bond_cut=3.2,
          engines={"cp2k": seed_cp2k("dzvp-molopt-sr", 12.0)}),
]}


def split_variant(spec: str) -> tuple[str, str | None, bool]:
    """'a-hfo2+cp2k+unfolded@paper' -> ('a-hfo2@paper', 'cp2k', True): the entry (with its size),
    the engine of a build with another engine, and whether it is a supercell-unfolded build."""
    base, at, size = spec.partition("@")
    name, *tags = base.split("+")
    unfolded = "unfolded" in tags
    engines = [t for t in tags if t != "unfolded"]
    if len(engines) > 1:
        raise ZooError(f"dataset name {spec!r} names more than one engine ({', '.join(engines)})")
    return name + at + size, (engines[0].lower() if engines else None), unfolded


def parse_name(spec: str, size: str | None = None) -> tuple[Entry, str]:
    """'a-hfo2', 'a-hfo2@paper' (or a variant, 'a-hfo2+cp2k@paper') -> (entry, size); ZooError for
    unknown names or sizes."""
    name, _, at = split_variant(spec)[0].partition("@")
    if at and size and at != size:  # 'md17-h2o@medium' with size 'small' would silently pick the wrong build
        raise ZooError(f"dataset {spec!r} names size {at!r} but size {size!r} was also asked for")
    size = at or size or "small"
    if name not in CATALOGUE:
        raise ZooError(f"unknown dataset {name!r}; the catalogue has: {', '.join(sorted(CATALOGUE))}")
    if size not in CATALOGUE[name].sizes:
        raise ZooError(f"dataset {name!r} has no size {size!r} (sizes: {', '.join(CATALOGUE[name].sizes)})")
    return CATALOGUE[name], size
