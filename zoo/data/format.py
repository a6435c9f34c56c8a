"""The one on-disk dataset format (schema version 1). See docs/dataset-format.md.

A dataset is a directory::

    dataset.json            the card: name, level of theory, basis, cutoff, units, splits,
                            structures (file, counts, sha256), provenance, schema_version
    structures/<name>.h5    one HDF5 file per structure

Each structure file holds (internal orbital convention, Hartree, Angstrom)::

    attrs: schema_version, name, spinful, n_electrons (or absent), meta (JSON string)
    numbers [N] int64, positions [N, 3] f8, cell [3, 3] f8 (rows are lattice vectors), pbc [3] bool
    edge_index [E, 2] int64 (i, j), edge_shift [E, 3] int64 (image of j, in lattice vectors)
    H/onsite  flat, the N blocks (n_i x n_i) row-major, concatenated in atom order
    H/offsite flat, the E blocks (n_i x n_j) row-major, concatenated in edge order
    S/onsite, S/offsite  (optional, same layout)

Spinful data store complex (2n_i x 2n_j) blocks laid out [[uu, ud], [du, dd]].
Nothing is dense. Reading is lazy (one structure per `Dataset.read`); writing is atomic
(temp file + rename, and a staging directory renamed into place by `DatasetWriter.finalize`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import h5py
import numpy as np

from zoo.errors import BasisError, DataError
from zoo.physics.assembly import assemble, block_offsets, pad_blocks
from zoo.physics.basis import BasisSet, OrbitalLayout
from zoo.physics import spectra

SCHEMA_VERSION = 1
CARD_NAME = "dataset.json"
REQUIRED_SPLITS = ("train", "val", "test")
IMAGE_CONVENTIONS = ("explicit", "gamma-folded")


@dataclass
class Structure:
    """Atoms only: atomic numbers, positions (A), cell (3x3, rows are lattice vectors), pbc."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()

    @classmethod
    def from_ase(cls, atoms) -> "Structure":
        return cls(atoms.numbers, atoms.positions, np.asarray(atoms.cell), atoms.pbc)

    def to_ase(self):
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.size)


