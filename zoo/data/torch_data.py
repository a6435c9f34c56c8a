"""Records -> torch-geometric `Data` with padded targets and masks; batching.

Fields of a graph (N atoms, E directed edges, n = layout.n_max)::

    z [N] long, pos [N, 3], cell [1, 3, 3], edge_index [2, E] long (row 0 = i, row 1 = j),
    edge_shift [E, 3] (integer-valued, image of j), node_orb_mask [N, n] bool,
    node_label_mask [N] bool, edge_label_mask [E] bool   (False for virtual halo outputs),
    pbc [1, 3] bool, n_electrons [1] float64             (the latter when the record has it)
    y_node [N, n, n], y_edge [E, n, n]                  (targets, Hartree, zero padding)
    s_node, s_edge                                      (overlap, when present)

Spinful data (docs/adr/0006): node_orb_mask is [N, 2n] = cat(mask, mask); y_node [N, 2n, 2n] and
y_edge [E, 2n, 2n] are complex (complex64 for float32 graphs, complex128 for float64), spin-major
with each quadrant in the spinless slot layout; s_node / s_edge stay spinless and real [., n, n]
because S is spin-diagonal (kron(I2, S)): `torch_spectra.spinful_overlap_blocks` widens them.

Positions and cell stay in the graph so that models compute edge vectors themselves
(`edge_vectors`), which keeps rotation tests honest (rotate pos and cell, nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from zoo.data.format import Dataset, Record, Structure
from zoo.errors import DataError
from zoo.data.graph import edge_vectors_np, neighbor_graph
from zoo.physics.basis import OrbitalLayout
from zoo.physics.spin import complex_dtype


@dataclass
class DatasetInfo:
    """What a backbone may know about its data (never file paths)."""

    layout: OrbitalLayout
    cutoff: float
    spinful: bool = False
    has_overlap: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def elements(self) -> tuple[int, ...]:
        return self.layout.elements

    @property
    def n_max(self) -> int:
        return self.layout.n_max

    @classmethod
    def from_dataset(cls, ds: Dataset) -> "DatasetInfo":
        c = ds.card
        return cls(c.layout(), c.cutoff, c.spinful, c.has_overlap, c.name)


def _mask_rows(layout: OrbitalLayout, z: np.ndarray, spinful: bool = False) -> torch.Tensor:
    m = layout.mask_table()[z]
    return torch.as_tensor(np.concatenate([m, m], axis=1) if spinful else m)


def structure_to_data(structure: Structure, layout: OrbitalLayout, cutoff: float,
                      dtype: torch.dtype = torch.float32, spinful: bool = False) -> Data:
    """Graph of a bare structure (no targets) for prediction; `spinful` doubles the orbital mask."""
    for z in np.unique(structure.numbers):
        layout.check_element(int(z))
    ei, sh = neighbor_graph(structure.numbers, structure.positions, structure.cell, structure.pbc, cutoff)
    return _make(structure, ei, sh, layout, dtype, spinful)


def _make(structure: Structure, ei: np.ndarray, sh: np.ndarray, layout: OrbitalLayout, dtype,
          spinful: bool = False) -> Data:
    n, e = structure.n_atoms, ei.shape[0]
    return Data(
        z=torch.as_tensor(structure.numbers, dtype=torch.long),
        pos=torch.as_tensor(structure.positions, dtype=dtype),
        cell=torch.as_tensor(structure.cell, dtype=dtype).unsqueeze(0),
        edge_index=torch.as_tensor(ei.T.copy(), dtype=torch.long).reshape(2, e),
        edge_shift=torch.as_tensor(sh, dtype=dtype).reshape(e, 3),
        node_orb_mask=_mask_rows(layout, structure.numbers, spinful),
        node_label_mask=torch.ones(n, dtype=torch.bool),
        edge_label_mask=torch.ones(e, dtype=torch.bool),
        pbc=torch.as_tensor(np.asarray(structure.pbc, dtype=bool)).reshape(1, 3),
        num_nodes=n,
    )


def record_to_data(rec: Record, layout: OrbitalLayout, dtype: torch.dtype = torch.float32,
                   cutoff: float | None = None) -> Data:
    """Graph with padded targets. `cutoff` (optional) keeps only edges shorter than it."""
    ei, sh = rec.edge_index, rec.edge_shift
    keep = slice(None)
    if cutoff is not None:
        d = np.linalg.norm(edge_vectors_np(rec.positions, rec.cell, ei, sh), axis=1)
        keep = d < cutoff
    data = _make(rec.structure, ei[keep], sh[keep], layout, dtype, rec.spinful)
    yn, ye = rec.padded(layout, "H")
    ydt = complex_dtype(dtype) if rec.spinful else dtype
    data.y_node = torch.as_tensor(yn, dtype=ydt)
    data.y_edge = torch.as_tensor(ye[keep], dtype=ydt)
    if rec.has_overlap:
        sn, se = rec.padded(layout, "S")
        if rec.spinful:  # S is kron(I2, S) and real: keep the up-up quadrant (module doc)
            n = layout.n_max
            for blk in (sn, se):
                spinless = np.zeros_like(blk)
                spinless[:, :n, :n] = spinless[:, n:, n:] = blk[:, :n, :n].real
                if blk.size and np.abs(blk - spinless).max() > 1e-10 * max(1.0, np.abs(blk).max()):
                    raise DataError(f"record {rec.name!r}: the spinful overlap is not kron(I2, S) with real S")
            sn, se = sn[:, :n, :n].real, se[:, :n, :n].real
        data.s_node = torch.as_tensor(sn, dtype=dtype)
        data.s_edge = torch.as_tensor(se[keep], dtype=dtype)
    if rec.n_electrons is not None:  # for spectra in the loss (band_energy's Fermi level)
        data.n_electrons = torch.tensor([float(rec.n_electrons)], dtype=torch.float64)
    data.name = rec.name
    return data


def collate(graphs: Sequence[Data]) -> Batch:
    return Batch.from_data_list(list(graphs))


def graph_index(data: Data) -> torch.Tensor:
    """[N] graph index of each node (zeros for a single graph)."""
    b = getattr(data, "batch", None)
    return b if b is not None else torch.zeros(data.num_nodes, dtype=torch.long, device=data.pos.device)


def edge_vectors(data: Data) -> torch.Tensor:
    """r_ij = pos[j] + shift @ cell - pos[i] for every edge, differentiable in pos and cell."""
    i, j = data.edge_index
    cell = data.cell[graph_index(data)[i]]  # [E, 3, 3]
    return data.pos[j] - data.pos[i] + torch.einsum("ek,ekx->ex", data.edge_shift.to(data.pos.dtype), cell)


def block_masks(data: Data) -> tuple[torch.Tensor, torch.Tensor]:
    """bool [N, m, m] and [E, m, m]: which padded block entries are real orbitals.

    m is the width of `node_orb_mask`: n_max, or 2 n_max for spinful graphs (the doubled mask).
    """
    m = data.node_orb_mask
    i, j = data.edge_index
    return m[:, :, None] & m[:, None, :], m[i][:, :, None] & m[j][:, None, :]
