"""Shared machinery of the importers: basis resolution, convention/unit conversion of blocks,
image bookkeeping (explicit and Gamma-folded), splits, and the atomic dataset write.

Every importer turns its files into `Record`s in the internal convention (Hartree, Angstrom)
through `convert_blocks`, and hands them, with an `ImportSource` describing the origin, to
`write_dataset`, which validates, writes through `DatasetWriter` (nothing is left behind on
failure) and records the source in the card.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np
from ase.data import chemical_symbols

from zoo.data.format import Dataset, DatasetWriter, Record, Structure
from zoo.data.graph import edge_vectors_np, perpendicular_widths
from zoo.data.validate import MAX_Z, validate_record
from zoo.errors import BasisError, ConventionError, DataError, ZooError
from zoo.physics.basis import BasisSet, get_basis, parse_shells, symbol_to_z
from zoo.physics.conventions import get_convention, orbital_permutation
from zoo.physics.units import LENGTH_TO_ANGSTROM, energy_factor

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
MAX_L = 6  # no basis in use goes beyond i shells; a larger l is a corrupt file
MAX_SHELLS = 64  # per element; the largest real bases have about 30


@dataclass
class ImportSource:
    """What the card records about where the data came from."""

    format: str
    path: Path
    code: str
    convention: str
    energy_unit: str
    length_unit: str = "angstrom"
    index_base: int = 0
    image_convention: str = "explicit"  # of the zoo dataset written
    level_of_theory: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def provenance(self) -> dict:
        return {
            "source_format": self.format, "source_path": str(Path(self.path).resolve()), "source_code": self.code,
            "source_units": {"energy": self.energy_unit, "length": self.length_unit},
            "source_convention": self.convention, "source_index_base": self.index_base,
            "converted_to": {"convention": "internal", "energy": "hartree", "length": "angstrom"},
            "notes": list(self.notes),
        }


# -- basis ---------------------------------------------------------------------------------

def resolve_basis(spec: Any, found: Mapping[int, Sequence[int]] | None, path: Path, name: str = "") -> BasisSet:
    """The basis of an import.

    `spec` is what the user passed (None, a named set, or {element: shells} with shells a list of
    l or a DeePTB string like '1s1p'); `found` is what the source files say per element (or None).
    With both, they must agree. Any fault is a DataError naming `path`.
    """
    try:
        given: BasisSet | None = None
        if isinstance(spec, BasisSet):
            given = spec
        elif isinstance(spec, str):
            given = get_basis(spec)
        elif isinstance(spec, Mapping):
            given = BasisSet(name or "custom", {symbol_to_z(k): parse_shells(v) for k, v in spec.items()})
        elif spec is not None:
            raise BasisError(f"basis must be a name or a mapping element -> shells, got {type(spec).__name__}")
        if found is not None:
            found = {int(z): tuple(int(l) for l in ls) for z, ls in found.items()}
            for z, ls in found.items():  # before anything indexes the element table with them
                if not 1 <= z <= MAX_Z:
                    raise BasisError(f"atomic number {z} is not an element (1..{MAX_Z})")
                if not 0 < len(ls) <= MAX_SHELLS or any(not 0 <= l <= MAX_L for l in ls):
                    raise BasisError(f"{chemical_symbols[z]}: shells {list(ls)[:10]} must be 1..{MAX_SHELLS} "
                                     f"values of l in 0..{MAX_L}")
            if given is None:
                return BasisSet(name or "custom", found)
            for z, ls in found.items():
                if given.element_shells(z) != ls:
                    raise BasisError(f"basis {given.name!r} gives {chemical_symbols[z]} shells "
                                     f"{list(given.element_shells(z))}, the files say {list(ls)}")
            return given
        if given is None:
            raise BasisError("the files do not describe the orbital basis; pass basis=NAME (or --basis)")
        return given
    except BasisError as exc:
        raise DataError(f"basis: {exc}", path) from None


def check_elements(basis: BasisSet, numbers: Iterable[int], path: Path) -> None:
    check_numbers(numbers, path)
    try:
        for z in sorted(set(int(z) for z in numbers)):
            basis.element_shells(z)
    except BasisError as exc:
        raise DataError(f"unknown basis for an element: {exc}", path) from None


def check_numbers(numbers: Iterable[int], path: Path) -> np.ndarray:
    """Atomic numbers as int64; at least one atom, each an element 1..118 (a DataError naming `path`)."""
    z = np.asarray(list(numbers) if not isinstance(numbers, np.ndarray) else numbers).reshape(-1)
    if z.size == 0:
        raise DataError("no atoms (empty list of atomic numbers)", path)
    if z.dtype.kind not in "iu" and not (z.dtype.kind == "f" and np.all(np.isfinite(z)) and np.all(z == np.rint(z))):
        raise DataError(f"atomic numbers must be integers, got {z.dtype} values", path)
    z = z.astype(np.int64)
    bad = np.flatnonzero((z < 1) | (z > MAX_Z))
    if bad.size:
        raise DataError(f"atomic number {int(z[bad[0]])} (atom {int(bad[0])}) is not an element (1..{MAX_Z})", path)
    return z


# -- reading files defensively --------------------------------------------------------------
# Corrupt files make the standard readers raise their own exception types; these helpers turn
# every such fault into a DataError naming the file, where the file is read.

def read_text(path: Path, what: str = "text file") -> str:
    """The file as UTF-8 text; missing, unreadable or not text -> DataError."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DataError(f"missing {what}", path) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{what} is not UTF-8 text (byte {exc.start}); corrupt or binary file?", path) from None
    except OSError as exc:
        raise DataError(f"cannot read {what} ({exc.strerror or exc})", path) from None


