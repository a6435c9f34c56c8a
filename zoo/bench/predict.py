"""Prediction with a trained checkpoint, for structures of any size, with bounded memory.

    zoo predict ckpt.pt big.xyz -o H.npz            (or H.h5: a zoo structure file; --format deeph)
    zoo predict ckpt.pt a.xyz b.cif traj.extxyz -o out/      (model loaded once, one file per frame)

The model is rebuilt from the checkpoint's metadata. Large structures stream exact augmented
partitions (`max_atoms_per_part`, halo depth = the backbone's `message_passing_layers`), and
the blocks of each partition go to disk as they come: memory holds one partition, the graph's
index arrays and a buffer of edges waiting for their hermitian partner (`stream_blocks`), never
the padded output of the whole structure.

What is written is the hermitized H (contract v2): H_ii <- (H_ii + H_ii^dagger)/2 and
H_ij(R) <- (H_ij(R) + H_ji(-R)^dagger)/2, so H_ji(-R) = H_ij(R)^dagger exactly, equal to
`symmetrize_prediction` of one full-graph pass. Blocks are ragged and flat in the full graph's
edge order (the dataset format's layout, Hartree); they are first written by slices into an
HDF5 zoo structure file (the layout `zoo.data.format.write_record` writes and `read_record`
reads), which is renamed into place (`.h5`), streamed into an `.npz`, or exported to DeepH's
layout (`zoo.data.export.write_deeph`). Every output is written to a temporary name and renamed,
so a failure leaves no partial file.

Bad input fails before anything is written, with one sentence naming the file: an element the
checkpoint's basis lacks, a periodic width below the cutoff (an atom within the cutoff of its own
image: edges i-i across the cell, which no training cell, validated at >= 2 x cutoff, contains),
an unreadable structure file, a checkpoint of another model version.

Spectra (`eig=True`): the generalized problem H c = e S c at Gamma. H alone when the checkpoint's
dataset is orthogonal; when it has S (non-orthogonal basis) the model does not predict S, so the
overlap of the same structure must be given (`overlap`: a zoo structure file holding S, e.g. an
import of the reference code's output). S is checked for positive definiteness before any
prediction (a truncated S can be indefinite); a missing or indefinite S is an error, because a
spectrum of H without its S is meaningless in a non-orthogonal basis. Up to `dense_limit`
orbitals every eigenvalue is computed (Fermi level and gap need `n_electrons`); above it, the
`eig_count` states nearest `eig_sigma` (sparse shift-invert). Results: `<stem>.eig.npz`
(eigenvalues, DOS, gap and Fermi level when known, Hartree) and `<stem>.dos.png`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from zoo.data.format import SCHEMA_VERSION, Structure, atomic_write
from zoo.errors import DataError, GraphError, ModelError, ZooError

FORMATS = ("npz", "h5", "deeph")
DENSE_LIMIT = 4000  # orbitals: all eigenvalues by dense eigh up to here, shift-invert above


# -- the model ------------------------------------------------------------------------------------

def model_from_checkpoint(path: str | Path, best: bool = True):
    """(model in eval mode, DatasetInfo, dtype) from a `zoo bench` checkpoint.

    A checkpoint whose weights do not fit the model this zoo builds from its metadata (another
    model version: renamed or resized parameters) is a ModelError naming the file."""
    from zoo.bench.run import dataset_info_from_json
    from zoo.bench.standardize import for_checkpoint
    from zoo.bench.trainer import DTYPES, load_checkpoint
    from zoo.models.registry import build_model

    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta") or {} if isinstance(ckpt, dict) else {}
    if "model" not in meta or "info" not in meta:
        raise ZooError(f"{path}: checkpoint lacks the model metadata zoo needs to rebuild the model")
    info = dataset_info_from_json(meta["info"])
    try:
        model = for_checkpoint(build_model(meta["model"], info, **meta.get("hparams", {})), meta)
    except ZooError as exc:
        raise ModelError(f"{path}: cannot rebuild model {meta['model']!r} from this checkpoint ({exc})") from None
    except TypeError as exc:  # a hyper-parameter this version's constructor no longer takes
        raise ModelError(f"{path}: checkpoint of another version of model {meta['model']!r} ({exc})") from None
    dtype = DTYPES[ckpt.get("train_config", {}).get("dtype", "float32")]
    model = model.to(dtype)
    state = ckpt.get("best_model") if best and ckpt.get("best_model") is not None else ckpt["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing / unexpected keys, size mismatches
        first = str(exc).strip().splitlines()
        detail = "; ".join(s.strip() for s in first[1:3]) or first[0]
        raise ModelError(f"{path}: checkpoint of another version of model {meta['model']!r}: its weights do not fit "
                         f"the model this zoo builds ({detail[:300]})") from None
    model.eval()
    return model, info, dtype


def check_structure_for_model(st: Structure, info, path: str | Path, checkpoint: str | Path = "") -> None:
    """Elements in the checkpoint's basis, and no periodic width below the cutoff (DataError naming `path`)."""
    from ase.data import chemical_symbols

    from zoo.data.graph import perpendicular_widths

    missing = sorted(set(int(z) for z in np.unique(st.numbers)) - set(int(z) for z in info.layout.elements))
    if missing:
        have = ", ".join(chemical_symbols[z] for z in info.layout.elements)
        raise DataError(f"element(s) {', '.join(chemical_symbols[z] for z in missing)} not in the basis of checkpoint "
                        f"{checkpoint or 'the checkpoint'} (it knows {have})", path)
    w = perpendicular_widths(st.cell)
    bad = [f"{'abc'[k]}: {w[k]:.2f} A" for k in range(3) if st.pbc[k] and w[k] < info.cutoff]
    if bad:
        raise DataError(f"cell too small for the checkpoint's cutoff {info.cutoff} A (periodic width {', '.join(bad)}): "
                        f"an atom would be within the cutoff of its own image, which no training cell has; make a "
                        f"supercell first (zoo data structure FILE --repeat a,b,c)", path)