@dataclass
class Record:
    """One structure with its Hamiltonian (and overlap) as ragged flat blocks. See module doc."""

    name: str
    structure: Structure
    basis: BasisSet
    edge_index: np.ndarray
    edge_shift: np.ndarray
    h_onsite: np.ndarray
    h_offsite: np.ndarray
    s_onsite: np.ndarray | None = None
    s_offsite: np.ndarray | None = None
    spinful: bool = False
    n_electrons: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.edge_index = np.asarray(self.edge_index, dtype=np.int64).reshape(-1, 2)
        self.edge_shift = np.asarray(self.edge_shift, dtype=np.int64).reshape(-1, 3)
        for k in ("h_onsite", "h_offsite", "s_onsite", "s_offsite"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, np.asarray(v).reshape(-1))

    # -- plain views ---------------------------------------------------------------------
    @property
    def numbers(self) -> np.ndarray:
        return self.structure.numbers

    @property
    def positions(self) -> np.ndarray:
        return self.structure.positions

    @property
    def cell(self) -> np.ndarray:
        return self.structure.cell

    @property
    def pbc(self) -> np.ndarray:
        return self.structure.pbc

    @property
    def n_atoms(self) -> int:
        return self.structure.n_atoms

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[0])

    @property
    def has_overlap(self) -> bool:
        return self.s_onsite is not None

    @property
    def norb(self) -> np.ndarray:
        """Orbitals per atom (doubled for spinful data)."""
        return self.basis.norb_per_atom(self.numbers) * (2 if self.spinful else 1)

    def _offsets(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.norb
        return block_offsets(n, n), block_offsets(n[self.edge_index[:, 0]], n[self.edge_index[:, 1]])

    def _arrays(self, which: str):
        which = which.upper()
        if which == "H":
            return self.h_onsite, self.h_offsite
        if which == "S":
            if self.s_onsite is None:
                raise DataError(f"record {self.name!r} has no overlap matrix S")
            return self.s_onsite, self.s_offsite
        raise ValueError(f"which must be 'H' or 'S', got {which!r}")

    def onsite_blocks(self, which: str = "H") -> list[np.ndarray]:
        on, _ = self._arrays(which)
        n = self.norb
        o, _ = self._offsets()
        return [on[o[i]:o[i + 1]].reshape(n[i], n[i]) for i in range(self.n_atoms)]

    def edge_blocks(self, which: str = "H") -> list[np.ndarray]:
        _, off = self._arrays(which)
        n = self.norb
        _, o = self._offsets()
        ei = self.edge_index
        return [off[o[e]:o[e + 1]].reshape(n[ei[e, 0]], n[ei[e, 1]]) for e in range(self.n_edges)]

    def padded(self, layout: OrbitalLayout, which: str = "H") -> tuple[np.ndarray, np.ndarray]:
        """(node [N, m, m], edge [E, m, m]) in the slot layout, zeros in padding.

        m = n_max for spinless records; for spinful ones m = 2 n_max, complex, each spin quadrant
        in the spinless slot layout (docs/adr/0006, `assembly.spinful_index`).
        """
        on, off = self._arrays(which)
        z = self.numbers
        ei = self.edge_index
        sp = bool(self.spinful)
        return (pad_blocks(on, layout.index, z, z, layout.n_max, spinful=sp),
                pad_blocks(off, layout.index, z[ei[:, 0]], z[ei[:, 1]], layout.n_max, spinful=sp))

    # -- assembly and spectra ----------------------------------------------------------
    def matrix(self, which: str = "H", k: Sequence[float] | None = None, hermitize: bool = False):
        """scipy.sparse CSR matrix at k (reduced coordinates; None = Gamma)."""
        on, off = self._arrays(which)
        return assemble(self.norb, on, self.edge_index, self.edge_shift, off, k=k, hermitize=hermitize)

    def eigvalsh(self, k: Sequence[float] | None = None) -> np.ndarray:
        """Eigenvalues (Hartree) of the hermitized H(k), with S(k) where the record has it."""
        h = self.matrix("H", k, hermitize=True)
        s = self.matrix("S", k, hermitize=True) if self.has_overlap else None
        return spectra.eigh(h, s)

    def with_blocks(self, h_onsite: np.ndarray, h_offsite: np.ndarray, name: str | None = None) -> "Record":
        """Copy with other H blocks (e.g. a model's prediction) and the same S and graph."""
        return Record(name or self.name, self.structure, self.basis, self.edge_index, self.edge_shift,
                      h_onsite, h_offsite, self.s_onsite, self.s_offsite, self.spinful, self.n_electrons,
                      dict(self.meta))


# -- HDF5 I/O ------------------------------------------------------------------------------

def atomic_write(path: Path, writer, suffix: str = "") -> None:
    """Call writer(tmp_path) then rename tmp onto `path`; the temp file is removed on failure.
    A full disk (or quota) becomes a DataError naming the file; the old `path`, if any, is intact."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    try:
        writer(Path(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            _raise_if_disk_full(exc, path)
        raise


def _raise_if_disk_full(exc: OSError, path: Path) -> None:
    # h5py reports ENOSPC inside its message with errno unset, hence the text check
    if exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc) \
            or "Disk quota exceeded" in str(exc):
        raise DataError("disk full (or over quota) while writing this file; nothing half-written was kept. "
                        "Free space and re-run: finished files are kept and the run resumes", path) from exc


def write_record(path: str | Path, rec: Record) -> None:
    """Write one structure file atomically (temp file in the same directory, then rename).

    Free space is checked first: HDF5 running into a full disk can crash the process on close
    (seen with h5py 3.16, a segfault) instead of raising, so it must not get that far."""
    path = Path(path)
    arrays = (rec.numbers, rec.positions, rec.edge_index, rec.edge_shift, rec.h_onsite, rec.h_offsite,
              rec.s_onsite, rec.s_offsite)
    need = int(1.05 * sum(a.nbytes for a in arrays if a is not None)) + 256 * 1024  # data + HDF5 metadata
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise DataError(f"disk full: {free / 2**20:.1f} MiB free, this structure needs ~{need / 2**20:.1f} MiB; "
                        f"nothing was written. Free space and re-run: finished files are kept and the run resumes", path)

    def _write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["name"] = rec.name
            f.attrs["spinful"] = bool(rec.spinful)
            f.attrs["basis"] = json.dumps(rec.basis.to_json())
            if rec.n_electrons is not None:
                f.attrs["n_electrons"] = float(rec.n_electrons)
            f.attrs["meta"] = json.dumps(rec.meta, default=str)
            f["numbers"] = rec.numbers
            f["positions"] = rec.positions
            f["cell"] = rec.cell
            f["pbc"] = rec.pbc
            f["edge_index"] = rec.edge_index
            f["edge_shift"] = rec.edge_shift
            f["H/onsite"] = rec.h_onsite
            f["H/offsite"] = rec.h_offsite
            if rec.s_onsite is not None:
                f["S/onsite"] = rec.s_onsite
                f["S/offsite"] = rec.s_offsite

    atomic_write(Path(path), _write)


def read_record(path: str | Path, basis: BasisSet | None = None) -> Record:
    """Read one structure file; every fault becomes a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("structure file does not exist", path)
    try:
        with h5py.File(path, "r") as f:
            version = int(f.attrs.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise DataError(f"schema version {version} is not supported (this zoo reads {SCHEMA_VERSION})", path)
            missing = [k for k in ("numbers", "positions", "cell", "pbc", "edge_index", "edge_shift", "H/onsite", "H/offsite") if k not in f]
            if missing:
                raise DataError(f"missing datasets {missing}", path)
            rec_basis = basis or BasisSet.from_json(json.loads(f.attrs["basis"]))
            has_s = "S" in f

            def num(key: str) -> np.ndarray:
                # a string/object/compound array would pass the reshape and fail deep inside numpy later
                a = np.asarray(f[key][()])
                if a.dtype.kind not in "biufc":
                    raise DataError(f"dataset {key!r} holds {a.dtype} values, not numbers", path)
                return a

            rec = Record(
                name=str(f.attrs.get("name", path.stem)),
                structure=Structure(num("numbers"), num("positions"), num("cell"), num("pbc")),
                basis=rec_basis,
                edge_index=num("edge_index"),
                edge_shift=num("edge_shift"),
                h_onsite=num("H/onsite"),
                h_offsite=num("H/offsite"),
                s_onsite=num("S/onsite") if has_s else None,
                s_offsite=num("S/offsite") if has_s else None,
                spinful=bool(f.attrs.get("spinful", False)),
                n_electrons=float(f.attrs["n_electrons"]) if "n_electrons" in f.attrs else None,
                meta=json.loads(f.attrs.get("meta", "{}")),
            )
    except DataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, OverflowError, json.JSONDecodeError,
            BasisError) as exc:  # h5py raises RuntimeError on corrupt B-trees and heaps
        raise DataError(f"unreadable structure file ({type(exc).__name__}: {exc})", path) from None
    return rec


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- the card and the dataset --------------------------------------------------------------

@dataclass
class DatasetCard:
    name: str
    level_of_theory: dict
    basis: BasisSet
    cutoff: float
    splits: dict[str, list[str]]
    structures: dict[str, dict]
    elements: list[int]
    image_convention: str = "explicit"
    has_overlap: bool = False
    spinful: bool = False
    provenance: dict = field(default_factory=dict)
    description: str = ""
    schema_version: int = SCHEMA_VERSION
    units: dict = field(default_factory=lambda: {"energy": "hartree", "length": "angstrom"})
    convention: str = "internal"

    def to_json(self) -> dict:
        return {
            "schema_version": self.schema_version, "name": self.name, "description": self.description,
            "level_of_theory": self.level_of_theory, "basis": self.basis.to_json(), "convention": self.convention,
            "units": self.units, "cutoff": self.cutoff, "image_convention": self.image_convention,
            "has_overlap": self.has_overlap, "spinful": self.spinful, "elements": list(self.elements),
            "splits": self.splits, "structures": self.structures, "provenance": self.provenance,
        }

    def hash(self) -> str:
        """Short content hash of the card (which includes every structure file's sha256)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:12]

    def recipe_hash(self) -> str:
        """Short hash of how the dataset was *made*, not of one build of it (see `recipe_hash`)."""
        return recipe_hash(self)

    def layout(self) -> OrbitalLayout:
        return OrbitalLayout(self.basis, self.elements)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], path: Path | None = None) -> "DatasetCard":
        if not isinstance(obj, Mapping):
            raise DataError("dataset card is not a JSON object", path)
        version = obj.get("schema_version")
        if version != SCHEMA_VERSION:
            raise DataError(f"schema version {version!r} is not supported (this zoo reads {SCHEMA_VERSION})", path)
        required = ("name", "level_of_theory", "basis", "cutoff", "splits", "structures", "elements")
        missing = [k for k in required if k not in obj]
        if missing:
            raise DataError(f"dataset card lacks {missing}", path)
        units = obj.get("units", {})
        if not isinstance(units, Mapping):
            raise DataError(f"units must be a mapping, got {units!r}", path)
        if obj.get("convention", "internal") != "internal" or units.get("energy", "hartree") != "hartree":
            raise DataError("dataset cards must store the internal convention in Hartree/Angstrom", path)
        try:
            card = cls(
                name=str(obj["name"]), level_of_theory=dict(obj["level_of_theory"]),
                basis=BasisSet.from_json(obj["basis"]), cutoff=float(obj["cutoff"]),
                splits={k: list(v) for k, v in dict(obj["splits"]).items()},
                structures={k: dict(v) for k, v in dict(obj["structures"]).items()},
                elements=[int(z) for z in obj["elements"]],
                image_convention=str(obj.get("image_convention", "explicit")),
                has_overlap=bool(obj.get("has_overlap", False)), spinful=bool(obj.get("spinful", False)),
                provenance=dict(obj.get("provenance", {})), description=str(obj.get("description", "")),
            )
        except (TypeError, ValueError, OverflowError, BasisError) as exc:
            raise DataError(f"malformed dataset card ({exc})", path) from None
        card.check(path)
        return card

    def check(self, path: Path | None = None) -> None:
        """Card-level validation: splits present and naming known structures, sane fields."""
        for s, names in self.splits.items():
            if not all(isinstance(n, str) for n in names):
                raise DataError(f"split {s!r} must be a list of structure names", path)
        for n, entry in self.structures.items():
            f = entry.get("file")
            if not isinstance(f, str) or not f or Path(f).is_absolute() or ".." in Path(f).parts:
                raise DataError(f"structure {n!r} needs a 'file' path inside the dataset, got {f!r}", path)
        if not self.elements:
            raise DataError("the card lists no elements", path)
        missing = [s for s in REQUIRED_SPLITS if s not in self.splits]
        if missing:
            raise DataError(f"missing splits {missing} (a dataset needs {list(REQUIRED_SPLITS)})", path)
        for s, names in self.splits.items():
            if not names:
                raise DataError(f"split {s!r} is empty", path)
            unknown = [n for n in names if n not in self.structures]
            if unknown:
                raise DataError(f"split {s!r} names unknown structures {unknown[:5]}", path)
        if self.image_convention not in IMAGE_CONVENTIONS:
            raise DataError(f"image_convention {self.image_convention!r} not in {IMAGE_CONVENTIONS}", path)
        if not self.cutoff > 0:
            raise DataError(f"cutoff must be positive, got {self.cutoff}", path)
        for z in self.elements:
            try:
                self.basis.element_shells(z)
            except BasisError as exc:
                raise DataError(str(exc), path) from None


#: provenance keys that describe the recipe (catalogue entry, size, generation seed, fixture recipe);
#: build costs, hosts, truncation statistics and per-structure timings are properties of one build
RECIPE_PROVENANCE_KEYS = ("catalogue_entry", "size", "generation_seed", "recipe", "structures")


def recipe_hash(card: DatasetCard) -> str:
    """Short hash of what the card says about how the dataset was made.

    Hashed: name, level of theory (engine, its version, method and settings), basis, cutoff,
    image convention, overlap/spin flags, elements, split assignment, and the recipe part of the
    provenance (`RECIPE_PROVENANCE_KEYS`). Not hashed: structure checksums, timings, hosts and
    truncation statistics, which differ between two builds of the same recipe (float noise across
    machines and BLAS builds). Two builds with equal recipe hashes are the same benchmark; their
    card hashes (`DatasetCard.hash`) still tell the builds apart. A card with no recipe in its
    provenance (an import of a user's files) is its data: the structure checksums are hashed too.
    """
    prov = {k: card.provenance[k] for k in RECIPE_PROVENANCE_KEYS if k in card.provenance}
    blob = {"name": card.name, "level_of_theory": card.level_of_theory, "basis": card.basis.to_json(),
            "cutoff": card.cutoff, "image_convention": card.image_convention, "has_overlap": card.has_overlap,
            "spinful": card.spinful, "elements": sorted(card.elements),
            "splits": {k: list(v) for k, v in sorted(card.splits.items())}, "provenance": prov}
    if "catalogue_entry" not in prov and "recipe" not in prov:
        blob["structures"] = card.structures
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Dataset:
    """A dataset directory, opened lazily: the card is read now, structures on `read`."""

    def __init__(self, path: Path, card: DatasetCard, validate: bool = True):
        self.path = Path(path)
        self.card = card
        self.validate = validate

    @classmethod
    def open(cls, path: str | Path, validate: bool = True) -> "Dataset":
        path = Path(path)
        card_path = path / CARD_NAME
        if not path.is_dir():
            raise DataError("dataset directory does not exist", path)
        if not card_path.is_file():
            raise DataError(f"no {CARD_NAME} (not a zoo dataset, or an unfinished build)", path)
        try:
            obj = json.loads(card_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"dataset card is not valid JSON ({exc})", card_path) from None
        return cls(path, DatasetCard.from_json(obj, card_path), validate)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def names(self) -> list[str]:
        return list(self.card.structures)

    def split(self, which: str) -> list[str]:
        if which not in self.card.splits:
            raise DataError(f"no split {which!r} (splits: {sorted(self.card.splits)})", self.path / CARD_NAME)
        return list(self.card.splits[which])

    def layout(self) -> OrbitalLayout:
        return self.card.layout()

    def file_of(self, name: str) -> Path:
        if name not in self.card.structures:
            raise DataError(f"no structure {name!r} in dataset", self.path / CARD_NAME)
        return self.path / self.card.structures[name]["file"]

    def read(self, name: str) -> Record:
        path = self.file_of(name)
        rec = read_record(path, self.card.basis)
        if self.validate:
            from zoo.data.validate import validate_record

            validate_record(rec, path=path, cutoff=self.card.cutoff, image_convention=self.card.image_convention)
        return rec

    def records(self, split: str | None = None) -> Iterator[Record]:
        for n in (self.split(split) if split else self.names):
            yield self.read(n)

    def __len__(self) -> int:
        return len(self.card.structures)

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} structures, {self.path})"


class DatasetWriter:
    """Builds a dataset in a hidden staging directory and renames it into place on `finalize`.

    Structures are written one by one (each atomically), so an interrupted build leaves only
    complete files in the staging directory; `resume=True` keeps them and `has(name)` says
    which are done. An exception inside `with DatasetWriter(...)` removes the staging
    directory unless `keep_on_error=True` (resumable builds).
    """

    def __init__(self, path: str | Path, name: str, basis: BasisSet, cutoff: float, level_of_theory: Mapping,
                 image_convention: str = "explicit", provenance: Mapping | None = None, resume: bool = False,
                 keep_on_error: bool = False, validate: bool = True, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise DataError("destination exists (pass overwrite=True to replace it)", self.path)
        self.name, self.basis, self.cutoff = name, basis, float(cutoff)
        self.level_of_theory = dict(level_of_theory)
        self.image_convention = image_convention
        self.provenance = dict(provenance or {})
        self.keep_on_error = keep_on_error
        self.validate = validate
        self.staging = self.path.parent / f".{self.path.name}.partial"
        if self.staging.exists() and not resume:
            shutil.rmtree(self.staging)
        (self.staging / "structures").mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self.keep_on_error:
            self.abort()
        return False

    def _file(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise DataError(f"bad structure name {name!r}")
        return self.staging / "structures" / f"{name}.h5"

    def has(self, name: str) -> bool:
        f = self._file(name)
        if not f.is_file():
            return False
        try:
            read_record(f, self.basis)
            return True
        except DataError:
            f.unlink()
            return False

    def add(self, rec: Record) -> None:
        if self.validate:
            from zoo.data.validate import validate_record

            validate_record(rec, path=f"<structure {rec.name}>", cutoff=self.cutoff, image_convention=self.image_convention)
        write_record(self._file(rec.name), rec)

    def finalize(self, splits: Mapping[str, Sequence[str]], description: str = "", overwrite: bool | None = None) -> Dataset:
        overwrite = self.overwrite if overwrite is None else overwrite
        if self.path.exists() and not overwrite:
            raise DataError("destination exists (pass overwrite=True to replace it)", self.path)
        files = sorted((self.staging / "structures").glob("*.h5"))
        structures: dict[str, dict] = {}
        elements: set[int] = set()
        has_s, spinful = [], []
        for f in files:
            rec = read_record(f, self.basis)
            structures[f.stem] = {"file": f"structures/{f.name}", "n_atoms": rec.n_atoms, "n_edges": rec.n_edges,
                                  "nnz_h": int(rec.h_onsite.size + rec.h_offsite.size), "sha256": file_sha256(f)}
            elements.update(int(z) for z in rec.numbers)
            has_s.append(rec.has_overlap)
            spinful.append(rec.spinful)
        if len(set(has_s)) > 1 or len(set(spinful)) > 1:
            raise DataError("structures disagree on overlap / spinful content", self.staging)
        card = DatasetCard(
            name=self.name, level_of_theory=self.level_of_theory, basis=self.basis.subset(elements) if elements else self.basis,
            cutoff=self.cutoff, splits={k: list(v) for k, v in splits.items()}, structures=structures,
            elements=sorted(elements), image_convention=self.image_convention, has_overlap=bool(has_s and has_s[0]),
            spinful=bool(spinful and spinful[0]), provenance=self.provenance, description=description,
        )
        # round-trip through JSON before the rename: what lands at `path` must open (check() included)
        DatasetCard.from_json(json.loads(json.dumps(card.to_json())), self.staging / CARD_NAME)
        atomic_write(self.staging / CARD_NAME, lambda p: p.write_text(json.dumps(card.to_json(), indent=1)))
        if self.path.exists():
            if not overwrite:
                raise DataError("destination exists (pass overwrite=True to replace it)", self.path)
            trash = self.path.parent / f".{self.path.name}.old"
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(self.path, trash)
            os.replace(self.staging, self.path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(self.staging, self.path)
        return Dataset.open(self.path)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