def load_txt(path: Path, dtype: Any = float, what: str = "numbers") -> np.ndarray:
    """Whitespace-separated numbers (np.loadtxt, ndmin=1), all finite; any fault -> DataError."""
    text = read_text(path)
    if not text.strip():
        raise DataError(f"empty file (expected {what})", path)
    try:
        arr = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise DataError(f"malformed {what} ({exc})", path) from None
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what} contain NaN or inf", path)
    if np.dtype(dtype).kind in "iu":
        if np.any(arr != np.rint(arr)) or np.any(np.abs(arr) > 2**62):
            raise DataError(f"{what} must be integers", path)
    return arr.astype(dtype)


def load_json(path: Path, what: str = "JSON file") -> Any:
    try:
        return json.loads(read_text(path, what))
    except ValueError as exc:  # JSONDecodeError, or nesting/number limits
        raise DataError(f"not valid JSON ({exc})", path) from None
    except RecursionError:
        raise DataError("JSON nested too deeply", path) from None


def numeric_array(value: Any, path: Path, what: str, dtype: Any = np.float64, complex_ok: bool = False) -> np.ndarray:
    """`value` as a finite numeric array of `dtype`; strings, objects, ragged lists, complex data where
    real is expected, NaN/inf -> DataError naming `path` and `what`."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{what} is not a numeric array ({exc})", path) from None
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.complex128 if complex_ok else np.float64)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{what} is not a numeric array ({type(exc).__name__})", path) from None
    if arr.dtype.kind not in "biufc":
        raise DataError(f"{what} holds {arr.dtype} data, expected numbers", path)
    if arr.dtype.kind == "c" and not (complex_ok or np.dtype(dtype).kind == "c"):
        raise DataError(f"{what} holds complex numbers where real ones are expected", path)
    arr = arr.astype(dtype, copy=False)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        raise DataError(f"{what} contains NaN or inf", path)
    return arr


_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError)  # what h5py raises on corrupt metadata


@contextmanager
def h5_open(path: Path) -> Iterator[h5py.File]:
    """An HDF5 file for reading; a file h5py cannot open -> DataError. Walk it with `h5_keys`,
    `h5_group` and `h5_array`, which turn corrupt metadata met on the way into DataErrors."""
    try:
        f = h5py.File(path, "r")
    except (*_H5_ERRORS, TypeError) as exc:
        raise DataError(f"unreadable HDF5 ({type(exc).__name__}: {exc}); truncated or corrupt?", path) from None
    try:
        yield f
    finally:
        try:
            f.close()
        except _H5_ERRORS:
            pass  # closing a damaged file; the reading error (if any) is the one to report


def h5_keys(group: h5py.Group, path: Path) -> list[str]:
    try:
        return list(group.keys())
    except _H5_ERRORS as exc:
        raise DataError(f"corrupt HDF5 group {group.name!r} ({type(exc).__name__}: {exc})", path) from None


def h5_group(parent: h5py.Group, key: str, path: Path) -> h5py.Group:
    try:
        g = parent[key]
    except _H5_ERRORS as exc:
        raise DataError(f"cannot open HDF5 group {key!r} ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(g, h5py.Group):
        raise DataError(f"{key!r} is a dataset, expected a group of blocks", path)
    return g


def h5_array(group: h5py.Group, key: str, path: Path, dtype: Any = np.float64, complex_ok: bool = False) -> np.ndarray:
    """Dataset `key` of `group` as a finite numeric array; a group in its place, strings, corrupt
    storage -> DataError naming the file and the key."""
    try:
        obj = group[key]
        if not isinstance(obj, h5py.Dataset):
            raise DataError(f"{key!r} is a group, expected a dataset of numbers", path)
        if obj.dtype.kind not in "biufc":
            raise DataError(f"dataset {key!r} holds {obj.dtype} data, expected numbers", path)
        raw = obj[()]
    except (*_H5_ERRORS, TypeError) as exc:
        raise DataError(f"cannot read dataset {key!r} ({type(exc).__name__}: {exc})", path) from None
    return numeric_array(raw, path, f"dataset {key!r}", dtype, complex_ok)


def make_structure(numbers: Any, positions: Any, cell: Any, pbc: Any, path: Path) -> Structure:
    """A validated Structure from raw arrays (the checks of `structure_io.check_structure`: known
    elements, finite sane coordinates, a real periodic cell, no overlapping atoms)."""
    from zoo.data.structure_io import check_structure

    z = check_numbers(numeric_array(numbers, path, "atomic numbers", np.float64), path)
    pos = numeric_array(positions, path, "positions")
    if pos.size != 3 * z.size:
        raise DataError(f"{pos.size} position values for {z.size} atoms x 3 (mismatched atom count)", path)
    c = numeric_array(cell, path, "cell")
    if c.size != 9:
        raise DataError(f"expected a 3 x 3 cell, got {c.size} values", path)
    flags = np.asarray(pbc).reshape(-1)
    if flags.size not in (1, 3) or flags.dtype.kind not in "biuf":
        raise DataError(f"pbc must be 1 or 3 flags, got {flags.size} of {flags.dtype}", path)
    return check_structure(Structure(z, pos.reshape(-1, 3), c.reshape(3, 3), flags.astype(bool)), path)


# -- conventions and units ------------------------------------------------------------------

class BlockConverter:
    """Code-convention blocks -> internal convention, via per-element signed permutations."""

    def __init__(self, basis: BasisSet, convention: str, energy_unit: str, path: Path, spinful: bool = False):
        try:
            get_convention(convention)
            self.factor = energy_factor(energy_unit)
        except (ConventionError, ZooError) as exc:
            raise DataError(str(exc), path) from None
        self.basis, self.convention, self.spinful, self.path = basis, convention, spinful, path
        self._perm: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def perm(self, z: int) -> tuple[np.ndarray, np.ndarray]:
        z = int(z)
        if z not in self._perm:
            try:
                p, s = orbital_permutation(self.basis.element_shells(z), self.convention)
            except (BasisError, ConventionError) as exc:
                raise DataError(str(exc), self.path) from None
            if self.spinful:  # [[uu, ud], [du, dd]]: the same transform in each spin block
                n = p.size
                p, s = np.concatenate([p, p + n]), np.concatenate([s, s])
            self._perm[z] = (p, s)
        return self._perm[z]

    def n(self, z: int) -> int:
        return self.perm(z)[0].size

    def block(self, b: np.ndarray, zi: int, zj: int, what: str = "block") -> np.ndarray:
        """One (n_i x n_j) block in code convention and units -> internal, Hartree."""
        pi, si = self.perm(zi)
        pj, sj = self.perm(zj)
        b = np.asarray(b)
        if b.shape != (pi.size, pj.size):
            raise DataError(f"{what} has shape {b.shape}; the basis {self.basis.name!r} needs "
                            f"({pi.size}, {pj.size}) for {chemical_symbols[zi]}-{chemical_symbols[zj]} "
                            f"(mismatched orbital count)", self.path)
        return (si[:, None] * b[np.ix_(pi, pj)] * sj[None, :]) * self.factor

    def stack(self, blocks: np.ndarray, zi: np.ndarray, zj: np.ndarray) -> np.ndarray:
        """Flat concatenation of many blocks given as an object/ragged sequence."""
        return np.concatenate([self.block(b, a, c).reshape(-1) for b, a, c in zip(blocks, zi, zj)]) \
            if len(blocks) else np.zeros(0)


def length_factor(unit: str, path: Path) -> float:
    try:
        return LENGTH_TO_ANGSTROM[unit.lower()]
    except KeyError:
        raise DataError(f"unknown length unit {unit!r}; known: {sorted(LENGTH_TO_ANGSTROM)}", path) from None


# -- images ----------------------------------------------------------------------------------

def minimum_image_shifts(structure: Structure, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Integer image of j (in lattice vectors) nearest to i, along periodic directions only."""
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    if not structure.pbc.any() or i.size == 0:
        return np.zeros((i.size, 3), dtype=np.int64)
    from ase.geometry import find_mic

    d = structure.positions[j] - structure.positions[i]
    mic, _ = find_mic(d, structure.cell, structure.pbc)
    shift = np.rint((mic - d) @ np.linalg.inv(structure.cell)).astype(np.int64)
    shift[:, ~structure.pbc] = 0
    return shift