# -- streaming ------------------------------------------------------------------------------------

@dataclass
class StreamStats:
    """What a streamed prediction did: partitions, and the most edges held waiting for a partner."""

    n_parts: int = 0
    max_pending_edges: int = 0
    seconds: float = 0.0


def stream_blocks(model, data, max_atoms_per_part: int = 2000, hermitize: bool = True, progress: bool = False,
                  stats: StreamStats | None = None) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Yield ("node" | "edge", ids, padded blocks) on the CPU as partitions are predicted.

    Every node and edge of the full graph is yielded exactly once (ids index the full graph).
    With `hermitize` the blocks equal `symmetrize_prediction` of one full-graph pass: on-site
    blocks are hermitized at once; an edge e = (i, j, R) and its partner r = (j, i, -R) are
    averaged, H_e <- (H_e + H_r^dagger)/2, H_r <- H_e^dagger, when the second of the two is
    predicted. Until then the first waits in a buffer. Partitions come in the recursive
    bisection's order, so an edge waits only while its partner lies across a cut not yet
    crossed: the buffer holds at most the edges between the partitions done and those to come,
    a surface of the structure, not its volume (`stats.max_pending_edges` says how many).
    Edges without a partner in the graph are yielded raw, as in `symmetrize_prediction`.
    """
    from tqdm.auto import tqdm

    from zoo.data.partition import partition
    from zoo.models.contract import reverse_edges

    stats = stats if stats is not None else StreamStats()
    t0 = time.perf_counter()
    n, e = int(data.num_nodes), int(data.edge_index.shape[1])
    n_parts = max(1, -(-n // max(1, int(max_atoms_per_part))))
    dev = next(iter(model.parameters())).device
    data = data.cpu()
    if n_parts <= 1:
        parts = [data]
    else:
        parts = partition(data, "rcb", n_parts=n_parts, hops=int(getattr(model, "message_passing_layers", 0)),
                          virtual="one-way", flow=getattr(model, "message_flow", "source_to_target"),
                          allow_self_images=True)  # explicit image shifts: small periodic cells are fine
    stats.n_parts = len(parts)
    rev = reverse_edges(data.edge_index, data.edge_shift, n) if hermitize else None
    slot = torch.full((e,), -1, dtype=torch.long) if hermitize else None  # buffer row of a waiting edge
    here = torch.zeros(e, dtype=torch.bool)  # scratch: edges labelled by the current partition
    pos = torch.full((e,), -1, dtype=torch.long) if hermitize else None  # scratch: an edge's row in the partition
    buf_ids: torch.Tensor | None = None
    buf: torch.Tensor | None = None
    node_seen = torch.zeros(n, dtype=torch.bool)
    edge_seen = torch.zeros(e, dtype=torch.bool)
    bar = tqdm(total=len(parts), desc="predict", unit="part", disable=not progress, leave=False)
    with torch.no_grad():
        for part in parts:
            pr = model(part.to(dev))
            if len(parts) == 1:
                ids_n, ids_e = torch.arange(n), torch.arange(e)
                nb, eb = pr.node_blocks.cpu(), pr.edge_blocks.cpu()
            else:
                nm, em = part.node_label_mask.cpu(), part.edge_label_mask.cpu()
                ids_n, ids_e = part.orig_node.cpu()[nm], part.orig_edge.cpu()[em]
                nb, eb = pr.node_blocks.cpu()[nm], pr.edge_blocks.cpu()[em]
            del pr
            if node_seen[ids_n].any() or edge_seen[ids_e].any():
                raise GraphError("partitions label some blocks twice")
            node_seen[ids_n] = True
            edge_seen[ids_e] = True
            yield "node", ids_n, (0.5 * (nb + nb.transpose(-1, -2).conj()) if hermitize else nb)
            if not hermitize:
                yield "edge", ids_e, eb
                bar.update(1)
                continue
            r = rev[ids_e]
            has = r >= 0
            rc = r.clamp(min=0)
            earlier = has & (slot[rc] >= 0)  # partner predicted before, waiting in the buffer
            here[ids_e] = True
            within = has & here[rc]
            here[ids_e] = False
            later = has & ~earlier & ~within
            out_ids, out_blocks = [ids_e[~has]], [eb[~has]]
            # pairs with both halves in this partition: take each pair once (e < r)
            if within.any():
                w = torch.nonzero(within).flatten()
                pos[ids_e[w]] = w
                a = w[ids_e[w] < r[w]]
                b = pos[r[a]]
                pos[ids_e[w]] = -1
                h = 0.5 * (eb[a] + eb[b].transpose(-1, -2).conj())
                out_ids += [ids_e[a], ids_e[b]]
                out_blocks += [h, h.transpose(-1, -2).conj()]
            if earlier.any():
                k = torch.nonzero(earlier).flatten()
                rows = slot[r[k]]
                h = 0.5 * (eb[k] + buf[rows].transpose(-1, -2).conj())
                out_ids += [ids_e[k], buf_ids[rows]]
                out_blocks += [h, h.transpose(-1, -2).conj()]
                slot[buf_ids[rows]] = -1
                keep = torch.ones(buf_ids.shape[0], dtype=torch.bool)
                keep[rows] = False
                buf_ids, buf = buf_ids[keep], buf[keep]
                slot[buf_ids] = torch.arange(buf_ids.shape[0])
            if later.any():
                k = torch.nonzero(later).flatten()
                new_ids, new_blocks = ids_e[k], eb[k].clone()
                buf_ids = new_ids if buf_ids is None else torch.cat([buf_ids, new_ids])
                buf = new_blocks if buf is None else torch.cat([buf, new_blocks])
                slot[buf_ids] = torch.arange(buf_ids.shape[0])
            stats.max_pending_edges = max(stats.max_pending_edges, 0 if buf_ids is None else int(buf_ids.shape[0]))
            yield "edge", torch.cat(out_ids), torch.cat(out_blocks)
            bar.update(1)
    bar.close()
    if buf_ids is not None and buf_ids.numel():
        raise GraphError(f"{int(buf_ids.numel())} edges still wait for a partner no partition labelled")
    if not (node_seen.all() and edge_seen.all()):
        raise GraphError(f"partitions left {int((~node_seen).sum())} nodes and {int((~edge_seen).sum())} edges "
                         f"unlabelled")
    stats.seconds = time.perf_counter() - t0


def predict_blocks(model, data, max_atoms_per_part: int = 2000,
                   hermitize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(node_blocks, edge_blocks) of the full graph, padded, on the CPU, in the full graph's order.

    `stream_blocks` gathered into whole arrays: for tests and small structures (a large one
    should go through `predict_file`, which never holds these arrays)."""
    node = edge = None
    n, e = int(data.num_nodes), int(data.edge_index.shape[1])
    for kind, ids, blocks in stream_blocks(model, data, max_atoms_per_part, hermitize):
        if kind == "node":
            node = blocks.new_zeros((n,) + tuple(blocks.shape[1:])) if node is None else node
            node[ids] = blocks
        else:
            edge = blocks.new_zeros((e,) + tuple(blocks.shape[1:])) if edge is None else edge
            edge[ids] = blocks
    if node is None:
        raise GraphError("no partitions to predict")
    if edge is None:  # a graph without edges (one isolated atom)
        edge = node.new_zeros((0,) + tuple(node.shape[1:]))
    return node, edge


