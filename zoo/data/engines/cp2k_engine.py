"""CP2K adapter: PBE / MOLOPT-SR-GTH / GTH-PBE, the seed datasets' level of theory.

The binary (cp2k.psmp, cp2k.ssmp or cp2k on PATH; $ZOO_CP2K forces one) runs on an input written
into a temporary directory; `&KS_CSR_WRITE` / `&S_CSR_WRITE` write the converged Kohn-Sham and
overlap matrices as `i j value` lines (1-based, Hartree, full matrix), read with the CP2K
importer's `read_triplets`. Periodic cells are Gamma-point runs, so H and S are Gamma-folded
(sum over images), unless `images=True`: then a k-point run (Gamma only, or a Monkhorst-Pack
mesh) writes one matrix per lattice image and `record` stores real per-image blocks H(R), S(R)
(zoo.data.engines.cp2k_images). Molecules (pbc all False) sit in a cubic box with vacuum and a
non-periodic (Martyna-Tuckerman) Poisson solver.

Orbital order: per atom, shells as BASIS_MOLOPT lists them (set by set, l ascending within a set),
m = -l..l (p = py, pz, px; CP2K's own AO labels): the "cp2k" convention row and the
"szv-molopt-sr" / "dzvp-molopt-sr" basis tables, checked against the data files on every run
and by rotation in tests/test_engine_cp2k.py. Threads: OMP_NUM_THREADS of the environment.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from ase.data import chemical_symbols

from zoo.data.engines.base import Engine, EngineError, EngineOutput
from zoo.data.engines.cp2k_images import fold_images, images_to_record, wrapped_positions
from zoo.data.format import Record, Structure
from zoo.errors import BasisError, DataError

BINARIES = ("cp2k.psmp", "cp2k.ssmp", "cp2k")
_BASES = {"szv-molopt-sr": "SZV-MOLOPT-SR-GTH", "dzvp-molopt-sr": "DZVP-MOLOPT-SR-GTH"}
BASIS_FILE = "BASIS_MOLOPT"
POTENTIAL_FILE = "GTH_POTENTIALS"
PROJECT = "zoo"
TAIL_LINES = 25  # lines of CP2K's output kept in error messages
POLL_S = 0.2  # how often a running CP2K is checked (exit, timeout, peak memory)


def find_binary() -> str | None:
    """Path of the CP2K binary: $ZOO_CP2K if set (a path or a name on PATH), else the first of
    BINARIES on PATH; None when there is none."""
    forced = os.environ.get("ZOO_CP2K")
    if forced:
        return shutil.which(forced)
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


@lru_cache(maxsize=8)
def code_version(binary: str) -> tuple[str, Path | None]:
    """('2023.1 (git:b888bd8)', compiled-in data directory) from `binary --version`."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError(f"cannot run {binary} --version ({exc})") from None
    ver = re.search(r"CP2K version\s+(\S+)", out)
    rev = re.search(r"Source code revision\s+(\S+)", out)
    data = re.search(r'__DATA_DIR="([^"]+)"', out.replace("\n ", "").replace("\n", ""))
    if ver is None:
        raise EngineError(f"{binary} --version does not look like CP2K: {out.strip()[-300:]!r}")
    text = ver.group(1) + (f" ({rev.group(1)})" if rev else "")
    return text, Path(data.group(1)) if data else None


def data_dir(binary: str) -> Path:
    """CP2K's data directory: $CP2K_DATA_DIR, else the binary's compiled-in one, else the usual
    install places; the one that holds BASIS_MOLOPT and GTH_POTENTIALS."""
    compiled = code_version(binary)[1]
    candidates = [os.environ.get("CP2K_DATA_DIR"), compiled, Path(binary).resolve().parent.parent / "share" / "cp2k",
                  "/usr/share/cp2k", "/usr/local/share/cp2k"]
    for c in candidates:
        if c and (Path(c) / BASIS_FILE).is_file() and (Path(c) / POTENTIAL_FILE).is_file():
            return Path(c)
    raise EngineError(f"no CP2K data directory with {BASIS_FILE} and {POTENTIAL_FILE} found (tried "
                      f"{', '.join(str(c) for c in candidates if c)}); set CP2K_DATA_DIR")