def complete_directions(ei: np.ndarray, sh: np.ndarray, *block_lists: Sequence) -> tuple:
    """Add (j, i, -R) with the conjugate-transposed blocks wherever only (i, j, R) is present.

    Returns (edge_index, edge_shift, *block_lists) with every list extended alike (H, S, ...)."""
    key = {(int(a), int(b), *map(int, s)): k for k, ((a, b), s) in enumerate(zip(ei, sh))}
    missing = [(k, (b, a, -x, -y, -z)) for (a, b, x, y, z), k in key.items() if (b, a, -x, -y, -z) not in key]
    if not missing:
        return (ei, sh, *[list(bl) for bl in block_lists])
    e2 = np.array([m[1][:2] for m in missing], dtype=np.int64).reshape(-1, 2)
    s2 = np.array([m[1][2:] for m in missing], dtype=np.int64).reshape(-1, 3)
    lists = [list(bl) + [np.conj(np.asarray(bl[k])).T for k, _ in missing] for bl in block_lists]
    return (np.concatenate([ei, e2]), np.concatenate([sh, s2]), *lists)


def sort_edges(ei: np.ndarray, sh: np.ndarray) -> np.ndarray:
    """Order (by i, j, shift) that makes edge lists deterministic."""
    return np.lexsort((sh[:, 2], sh[:, 1], sh[:, 0], ei[:, 1], ei[:, 0]))