# -- writing ---------------------------------------------------------------------------------------

class _BlockFile:
    """A zoo structure file (HDF5, `zoo.data.format` schema) whose H blocks arrive out of order.

    The flat offset of every block is known before prediction (norb_i x norb_j per edge), so a
    partition's blocks go straight to their place in a raw scratch file beside the output (sorted
    by id, contiguous ids written with one pwrite; h5py slice writes cost ~0.5 ms each, 8 s for a
    13,824-atom cell); `close` copies the scratch files into the HDF5 datasets in sequential chunks."""

    def __init__(self, path: Path, st: Structure, basis, edge_index: np.ndarray, edge_shift: np.ndarray,
                 spinful: bool, layout, meta: dict, chunk: int = 1 << 22):
        import h5py

        from zoo.physics.assembly import block_offsets

        self.path, self.chunk = path, chunk
        self.layout, self.spinful = layout, spinful
        self.z = st.numbers
        self.ei = edge_index  # [E, 2]
        norb = basis.norb_per_atom(st.numbers) * (2 if spinful else 1)
        self.norb = norb
        self.off_node = block_offsets(norb, norb)
        self.off_edge = block_offsets(norb[edge_index[:, 0]], norb[edge_index[:, 1]])
        self.dtype = np.dtype(np.complex128 if spinful else np.float64)
        self.f = h5py.File(path, "w")
        f = self.f
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["name"] = meta.get("name", path.stem)
        f.attrs["spinful"] = bool(spinful)
        f.attrs["basis"] = json.dumps(basis.to_json())
        f.attrs["meta"] = json.dumps(meta, default=str)
        f["numbers"], f["positions"], f["cell"], f["pbc"] = st.numbers, st.positions, st.cell, st.pbc
        f["edge_index"], f["edge_shift"] = edge_index, edge_shift
        self.raw = {k: path.with_name(path.name + f".{k}.raw") for k in ("onsite", "offsite")}
        self.fd = {k: os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for k, p in self.raw.items()}

    def write(self, kind: str, ids: torch.Tensor, blocks: torch.Tensor) -> None:
        from zoo.physics.assembly import unpad_blocks

        if ids.numel() == 0:
            return
        order = torch.argsort(ids)
        ids = ids[order].numpy()
        wide = torch.complex128 if blocks.is_complex() else torch.float64
        padded = blocks[order].to(wide).numpy()
        if kind == "node":
            zr = zc = self.z[ids]
            offs, fd = self.off_node, self.fd["onsite"]
        else:
            zr, zc = self.z[self.ei[ids, 0]], self.z[self.ei[ids, 1]]
            offs, fd = self.off_edge, self.fd["offsite"]
        flat = unpad_blocks(padded, self.layout.index, zr, zc, spinful=self.spinful)
        flat = np.ascontiguousarray(flat.real if np.iscomplexobj(flat) and not self.spinful else flat, self.dtype)
        # runs of consecutive ids are contiguous in the file
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [ids.size]])
        size = self.dtype.itemsize
        view = memoryview(flat).cast("B")
        pos = 0
        for s, t in zip(starts.tolist(), ends.tolist()):
            a, b = int(offs[ids[s]]), int(offs[ids[t - 1] + 1])
            os.pwrite(fd, view[pos * size:(pos + b - a) * size], a * size)
            pos += b - a

    def close(self, copy: bool = True) -> None:
        """Copy the scratch files into H/onsite and H/offsite (unless `copy` is False: a failed
        prediction), close, remove the scratch files."""
        try:
            if copy:
                for k, offs in (("onsite", self.off_node), ("offsite", self.off_edge)):
                    n = int(offs[-1])
                    d = self.f.create_dataset(f"H/{k}", shape=(n,), dtype=self.dtype)
                    with open(self.raw[k], "rb") as fh:
                        for a in range(0, n, self.chunk):
                            d[a:min(n, a + self.chunk)] = np.fromfile(fh, self.dtype, min(self.chunk, n - a))
        finally:
            for k in self.fd:
                os.close(self.fd[k])
                self.raw[k].unlink(missing_ok=True)
            self.f.close()