def _entries(path: Path) -> list[list[str]]:
    """Non-comment lines of a CP2K data file, split into tokens."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise EngineError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return [ln.split("#", 1)[0].split() for ln in text.splitlines() if ln.split("#", 1)[0].strip()]


@lru_cache(maxsize=64)
def basis_shells(path: Path, symbol: str, name: str) -> tuple[tuple[int, ...], int | None]:
    """(shell l's in CP2K's order, valence charge q from a '-qN' alias or None) of basis `name`
    for `symbol` in the basis file. Order: set by set; within a set l = lmin..lmax, each l
    repeated nshell(l) times."""
    lines = _entries(path)
    for k, tok in enumerate(lines):
        if tok[0].lower() == symbol.lower() and name.upper() in (t.upper() for t in tok[1:]):
            q = next((int(m.group(1)) for t in tok[1:] if (m := re.fullmatch(re.escape(name) + r"-q(\d+)", t, re.I))),
                     None)
            try:
                nset, row, shells = int(lines[k + 1][0]), k + 2, []
                for _ in range(nset):
                    _n, lmin, lmax, nexp, *nshell = (int(x) for x in lines[row])
                    if len(nshell) != lmax - lmin + 1:
                        raise ValueError(f"set line {lines[row]} lists {len(nshell)} shell counts for l={lmin}..{lmax}")
                    for l, cnt in zip(range(lmin, lmax + 1), nshell):
                        shells += [l] * cnt
                    row += 1 + nexp
            except (IndexError, ValueError) as exc:
                raise EngineError(f"{path}: malformed basis {name} for {symbol} ({exc})") from None
            return tuple(shells), q
    raise EngineError(f"{path}: no basis {name} for element {symbol}")


@lru_cache(maxsize=64)
def potential_charge(path: Path, symbol: str, name: str) -> int:
    """Valence charge of GTH potential `name` (e.g. GTH-PBE-q12) for `symbol`: the sum of the
    electron counts on the line after its header."""
    lines = _entries(path)
    for k, tok in enumerate(lines):
        if tok[0].lower() == symbol.lower() and name.upper() in (t.upper() for t in tok[1:]):
            try:
                return sum(int(x) for x in lines[k + 1])
            except (IndexError, ValueError) as exc:
                raise EngineError(f"{path}: malformed potential {name} for {symbol} ({exc})") from None
    raise EngineError(f"{path}: no potential {name} for element {symbol}")


class CP2KEngine(Engine):
    """Kohn-Sham DFT with CP2K/Quickstep (GPW).

    Options: `basis` ("szv-molopt-sr" or "dzvp-molopt-sr"), `cutoff_ry` / `rel_cutoff_ry` (plane-wave
    grid, Rydberg), `eps_scf`, `max_scf`, `smearing` (Fermi-Dirac with ADDED_MOS; None = on for
    periodic cells, off for molecules), `temperature_k`, `added_mos` (None: max(10, 20 % of the
    occupied orbitals)), `plus_u` ({element: U_eff in eV} on the element's highest-l shell, Mulliken
    projection), `vacuum` (A around a molecule), `timeout_s`, `workdir` (keep the run's files there),
    `images` (periodic cells: a k-point run whose per-image matrices `record` stores as explicit
    edges (i, j, R); `compute` returns their sum, the Gamma-point matrices) and `kpoints` (with
    `images`: a Monkhorst-Pack mesh (n1, n2, n3) for the SCF; None = the Gamma point only).
    """

    name = "cp2k"
    convention = "cp2k"
    basis_name = "szv-molopt-sr"

    def __init__(self, basis: str = "szv-molopt-sr", cutoff_ry: float = 400.0, rel_cutoff_ry: float = 60.0,
                 eps_scf: float = 1e-6, max_scf: int = 200, smearing: bool | None = None, temperature_k: float = 1000.0,
                 added_mos: int | None = None, plus_u: dict[str, float] | None = None, vacuum: float = 5.0,
                 eps_default: float = 1e-10, timeout_s: float | None = None, workdir: str | os.PathLike | None = None,
                 images: bool = False, kpoints: Sequence[int] | None = None):
        key = basis.lower()
        if key not in _BASES:
            raise EngineError(f"cp2k engine: unknown basis {basis!r}; known: {', '.join(_BASES)}")
        self.basis_name = key
        self.cp2k_basis = _BASES[key]
        self.cutoff_ry, self.rel_cutoff_ry = float(cutoff_ry), float(rel_cutoff_ry)
        self.eps_scf, self.max_scf, self.eps_default = float(eps_scf), int(max_scf), float(eps_default)
        self.smearing, self.temperature_k = smearing, float(temperature_k)
        self.added_mos = None if added_mos is None else int(added_mos)
        self.plus_u = {str(k): float(v) for k, v in (plus_u or {}).items()}
        bad = sorted(k for k in self.plus_u if k not in chemical_symbols[1:])
        if bad:
            raise EngineError(f"cp2k engine: plus_u names unknown elements {bad} (use symbols like 'Hf')")
        self.vacuum = float(vacuum)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.workdir = None if workdir is None else Path(workdir)
        self.images = bool(images)
        self.kpoints = None if kpoints is None else tuple(int(k) for k in kpoints)
        if self.kpoints is not None and (not self.images or len(self.kpoints) != 3 or min(self.kpoints) < 1):
            raise EngineError(f"cp2k engine: kpoints={kpoints!r} needs images=True and three positive integers")
        self.binary = find_binary()
        if self.binary is None:
            forced = os.environ.get("ZOO_CP2K")
            where = f"ZOO_CP2K={forced} is not an executable" if forced else f"none of {', '.join(BINARIES)} is on PATH"
            raise EngineError(f"cp2k engine: no CP2K binary ({where}); install CP2K (e.g. Debian's `cp2k`)")
        self.version, _ = code_version(self.binary)
        self.data = data_dir(self.binary)

    @classmethod
    def available(cls) -> bool:
        return find_binary() is not None

    def level_of_theory(self) -> dict:
        smear = {"method": "Fermi-Dirac", "electronic_temperature_K": self.temperature_k,
                 "added_mos": self.added_mos if self.added_mos is not None else "max(10, 20% of occupied)"}
        when = {None: "periodic cells only", True: "always", False: "never"}[self.smearing]
        return {"code": "CP2K", "code_version": self.version, "binary": self.binary,
                "method": "Kohn-Sham DFT, Quickstep GPW" + (" +U (Mulliken)" if self.plus_u else ""), "xc": "PBE",
                "basis": self.cp2k_basis, "basis_file": str(self.data / BASIS_FILE), "potential": "GTH-PBE",
                "potential_file": str(self.data / POTENTIAL_FILE), "cutoff_Ry": self.cutoff_ry,
                "rel_cutoff_Ry": self.rel_cutoff_ry, "eps_scf": self.eps_scf, "max_scf": self.max_scf,
                "eps_default": self.eps_default,
                **self._image_theory(),
                "smearing": {**smear, "applied": when} if self.smearing is not False else "none",
                "plus_u_eV": dict(self.plus_u), "molecules": f"non-periodic (MT Poisson), cubic box, {self.vacuum} A vacuum",
                "charge": 0, "spin": "restricted"}

    def _image_theory(self) -> dict:
        """The card entries that say how periodic matrices are sampled (unchanged keys for Gamma
        runs, so existing recipe hashes stay)."""
        if not self.images:
            return {"k_points": "Gamma", "hamiltonian": "converged Kohn-Sham matrix (&KS_CSR_WRITE), Gamma point"}
        mesh = "Gamma" if self.kpoints is None else "Monkhorst-Pack {}x{}x{}".format(*self.kpoints)
        return {"k_points": f"{mesh} (CP2K k-point code)",
                "hamiltonian": "converged Kohn-Sham matrix per lattice image H(R), S(R) (&KS_CSR_WRITE REAL_SPACE); "
                               "molecules as without images"}

    def _per_image(self, structure: Structure) -> bool:
        return self.images and bool(np.asarray(structure.pbc).all())

    # -- input ---------------------------------------------------------------------------------

    def _kinds(self, structure: Structure) -> tuple[dict[str, tuple[str, int]], float]:
        """{symbol: (potential name, q)} after checking every element against the data files and
        the basis table; and the total valence electron count."""
        bfile, pfile = self.data / BASIS_FILE, self.data / POTENTIAL_FILE
        table = self.basis()
        kinds: dict[str, tuple[str, int]] = {}
        for z in sorted(set(int(z) for z in structure.numbers)):
            sym = chemical_symbols[z]
            shells, q = basis_shells(bfile, sym, self.cp2k_basis)
            try:
                want = table.element_shells(z)
            except BasisError as exc:
                raise EngineError(f"cp2k engine: {exc}; add it to zoo/physics/basis.py") from None
            if shells != want:
                raise EngineError(f"{bfile}: {sym} {self.cp2k_basis} has shells {list(shells)}, the basis table "
                                  f"{table.name!r} says {list(want)}")
            if q is None:
                raise EngineError(f"{bfile}: {sym} {self.cp2k_basis} has no '-qN' alias naming its valence charge")
            pot = f"GTH-PBE-q{q}"
            if potential_charge(pfile, sym, pot) != q:
                raise EngineError(f"{pfile}: {sym} {pot} does not hold {q} valence electrons")
            kinds[sym] = (pot, q)
        n_el = float(sum(kinds[chemical_symbols[int(z)]][1] for z in structure.numbers))
        return kinds, n_el

    def _smear(self, structure: Structure) -> bool:
        return bool(structure.pbc.any()) if self.smearing is None else bool(self.smearing)

    def input_text(self, structure: Structure) -> str:
        """The CP2K input for one structure (single point, CSR matrices printed)."""
        pbc = np.asarray(structure.pbc, dtype=bool)
        if pbc.any() and not pbc.all():
            raise EngineError(f"cp2k engine: periodic in some directions only (pbc {pbc.tolist()}) is not supported")
        kinds, n_el = self._kinds(structure)
        kpoints, real_space = "", ""
        if pbc.all():
            cell, pos, periodic = np.asarray(structure.cell, float), np.asarray(structure.positions, float), "XYZ"
            poisson = "    &POISSON\n      PERIODIC XYZ\n    &END POISSON\n"
            if self.images:
                pos = wrapped_positions(structure)[0]  # CP2K numbers images from its wrapped positions
                # Gamma only: real wavefunctions (the k-point code's default is complex, ~4x the diagonalization)
                scheme = ("GAMMA\n      WAVEFUNCTIONS REAL" if self.kpoints is None
                          else "MONKHORST-PACK {} {} {}".format(*self.kpoints))
                kpoints = f"    &KPOINTS\n      SCHEME {scheme}\n    &END KPOINTS\n"
                real_space = "        REAL_SPACE T\n"
        else:
            # a cubic box whose edge depends only on the molecule's radius: rotation-invariant
            centre = structure.positions.mean(axis=0)
            radius = float(np.linalg.norm(structure.positions - centre, axis=1).max())
            edge = 2.0 * (radius + self.vacuum)
            cell, periodic = np.eye(3) * edge, "NONE"
            pos = structure.positions - centre + edge / 2
            poisson = "    &POISSON\n      PERIODIC NONE\n      PSOLVER MT\n    &END POISSON\n"
        scf = [f"      EPS_SCF {self.eps_scf:.3e}", f"      MAX_SCF {self.max_scf}", "      SCF_GUESS ATOMIC"]
        if self._smear(structure):
            n_orb = int(self.basis().norb_per_atom(structure.numbers).sum())
            n_occ = int(np.ceil(n_el / 2))
            added = self.added_mos if self.added_mos is not None else max(10, n_occ // 5)
            added = max(1, min(added, n_orb - n_occ))
            scf += [f"      ADDED_MOS {added}", "      &SMEAR ON", "        METHOD FERMI_DIRAC",
                    f"        ELECTRONIC_TEMPERATURE [K] {self.temperature_k}", "      &END SMEAR"]
        scf += ["      &MIXING", "        METHOD BROYDEN_MIXING", "        ALPHA 0.3", "        NBROYDEN 8",
                "      &END MIXING"]
        kind_lines = []
        for sym, (pot, _q) in kinds.items():
            kind_lines += [f"    &KIND {sym}", f"      BASIS_SET {self.cp2k_basis}", f"      POTENTIAL {pot}"]
            if sym in self.plus_u:
                l_max = max(self.basis().element_shells(chemical_symbols.index(sym)))
                kind_lines += ["      &DFT_PLUS_U", f"        L {l_max}", f"        U_MINUS_J [eV] {self.plus_u[sym]}",
                               "      &END DFT_PLUS_U"]
            kind_lines.append("    &END KIND")
        coords = "\n".join(f"      {chemical_symbols[int(z)]} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}"
                           for z, p in zip(structure.numbers, pos))
        vecs = "\n".join(f"      {ax} {v[0]:.10f} {v[1]:.10f} {v[2]:.10f}" for ax, v in zip("ABC", cell))
        plus_u = "    PLUS_U_METHOD MULLIKEN\n" if self.plus_u else ""
        return (
            f"&GLOBAL\n  PROJECT {PROJECT}\n  RUN_TYPE ENERGY\n  PRINT_LEVEL LOW\n&END GLOBAL\n"
            f"&FORCE_EVAL\n  METHOD Quickstep\n  &DFT\n"
            f"    BASIS_SET_FILE_NAME {self.data / BASIS_FILE}\n    POTENTIAL_FILE_NAME {self.data / POTENTIAL_FILE}\n"
            f"    CHARGE 0\n{plus_u}"
            f"    &MGRID\n      CUTOFF {self.cutoff_ry}\n      REL_CUTOFF {self.rel_cutoff_ry}\n    &END MGRID\n"
            f"    &QS\n      EPS_DEFAULT {self.eps_default:.3e}\n    &END QS\n{poisson}{kpoints}"
            "    &SCF\n" + "\n".join(scf) + "\n    &END SCF\n"
            "    &XC\n      &XC_FUNCTIONAL PBE\n      &END XC_FUNCTIONAL\n    &END XC\n"
            f"    &PRINT\n      &KS_CSR_WRITE\n{real_space}      &END KS_CSR_WRITE\n"
            f"      &S_CSR_WRITE\n{real_space}      &END S_CSR_WRITE\n    &END PRINT\n  &END DFT\n"
            f"  &SUBSYS\n    &CELL\n{vecs}\n      PERIODIC {periodic}\n    &END CELL\n"
            f"    &COORD\n{coords}\n    &END COORD\n" + "\n".join(kind_lines) + "\n  &END SUBSYS\n&END FORCE_EVAL\n")

    # -- running ---------------------------------------------------------------------------------

    @contextmanager
    def _work(self) -> Iterator[Path]:
        """The run's directory: `workdir` (kept) or a temporary one."""
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            yield self.workdir
            return
        with tempfile.TemporaryDirectory(prefix="zoo-cp2k-") as tmp:
            yield Path(tmp)

    def compute(self, structure: Structure) -> EngineOutput:
        """Dense H and S in CP2K's order: the Gamma-point run's, or with `images` the sum of the
        per-image matrices (the same Gamma-point matrices, from the k-point code)."""
        n_orb = int(self.basis().norb_per_atom(structure.numbers).sum())
        with self._work() as work:
            log, n_el, meta = self._execute(structure, work)
            if self._per_image(structure):
                h, s = fold_images(work, PROJECT, log, n_orb)
            else:
                out_path = work / f"{PROJECT}.out"
                h = self._read_csr(work, "KS", n_orb, out_path, log)
                s = self._read_csr(work, "S", n_orb, out_path, log)
        return EngineOutput(h, s, n_el, meta)

    def record(self, structure: Structure, cutoff: float, name: str) -> Record:
        """As `Engine.record`; with `images` on a periodic cell, real per-image blocks: one edge per
        (i, j, R) within `cutoff` (image convention "explicit", any cell width)."""
        if not self._per_image(structure):
            return super().record(structure, cutoff, name)
        from zoo.data.physcheck import check_record

        t0 = time.perf_counter()
        with self._work() as work:
            log, n_el, meta = self._execute(structure, work)
            rec = images_to_record(structure, work, PROJECT, log, self.basis(), self.convention,
                                   wrapped_positions(structure)[1], cutoff, name, n_electrons=n_el,
                                   meta={"engine": self.name, **meta})
        rec.meta["wall_s"] = round(time.perf_counter() - t0, 3)
        report = check_record(rec, overlap=False)  # M_R = M_{-R}^T holds exactly in CP2K's output
        if not report.ok:
            raise EngineError(f"CP2K's per-image matrices of {name!r} ({structure.n_atoms} atoms) are not "
                              f"symmetric: {report.summary()}")
        return rec

    def _execute(self, structure: Structure, work: Path) -> tuple[str, float, dict]:
        """Run CP2K on `structure` in `work`: (its output, the valence electron count, what the run
        measured). A failed, killed, timed-out or unconverged run is an EngineError."""
        text = self.input_text(structure)
        _, n_el = self._kinds(structure)
        inp, out_path, console_path = work / f"{PROJECT}.inp", work / f"{PROJECT}.out", work / f"{PROJECT}.console"
        for old in [out_path, *work.glob(f"{PROJECT}-*_SPIN_*.csr")]:
            old.unlink(missing_ok=True)  # a kept workdir must not hand back a previous run's results (CP2K appends)
        inp.write_text(text)
        t0 = time.perf_counter()
        with open(console_path, "w") as console:
            try:
                # same process group as zoo: Ctrl-C reaches CP2K too. Its MPI singleton daemon (orted)
                # exits with it, so killing the binary ends the whole run.
                proc = subprocess.Popen([self.binary, "-i", inp.name, "-o", out_path.name], cwd=work,
                                        stdout=console, stderr=subprocess.STDOUT)
            except OSError as exc:
                raise EngineError(f"cannot start {self.binary} ({exc})") from None
            usage = _wait(proc, self.timeout_s)
        wall = time.perf_counter() - t0
        log = out_path.read_text(errors="replace") if out_path.is_file() else ""
        status = usage.returncode
        if usage.timed_out:
            raise EngineError(f"CP2K exceeded the {self.timeout_s} s timeout on {structure.n_atoms} atoms "
                              f"({out_path}):\n{_tail(out_path)}")
        if status != 0:
            how = f"exited with status {status}"
            if status < 0:
                sig = signal.Signals(-status).name if -status in signal.valid_signals() else str(-status)
                how = f"was killed by signal {-status} ({sig}{', out of memory?' if -status == signal.SIGKILL else ''})"
            raise EngineError(f"CP2K {how} on {structure.n_atoms} atoms ({out_path}):\n"
                              f"{_tail(out_path, log + console_path.read_text(errors='replace'))}")
        if "SCF run NOT converged" in log or not re.search(r"SCF run converged in\s+\d+ steps", log):
            raise EngineError(f"CP2K SCF not converged in {self.max_scf} steps for {structure.n_atoms} atoms "
                              f"({out_path}); raise max_scf or check the structure:\n{_tail(out_path, log)}")
        found = re.search(r"Number of electrons:\s+(\d+)", log)
        if found is None or int(found.group(1)) != int(n_el):
            raise EngineError(f"CP2K reports {found.group(1) if found else 'no'} electrons, the GTH valence charges "
                              f"give {n_el:g} ({out_path}):\n{_tail(out_path, log)}")
        steps = re.search(r"SCF run converged in\s+(\d+) steps", log)
        energy = re.search(r"ENERGY\| Total FORCE_EVAL \( QS \) energy[^:]*:\s+(\S+)", log)
        meta = {"cp2k_wall_s": round(wall, 2), "cp2k_cpu_s": round(usage.cpu_s, 2),
                "cp2k_peak_rss_mib": round(usage.peak_rss_mib, 1), "scf_steps": int(steps.group(1)),
                "smearing": self._smear(structure), "omp_threads": os.environ.get("OMP_NUM_THREADS", "default")}
        if energy:
            meta["energy_hartree"] = float(energy.group(1))
        fermi = re.findall(r"Fermi energy:\s+(\S+)", log)
        if fermi:
            meta["fermi_energy_hartree"] = float(fermi[-1])
        return log, n_el, meta

    def _read_csr(self, work: Path, which: str, n_orb: int, out_path: Path, log: str) -> np.ndarray:
        """Dense symmetric matrix from CP2K's `<project>-<which>_SPIN_1-..csr` file."""
        from zoo.data.importers.cp2k import read_triplets

        files = sorted(work.glob(f"{PROJECT}-{which}_SPIN_1*.csr"))
        if len(files) != 1:
            raise EngineError(f"CP2K wrote {len(files)} {which} CSR files in {work} (expected 1 "
                              f"{PROJECT}-{which}_SPIN_1-1_0.csr):\n{_tail(out_path, log)}")
        try:
            r, c, v = read_triplets(files[0], n_orb, index_base=1)
        except DataError as exc:
            raise EngineError(f"reading CP2K's matrix: {exc}") from None
        m = np.zeros((n_orb, n_orb))
        m[r, c] = v
        asym = float(np.abs(m - m.T).max())
        if asym > 1e-6 * max(1.0, float(np.abs(m).max())):  # CP2K itself leaves ~1e-8
            raise EngineError(f"{files[0]}: matrix not symmetric (max |M - M^T| = {asym:.2e})")
        return 0.5 * (m + m.T)


@dataclass
class RunUsage:
    """What one CP2K process used: exit code, CPU seconds, peak resident memory, whether it timed out."""

    returncode: int
    cpu_s: float
    peak_rss_mib: float
    timed_out: bool


def _peak_rss_kib(pid: int) -> int:
    """VmHWM of a running process (kiB), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")), 0)
    except (OSError, ValueError, IndexError):
        return 0


def _wait(proc: subprocess.Popen, timeout: float | None, poll_s: float = POLL_S) -> RunUsage:
    """Wait for `proc`, killing it past `timeout` or on Ctrl-C. Reaped with os.wait4 for its CPU
    time; its peak memory is VmHWM sampled every `poll_s` (wait4's ru_maxrss would report the
    Python parent's RSS: a forked child keeps that high-water mark across exec)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    peak, timed_out = 0, False
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _peak_rss_kib(proc.pid))
            if deadline is not None and time.monotonic() > deadline and not timed_out:
                timed_out = True
                proc.kill()
            time.sleep(poll_s)
    except BaseException:  # interrupted: never leave CP2K running behind us
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return RunUsage(proc.returncode, usage.ru_utime + usage.ru_stime, peak / 1024, timed_out)


def _tail(path: Path, text: str | None = None) -> str:
    """The last TAIL_LINES lines of CP2K's report, before its statistics and timing tables
    (so an SCF failure shows the SCF steps and the warning, an abort its message box)."""
    if text is None:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return f"(no output file {path})"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    stats = next((k for k, ln in enumerate(lines) if "DBCSR STATISTICS" in ln), None)
    if stats is not None:
        lines = lines[:max(stats - 2, 0)]
    return "\n".join(lines[-TAIL_LINES:]) if lines else "(CP2K wrote no output)"