def edge_lengths(structure: Structure, ei: np.ndarray, sh: np.ndarray) -> np.ndarray:
    if len(ei) == 0:
        return np.zeros(0)
    return np.linalg.norm(edge_vectors_np(structure.positions, structure.cell, ei, sh), axis=1)


def cutoff_mask(structure: Structure, ei: np.ndarray, sh: np.ndarray, cutoff: float | None, gamma_folded: bool,
                source: ImportSource) -> np.ndarray:
    """Edges to keep. Gamma-folded data cannot tell images apart beyond half the narrowest periodic
    width, so by default such edges are dropped (and the drop is noted in the card)."""
    d = edge_lengths(structure, ei, sh)
    keep = np.ones(d.size, dtype=bool) if cutoff is None else d < cutoff
    if gamma_folded and structure.pbc.any():
        half = 0.5 * perpendicular_widths(structure.cell)[structure.pbc].min()
        far = d >= half * (1 - 1e-9)
        if cutoff is None and far.any():
            source.notes.append(f"{int(far.sum())} Gamma-folded blocks of atom pairs farther than half the narrowest "
                                f"periodic width ({half:.3f} A) were dropped: their image is ambiguous")
        keep &= ~far
    if cutoff is not None and (~keep).any():
        source.notes.append(f"{int((~keep).sum())} blocks beyond the cutoff {cutoff} A were dropped")
    return keep