def _npz_from_h5(h5: Path, out: Path, extra: dict, chunk: int = 1 << 22) -> None:
    """The .npz `zoo predict` has always written (numbers, positions, cell, pbc, edge_index,
    edge_shift, h_onsite, h_offsite, norb, spinful, basis, units, hermitized), streamed from the
    HDF5 file a slice at a time, deflated at zlib level 1 (padding-free blocks still hold many
    exact zeros, symmetry-forbidden couplings: ~10x smaller, at a fraction of level 6's time)."""
    import h5py

    def member(zf, name: str, shape: tuple, dtype: np.dtype, source) -> None:
        with zf.open(name + ".npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_2_0(
                fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
            source(fh)

    with h5py.File(h5, "r") as f, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1,
                                                  allowZip64=True) as zf:
        for name, key in (("numbers", "numbers"), ("positions", "positions"), ("cell", "cell"), ("pbc", "pbc"),
                          ("edge_index", "edge_index"), ("edge_shift", "edge_shift"), ("h_onsite", "H/onsite"),
                          ("h_offsite", "H/offsite")):
            d = f[key]

            def copy(fh, d=d):
                if d.ndim == 1 and d.shape[0] > chunk:
                    for a in range(0, d.shape[0], chunk):
                        fh.write(np.ascontiguousarray(d[a:a + chunk]).tobytes())
                else:
                    fh.write(np.ascontiguousarray(d[()]).tobytes())

            member(zf, name, d.shape, d.dtype, copy)
        for name, value in extra.items():
            arr = np.asarray(value)
            member(zf, name, arr.shape, arr.dtype, lambda fh, arr=arr: fh.write(np.ascontiguousarray(arr).tobytes()))


