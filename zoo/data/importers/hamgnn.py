"""HamGNN `graph_data.npz`: key "graph" holding {index: torch_geometric Data} (or plain dicts).

Fields used per graph: z [N], pos [N, 3] (A), cell [1, 3, 3] or [3, 3] (rows are lattice
vectors), edge_index [2, E] (row 0 = i, row 1 = j), cell_shift [E, 3] (integer image of j; or
nbr_shift [E, 3] in A, converted), Hon [N, nao_max^2], Hoff [E, nao_max^2], optional Son / Soff.
Blocks are padded (nao_max x nao_max, row-major): an element's shells sit in the first slots of
their l in the padded layout `slots` (HamGNN's defaults by nao_max: 13 "2s2p1d", 14 "3s2p1d",
19 "3s2p2d", 26 "3s2p2d1f"; override with slots= or orbital_index={element: [positions]}).
Energies eV and the OpenMX orbital order by default (HamGNN's OpenMX / ABACUS interfaces).
The pickled graphs are loaded with an unpickler that admits numpy, torch tensors (through
torch's weights-only loader) and torch_geometric Data containers only.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from zoo.data.format import Record
from zoo.data.importers.common import (NPZ_ERRORS, BlockConverter, ImportSource, check_elements,
                                       complete_directions, make_record, make_structure, numeric_array, resolve_basis)
from zoo.errors import BasisError, DataError
from zoo.physics.basis import BasisSet, parse_shells, symbol_to_z

FORMAT = "hamgnn"
DEFAULT_SLOTS = {13: "2s2p1d", 14: "3s2p1d", 19: "3s2p2d", 26: "3s2p2d1f"}


def _torch_bytes(b: bytes):
    import torch

    return torch.load(io.BytesIO(b), weights_only=True)


class _GraphUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("collections", "OrderedDict"), ("builtins", "dict"), ("builtins", "list"), ("builtins", "set"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_parameter"),
        ("torch_geometric.data.data", "Data"), ("torch_geometric.data.data", "DataEdgeAttr"),
        ("torch_geometric.data.data", "DataTensorAttr"), ("torch_geometric.data.storage", "GlobalStorage"),
        ("torch", "Size"), ("torch", "float32"), ("torch", "float64"), ("torch", "int64"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return _torch_bytes  # weights-only: tensors, never code
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} from a data file")


def load_graphs(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as zf:
            if "graph.npy" not in zf.namelist():
                raise DataError(f"no array 'graph' (found {[n[:-4] for n in zf.namelist()]})", path)
            buf = io.BytesIO(zf.read("graph.npy"))
        version = np.lib.format.read_magic(buf)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = read_header(buf)
        if not dtype.hasobject:
            raise DataError("'graph' is not a pickled dict of graphs", path)
        arr = _GraphUnpickler(buf).load()
    except DataError:
        raise
    except (*NPZ_ERRORS, MemoryError) as exc:
        raise DataError(f"unreadable graph_data.npz ({type(exc).__name__}: {exc})", path) from None
    obj = arr.item() if isinstance(arr, np.ndarray) and arr.shape == () else arr
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (list, tuple, np.ndarray)):
        return dict(enumerate(obj))
    raise DataError(f"'graph' holds a {type(obj).__name__}, expected a dict of graphs", path)


def _field(g: Any, key: str, path: Path, gid, required: bool = True):
    try:
        has = key in g
    except TypeError:
        has = False
    if not has:
        if required:
            raise DataError(f"graph {gid}: no field {key!r}", path)
        return None
    v = g[key]
    try:
        v = v.detach().cpu().numpy() if hasattr(v, "detach") else v
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DataError(f"graph {gid}: field {key!r} is not a tensor ({exc})", path) from None
    return numeric_array(v, path, f"graph {gid}: field {key!r}")


def _ints(v: np.ndarray, path: Path, what: str, width: int) -> np.ndarray:
    """Integer rows of `width` from a float array (exact integers only)."""
    if v.size % width or np.any(v != np.rint(v)) or np.any(np.abs(v) > 2**62):
        raise DataError(f"{what} must be integers in rows of {width}, got {v.size} values", path)
    return v.astype(np.int64)


def _index_tables(basis: BasisSet, slots: str, elements, path: Path) -> dict[int, np.ndarray]:
    ls = parse_shells(slots)
    offs = np.concatenate([[0], np.cumsum([2 * l + 1 for l in ls])])
    out = {}
    for z in elements:
        used: dict[int, int] = {}
        idx = []
        for l in basis.element_shells(z):
            cand = [s for s, sl in enumerate(ls) if sl == l]
            k = used.get(l, 0)
            if k >= len(cand):
                raise DataError(f"the padded layout {slots!r} has no room for the shells {list(basis.element_shells(z))} "
                                f"of Z={z}; pass slots= or orbital_index=", path)
            used[l] = k + 1
            idx += range(offs[cand[k]], offs[cand[k]] + 2 * l + 1)
        out[int(z)] = np.array(idx, dtype=np.int64)
    return out


def read(src: str | Path, basis: Any = None, energy_unit: str = "eV", convention: str = "openmx",
         slots: str | None = None, orbital_index: Mapping | None = None,
         code: str = "OpenMX/ABACUS (via HamGNN)") -> tuple[ImportSource, BasisSet, Callable[[], Iterator[Record]]]:
    src = Path(src)
    path = src / "graph_data.npz" if src.is_dir() else src
    if not path.is_file():
        raise DataError("no graph_data.npz", src)
    graphs = load_graphs(path)
    if not graphs:
        raise DataError("the file holds no graphs", path)
    bset = resolve_basis(basis, None, path)
    source = ImportSource(FORMAT, path, code, convention, energy_unit, index_base=0, image_convention="explicit",
                          level_of_theory={"source_format": FORMAT})

    def records() -> Iterator[Record]:
        for gid, g in graphs.items():
            z = _field(g, "z", path, gid).reshape(-1)
            pos = _field(g, "pos", path, gid)
            if pos.size != 3 * z.size:
                raise DataError(f"graph {gid}: {pos.size} position values for {len(z)} atoms x 3 "
                                f"(mismatched atom count)", path)
            cell = _field(g, "cell", path, gid, required=False)
            cell = np.zeros(9) if cell is None else cell
            if cell.size != 9:
                raise DataError(f"graph {gid}: expected a 3 x 3 cell, got {cell.size} values", path)
            cell = cell.reshape(3, 3)
            pbc = np.full(3, abs(np.linalg.det(cell)) > 1e-8)
            st = make_structure(z, pos.reshape(-1, 3), cell, pbc, path)
            z = st.numbers
            check_elements(bset, z, path)
            ei = _ints(_field(g, "edge_index", path, gid), path, f"graph {gid}: edge_index", 2).reshape(2, -1).T
            sh = _field(g, "cell_shift", path, gid, required=False)
            if sh is None:
                nbr = _field(g, "nbr_shift", path, gid, required=False)
                if nbr is not None and (nbr.size % 3 or not pbc.any()):
                    raise DataError(f"graph {gid}: nbr_shift needs [E, 3] vectors and a periodic cell", path)
                sh = np.zeros((len(ei), 3)) if nbr is None else np.rint(nbr.reshape(-1, 3) @ np.linalg.inv(cell))
            sh = _ints(sh, path, f"graph {gid}: cell_shift", 3).reshape(-1, 3)
            hon = _field(g, "Hon", path, gid)
            hoff = _field(g, "Hoff", path, gid)
            if hon.ndim < 2 or hoff.ndim < 2 or hon.shape[1:] != hoff.shape[1:]:
                raise DataError(f"graph {gid}: Hon {hon.shape} and Hoff {hoff.shape} must be rows of the same "
                                f"padded block", path)
            nao2 = int(np.prod(hon.shape[1:]))
            nao = int(round(np.sqrt(nao2)))
            if nao * nao != nao2:
                raise DataError(f"graph {gid}: Hon rows hold {nao2} values, not a square nao_max^2", path)
            if nao == 0 or len(hon) != len(z) or len(hoff) != len(ei) or len(sh) != len(ei):
                raise DataError(f"graph {gid}: {len(hon)} Hon rows for {len(z)} atoms, {len(hoff)} Hoff rows and "
                                f"{len(sh)} shifts for {len(ei)} edges (mismatched counts)", path)
            if orbital_index is not None:
                try:
                    index = {symbol_to_z(k): np.asarray(v, dtype=np.int64) for k, v in orbital_index.items()}
                except BasisError as exc:
                    raise DataError(str(exc), path) from None
            else:
                lay = slots or DEFAULT_SLOTS.get(nao)
                if lay is None:
                    raise DataError(f"graph {gid}: no default padded layout for nao_max={nao}; pass slots=", path)
                index = _index_tables(bset, lay, np.unique(z), path)
            conv = BlockConverter(bset, convention, energy_unit, path)
            for el in np.unique(z):
                ix = index.get(int(el))
                if ix is None or ix.size != conv.n(el) or ix.size == 0 or ix.min() < 0 or ix.max() >= nao:
                    raise DataError(f"orbital positions for Z={el} do not fit the basis {bset.name!r} "
                                    f"({conv.n(el)} orbitals) in nao_max={nao} (mismatched orbital count)", path)

            def cut(rows, zi, zj):
                full = rows.reshape(-1, nao, nao)
                return [full[k][np.ix_(index[int(a)], index[int(b)])] for k, (a, b) in enumerate(zip(zi, zj))]

            h_on = cut(hon, z, z)
            h_off = cut(hoff, z[ei[:, 0]], z[ei[:, 1]])
            s_on = s_off = None
            son = _field(g, "Son", path, gid, required=False)
            if son is not None:
                soff = _field(g, "Soff", path, gid)
                if son.shape != hon.shape or soff.shape != hoff.shape:
                    raise DataError(f"graph {gid}: Son {son.shape} / Soff {soff.shape} do not match Hon {hon.shape} "
                                    f"/ Hoff {hoff.shape}", path)
                s_on = cut(son, z, z)
                s_off = cut(soff, z[ei[:, 0]], z[ei[:, 1]])
                ei2, sh2, h_off, s_off = complete_directions(ei, sh, h_off, s_off)
            else:
                ei2, sh2, h_off = complete_directions(ei, sh, h_off)
            yield make_record(f"graph{int(gid) if str(gid).isdigit() else gid:0>5}", st, conv, h_on, ei2, sh2, h_off,
                              s_on, s_off, meta={"source_graph": str(gid)})

    return source, bset, records