def card_cutoff(lengths: Iterable[float]) -> float:
    """The smallest 0.01 A step strictly above the longest kept edge (so every edge is < cutoff)."""
    m = max(lengths, default=0.0)
    return float(np.floor(m * 100.0 + 1.0) / 100.0) if m > 0 else 1.0


def make_record(name: str, structure: Structure, conv: BlockConverter, h_on: Sequence, ei: np.ndarray, sh: np.ndarray,
                h_off: Sequence, s_on: Sequence | None = None, s_off: Sequence | None = None,
                n_electrons: float | None = None, meta: dict | None = None) -> Record:
    """A Record from code-convention blocks (on-site per atom, one per edge), edges sorted."""
    z = structure.numbers
    ei = np.asarray(ei, np.int64).reshape(-1, 2)
    sh = np.asarray(sh, np.int64).reshape(-1, 3)
    if len(h_on) != len(z):
        raise DataError(f"{len(h_on)} on-site blocks for {len(z)} atoms (mismatched atom count)", conv.path)
    if ei.size and (ei.min() < 0 or ei.max() >= len(z)):
        raise DataError(f"an atom index is outside 0..{len(z) - 1} (mismatched atom count or index base)", conv.path)
    order = sort_edges(ei, sh)
    ei, sh = ei[order], sh[order]
    zi, zj = z[ei[:, 0]], z[ei[:, 1]]
    rec = Record(name, structure, conv.basis, ei, sh, conv.stack(h_on, z, z), conv.stack([h_off[k] for k in order], zi, zj),
                 spinful=conv.spinful, n_electrons=n_electrons, meta=dict(meta or {}))
    if s_on is not None:
        f = conv.factor
        conv.factor = 1.0  # S is dimensionless
        try:
            rec.s_onsite = conv.stack(s_on, z, z)
            rec.s_offsite = conv.stack([s_off[k] for k in order], zi, zj)
        finally:
            conv.factor = f
    return rec


# -- splits ----------------------------------------------------------------------------------