@dataclass
class PredictResult:
    """One written prediction."""

    output: Path
    n_atoms: int
    n_edges: int
    seconds: float  # model time (partitions, hermitization, writing the blocks)
    n_parts: int = 1
    max_pending_edges: int = 0
    nbytes: int = 0
    eig: dict = field(default_factory=dict)


def output_format(output: str | Path, format: str | None) -> str:
    """`format` if given, else from the suffix (.h5 / .hdf5 -> h5, anything else npz)."""
    if format:
        if format not in FORMATS:
            raise ZooError(f"unknown output format {format!r}; known: {', '.join(FORMATS)}")
        return format
    return "h5" if Path(output).suffix.lower() in (".h5", ".hdf5") else "npz"


def _predict_one(model, info, dtype, st: Structure, source: str, output: Path, fmt: str,
                 max_atoms_per_part: int, hermitize: bool, progress: bool, name: str,
                 keep_h5: Path | None = None) -> PredictResult:
    """Predict one structure into `output`; `keep_h5`: also keep the zoo structure file there (for spectra)."""
    from zoo.data.torch_data import structure_to_data

    data = structure_to_data(st, info.layout, info.cutoff, dtype, spinful=info.spinful)
    ei = data.edge_index.numpy().T.copy()
    shift = data.edge_shift.numpy().round().astype(np.int64)
    meta = {"name": name, "source": source, "hermitized": bool(hermitize), "units": "hartree",
            "predicted_by": "zoo predict"}
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".h5.tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp)
    stats = StreamStats()
    try:
        bf = _BlockFile(tmp, st, info.layout.basis, ei, shift, bool(info.spinful), info.layout, meta)
        try:
            for kind, ids, blocks in stream_blocks(model, data, max_atoms_per_part, hermitize, progress, stats):
                bf.write(kind, ids, blocks)
        except BaseException:
            bf.close(copy=False)
            raise
        bf.close()
        norb = bf.norb
        del data
        if fmt == "h5":
            os.replace(tmp, output)
        elif fmt == "npz":
            extra = {"norb": norb, "spinful": np.asarray(bool(info.spinful)),
                     "basis": np.asarray(json.dumps(info.layout.basis.to_json())), "units": np.asarray("hartree"),
                     "hermitized": np.asarray(bool(hermitize))}
            atomic_write(output, lambda p: _npz_from_h5(tmp, p, extra), suffix=".npz")
        else:  # deeph: one processed directory, through the exporter (holds this record's ragged blocks)
            from zoo.data.export import export_records
            from zoo.data.format import read_record

            rec = read_record(tmp, info.layout.basis)
            rec.name = name
            export_records([rec], "deeph", output, overwrite=True)
        if keep_h5 is not None and tmp.exists():
            os.replace(tmp, keep_h5)
    finally:
        tmp.unlink(missing_ok=True)
    nbytes = sum(p.stat().st_size for p in output.rglob("*") if p.is_file()) if output.is_dir() else output.stat().st_size
    return PredictResult(output, st.n_atoms, int(ei.shape[0]), stats.seconds, stats.n_parts, stats.max_pending_edges,
                         nbytes)


# -- inputs ----------------------------------------------------------------------------------------

def read_frames(path: str | Path) -> list[Structure]:
    """Every frame of a structure file (one for most formats, all of a trajectory), validated."""
    import ase.io

    from zoo.data.structure_io import check_structure, read_structure

    path = Path(path)
    first = read_structure(path, index=0)  # the file-level checks (existence, corrupt counts, parse errors)
    try:
        frames = ase.io.read(str(path), index=":")
    except Exception as exc:  # noqa: BLE001 -- a later frame ASE cannot parse
        raise DataError(f"cannot read every frame ({type(exc).__name__}: {str(exc)[:200]})", path) from None
    if not isinstance(frames, list) or len(frames) <= 1:
        return [first]
    return [check_structure(a, f"{path}@{k}") for k, a in enumerate(frames)]


def _overlap_matrix(path: str | Path, st: Structure, n_check: int):
    """S at Gamma (scipy.sparse) from a zoo structure file of the same structure, checked positive definite."""
    import scipy.sparse.linalg as spla

    from zoo.data.format import read_record
    from zoo.physics.assembly import assemble, hermitize_matrix

    rec = read_record(path)
    if not rec.has_overlap:
        raise DataError("holds no overlap S (needed for --eig with this checkpoint)", path)
    if rec.numbers.shape != st.numbers.shape or (rec.numbers != st.numbers).any() or \
            np.abs(rec.positions - st.positions).max() > 1e-4:
        raise DataError("is not the structure being predicted (atoms or positions differ)", path)
    s = hermitize_matrix(assemble(rec.norb, rec.s_onsite, rec.edge_index, rec.edge_shift, rec.s_offsite))
    n = s.shape[0]
    if n <= n_check:
        low = float(np.linalg.eigvalsh(s.toarray())[0])
    else:
        low = float(spla.eigsh(s, k=1, which="SA", return_eigenvectors=False, tol=1e-8)[0])
    if low <= 1e-8:
        raise DataError(f"overlap S is not positive definite (smallest eigenvalue {low:.3g}): truncated at too "
                        f"short a cutoff? No spectrum can be computed with it", path)
    return s, rec.n_electrons