def make_splits(names: Sequence[str], fractions: Sequence[float] | None = None, seed: int = 0) -> tuple[dict, str]:
    """train/val/test. One structure: the same in all three. Two: train = first, val = test = second.
    Otherwise shuffled with `seed` and cut by `fractions` (default 0.8/0.1/0.1), each split non-empty."""
    names = list(names)
    if not names:
        raise DataError("nothing was imported (no structures)")
    if len(names) == 1:
        return ({"train": names, "val": names, "test": names},
                "single structure: it is the train, val and test split alike (use it for smoke tests, "
                "or partition it spatially before benchmarking)")
    if len(names) == 2:
        return ({"train": names[:1], "val": names[1:], "test": names[1:]},
                "two structures: the first is train, the second is both val and test")
    fr = np.asarray(fractions if fractions is not None else DEFAULT_FRACTIONS, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or fr.sum() <= 0:
        raise DataError(f"split fractions must be three non-negative numbers, got {list(fr)}")
    fr = fr / fr.sum()
    order = np.random.default_rng(seed).permutation(len(names))
    n = len(names)
    n_val = max(1, int(round(fr[1] * n)))
    n_test = max(1, int(round(fr[2] * n)))
    n_train = n - n_val - n_test
    if n_train < 1:
        n_train, n_val, n_test = 1, max(1, (n - 1) // 2), n - 1 - max(1, (n - 1) // 2)
    idx = [names[k] for k in order]
    splits = {"train": sorted(idx[:n_train]), "val": sorted(idx[n_train:n_train + n_val]),
              "test": sorted(idx[n_train + n_val:])}
    return splits, f"random split (seed {seed}) with fractions {[round(float(x), 4) for x in fr]}"


# -- writing ---------------------------------------------------------------------------------

def write_dataset(dest: str | Path, name: str, source: ImportSource, basis: BasisSet,
                  records: Callable[[], Iterator[Record]], cutoff: float | None = None,
                  splits: Sequence[float] | Mapping[str, Sequence[str]] | None = None, seed: int = 0,
                  overwrite: bool = False, description: str = "") -> Dataset:
    """Validate and write `records()` as a zoo dataset; on any failure nothing is left at `dest`.

    `splits`: None (defaults, see `make_splits`), three fractions, or explicit {split: [names]}.
    """
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise DataError("destination exists (pass overwrite=True / --overwrite to replace it)", dest)
    cutoffs: list[float] = []
    names: list[str] = []
    lot = {"code": source.code, "basis": basis.name, **source.level_of_theory}
    # the writer's own validation knows one cutoff for all structures; ours is per structure
    with DatasetWriter(dest, name, basis, cutoff or 1.0, lot, image_convention=source.image_convention,
                       provenance={}, validate=False) as w:
        for rec in records():
            lens = edge_lengths(rec.structure, rec.edge_index, rec.edge_shift)
            rc = cutoff if cutoff is not None else card_cutoff(lens)
            if cutoff is None and source.image_convention == "gamma-folded" and rec.pbc.any():
                rc = min(rc, 0.5 * float(perpendicular_widths(rec.cell)[rec.pbc].min()))
            try:
                validate_record(rec, path=source.path, cutoff=rc, image_convention=source.image_convention)
            except DataError as exc:
                raise DataError(f"structure {rec.name!r}: {exc.fault}", source.path) from None
            if rec.name in names:
                raise DataError(f"two structures are named {rec.name!r}", source.path)
            names.append(rec.name)
            cutoffs.append(rc)
            w.add(rec)
        if not names:
            raise DataError("the source holds no structures", source.path)
        w.cutoff = cutoff if cutoff is not None else max(cutoffs)
        if isinstance(splits, Mapping):
            split_map = {k: list(v) for k, v in splits.items()}
            note = "splits given explicitly"
        else:
            split_map, note = make_splits(names, splits, seed)
        prov = source.provenance()
        prov["splits_note"] = note
        w.provenance = prov
        return w.finalize(split_map, description=description or f"imported from {source.format} ({source.path})",
                          overwrite=overwrite)


# -- safe loading of object arrays in .npz files -----------------------------------------------

_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("builtins", "float"), ("builtins", "int"), ("builtins", "complex"),
    ("scipy.sparse._csr", "csr_matrix"), ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_array"),
    ("scipy.sparse._coo", "coo_matrix"), ("scipy.sparse._csc", "csc_matrix"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles arrays of numbers (and scipy sparse matrices) only: a data file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a data file")


# zipfile, the .npy header parser and the unpickler meet damaged bytes with all of these
# (NotImplementedError: an unknown compression method; RuntimeError: "encrypted" flag bits)
NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, struct.error, OSError, EOFError, ValueError, TypeError, KeyError,
               IndexError, AttributeError, OverflowError, NotImplementedError, RuntimeError, pickle.UnpicklingError)


def load_npz_safely(path: Path) -> dict[str, Any]:
    """Every array of an .npz, object arrays included, without executing arbitrary pickles."""
    out: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                key = member[:-4] if member.endswith(".npy") else member
                with zf.open(member) as fh:
                    data = fh.read()
                buf = io.BytesIO(data)
                version = np.lib.format.read_magic(buf)
                if version == (1, 0):
                    _, _, dtype = np.lib.format.read_array_header_1_0(buf)
                elif version == (2, 0):
                    _, _, dtype = np.lib.format.read_array_header_2_0(buf)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                if dtype.hasobject:
                    arr = _NumpyOnlyUnpickler(buf).load()
                else:
                    buf.seek(0)
                    arr = np.lib.format.read_array(buf, allow_pickle=False)
                out[key] = arr
    except NPZ_ERRORS as exc:
        raise DataError(f"unreadable .npz ({type(exc).__name__}: {exc}); truncated or not written by numpy", path) from None
    except MemoryError:
        raise DataError("unreadable .npz (a header asks for more memory than there is); corrupt file", path) from None
    return out


def source_dirs(src: Path, is_source: Callable[[Path], bool], required: Sequence[str], what: str) -> list[Path]:
    """`src` itself if it is one source directory, else its sub-directories that are (sorted);
    a DataError naming `src` and the missing files when there are none."""
    if not src.exists():
        raise DataError("source does not exist", src)
    dirs = [src] if is_source(src) else sorted(p for p in src.iterdir() if p.is_dir() and is_source(p)) \
        if src.is_dir() else []
    if not dirs:
        missing = [f for f in required if not (src / f).is_file()]
        raise DataError(f"not a {what} directory (missing {missing}) and no sub-directory is one", src)
    return dirs