def spectrum(h_file: Path, s=None, n_electrons: float | None = None, spinful: bool = False,
             dense_limit: int = DENSE_LIMIT, sigma: float = 0.0, count: int = 64) -> dict:
    """Eigenvalues at Gamma of the written H (with S), Fermi level and gap when `n_electrons` is
    known and all states are computed, DOS (states per Hartree, Gaussian 0.1 eV) on a grid."""
    from zoo.data.format import read_record
    from zoo.physics import spectra
    from zoo.physics.assembly import assemble, hermitize_matrix
    from zoo.physics.units import HARTREE_EV

    rec = read_record(h_file)
    h = hermitize_matrix(assemble(rec.norb, rec.h_onsite, rec.edge_index, rec.edge_shift, rec.h_offsite))
    n = h.shape[0]
    if s is not None and spinful:
        import scipy.sparse as sp

        s = sp.kron(sp.identity(2), s, format="csr")  # spinless S of the spin-major layout: kron(I2, S)
    out: dict = {"n_orbitals": n, "method": "dense" if n <= dense_limit else f"shift-invert, {count} nearest {sigma}",
                 "overlap": s is not None}
    if n <= dense_limit:
        eigs = spectra.eigh(h, s)
    else:
        eigs = spectra.eigh_near(h, s, sigma=sigma, k=count)
    degeneracy = 1 if spinful else 2
    out["eigenvalues"] = eigs
    if n_electrons is not None and n <= dense_limit:
        out["fermi_level"] = float(spectra.fermi_level(eigs, n_electrons, spin_degeneracy=degeneracy))
        out["gap"] = float(spectra.band_gap(eigs, n_electrons, spin_degeneracy=degeneracy))
    broad = 0.1 / HARTREE_EV
    grid = np.linspace(eigs.min() - 5 * broad, eigs.max() + 5 * broad, 1000)
    out["dos_energy"], out["dos"] = grid, spectra.dos(eigs, grid, sigma=broad, spin_degeneracy=degeneracy)
    return out


def _write_spectrum(spec: dict, stem: Path, title: str) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.physics.units import HARTREE_EV

    arrays = {k: np.asarray(v) for k, v in spec.items() if k not in ("method",)}
    arrays["method"] = np.asarray(spec["method"])
    arrays["units"] = np.asarray("hartree")
    npz = stem.with_name(stem.name + ".eig.npz")
    def _save(p: Path) -> None:
        with open(p, "wb") as fh:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez(fh, **arrays)

    atomic_write(npz, _save, suffix=".npz")
    png = stem.with_name(stem.name + ".dos.png")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(spec["dos_energy"] * HARTREE_EV, spec["dos"] / HARTREE_EV, lw=1.2)
    if "fermi_level" in spec:
        ax.axvline(spec["fermi_level"] * HARTREE_EV, color="k", ls="--", lw=0.8, label="E_F")
        ax.legend()
    gap = f", gap {spec['gap'] * HARTREE_EV:.3f} eV" if "gap" in spec else ""
    ax.set_title(f"{title}{gap} ({'H, S' if spec['overlap'] else 'H only'})", fontsize=9)
    ax.set_xlabel("energy (eV)")
    ax.set_ylabel("DOS (states / eV)")
    fig.tight_layout()
    atomic_write(png, lambda p: fig.savefig(p, format="png", dpi=120), suffix=".png")
    plt.close(fig)
    return npz, png


# -- the command -----------------------------------------------------------------------------------

def predict_files(checkpoint: str | Path, structures: Sequence[str | Path], output: str | Path, device: str = "auto",
                  best: bool = True, max_atoms_per_part: int = 2000, hermitize: bool = True, format: str | None = None,
                  progress: bool = False, eig: bool = False, overlap: str | Path | None = None,
                  n_electrons: float | None = None, eig_sigma_ev: float = 0.0, eig_count: int = 64,
                  dense_limit: int = DENSE_LIMIT) -> list[PredictResult]:
    """Predict H for every frame of every structure file with one model load.

    One structure (one frame) goes to `output` itself; several go into the folder `output` as
    `<file stem>[-<frame>].<npz|h5>` (or a DeepH folder each). Every input is read and checked
    (elements, cell, overlap) before the first prediction, so bad input writes nothing."""
    from zoo.bench.trainer import resolve_device
    from zoo.physics.units import HARTREE_EV

    if not structures:
        raise ZooError("no structure file given")
    fmt = output_format(output, format)
    model, info, dtype = model_from_checkpoint(checkpoint, best)
    jobs: list[tuple[Structure, str, str]] = []  # (structure, source, name)
    for path in structures:
        frames = read_frames(path)
        stem = Path(path).stem
        for k, st in enumerate(frames):
            source = str(path) if len(frames) == 1 else f"{path}@{k}"
            check_structure_for_model(st, info, source, checkpoint)
            jobs.append((st, source, stem if len(frames) == 1 else f"{stem}-{k:04d}"))
    names = [j[2] for j in jobs]
    if len(set(names)) != len(names):
        raise ZooError(f"two inputs share an output name ({', '.join(sorted({x for x in names if names.count(x) > 1}))}); "
                       f"rename one")
    s_matrix = None
    if eig:
        if len(jobs) != 1 and overlap is not None:
            raise ZooError("--overlap belongs to one structure; predict several structures without --eig or one by one")
        if info.has_overlap and overlap is None:
            raise ZooError(f"{checkpoint}: the checkpoint's dataset has an overlap S (non-orthogonal basis) that the "
                           f"model does not predict, and a spectrum of H without S is meaningless: give the structure's "
                           f"S with --overlap FILE (a zoo structure file), or leave out --eig")
        if overlap is not None:
            s_matrix, ne = _overlap_matrix(overlap, jobs[0][0], dense_limit)
            n_electrons = n_electrons if n_electrons is not None else ne
    model = model.to(resolve_device(device))
    out = Path(output)
    many = len(jobs) > 1
    suffix = {"npz": ".npz", "h5": ".h5", "deeph": ""}[fmt]
    results = []
    for st, source, name in jobs:
        dest = out / f"{name}{suffix}" if many else out
        dest.parent.mkdir(parents=True, exist_ok=True)
        # spectra read a zoo structure file: for npz / deeph output, keep the streamed one aside until done
        tmp_dir = Path(tempfile.mkdtemp(prefix=".zoo-predict.", dir=dest.parent)) if eig and fmt != "h5" else None
        try:
            r = _predict_one(model, info, dtype, st, source, dest, fmt, max_atoms_per_part, hermitize, progress,
                             name, keep_h5=tmp_dir / "H.h5" if tmp_dir is not None else None)
            if eig:
                h_file = dest if tmp_dir is None else tmp_dir / "H.h5"
                spec = spectrum(h_file, s_matrix, n_electrons, bool(info.spinful), dense_limit,
                                eig_sigma_ev / HARTREE_EV, eig_count)
                stem = dest.with_suffix("") if dest.suffix else dest
                npz, png = _write_spectrum(spec, stem, f"{name}: {st.n_atoms} atoms")
                r.eig = {k: spec[k] for k in ("n_orbitals", "method", "fermi_level", "gap") if k in spec}
                r.eig["files"] = [str(npz), str(png)]
        finally:
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)
        results.append(r)
    return results


def predict_file(checkpoint: str | Path, structure: str | Path, output: str | Path, device: str = "auto",
                 best: bool = True, max_atoms_per_part: int = 2000,
                 hermitize: bool = True) -> tuple[Path, int, int, float]:
    """Predict H for one structure file; returns (output path, atoms, edges, seconds)."""
    (r,) = predict_files(checkpoint, [structure], output, device, best, max_atoms_per_part, hermitize)
    return r.output, r.n_atoms, r.n_edges, r.seconds
