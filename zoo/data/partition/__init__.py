"""Augmented partitioning of one structure's graph (seed paper Algorithm 1, generalised).

    parts = partition(data, "slices", t_slice=3.0, hops=model.message_passing_layers)
    parts = partition_for_model(data, model, "metis", n_parts=8)
    node, edge = scatter_predictions(parts, [model(p) for p in parts], data)   # full-graph order

Each partition is a torch-geometric `Data` with the full graph's fields restricted to its atoms
and edges (positions, cell and integer image shifts unchanged, so edge vectors are identical),
`node_label_mask` / `edge_label_mask` marking what it labels (False for virtual halo outputs),
`orig_node` / `orig_edge` (indices into the full graph), `ring` (hop distance of each atom from
the labelled ones), `part_id` and `halo_hops`. Partitioners: "slices" (slabs along an axis),
"rcb" (recursive coordinate bisection weighted by edges per atom) and "metis" (pymetis).
The halo rule and why it makes partitioned outputs exact is in `halo` and docs/partitioning.md.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from zoo.data.graph import perpendicular_widths
from zoo.data.partition.assign import metis_owner, periodic_directions, rcb_owner, slab_owner
from zoo.data.partition.halo import FLOWS, VIRTUAL_MODES, build_partitions
from zoo.data.partition.stats import partition_stats
from zoo.errors import ConfigError, GraphError

PARTITIONERS = ("slices", "rcb", "metis")

__all__ = ["PARTITIONERS", "VIRTUAL_MODES", "FLOWS", "partition", "partition_for_model", "assign_owner",
           "check_graph", "scatter_predictions", "partition_stats"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def check_graph(data: Data, cutoff: float | None = None, allow_self_images: bool = False) -> None:
    """Refuse a graph whose cutoff is longer than half the cell: an atom bonded to its own image,
    one atom pair joined through two images, or (given `cutoff`) a periodic width below 2 x cutoff.

    Such graphs are usually a too-small supercell. Explicit-image data (DeepH-style small cells) may
    mean them: `allow_self_images=True` accepts them, and partitions stay exact because features
    belong to atoms, not to images.
    """
    if allow_self_images:
        return
    ei = _np(data.edge_index)
    sh = np.rint(_np(data.edge_shift)).astype(np.int64)
    cell = _np(data.cell).reshape(3, 3).astype(np.float64)
    self_img = np.flatnonzero(ei[0] == ei[1])
    if len(self_img):
        a = int(ei[0, self_img[0]])
        raise GraphError(f"atom {a} meets its own periodic image (shift {sh[self_img[0]].tolist()}): the cutoff is "
                         f"longer than half the cell; use a larger supercell or a smaller cutoff (or allow_self_images=True if intended)")
    if ei.shape[1]:
        _, counts = np.unique(ei.T, axis=0, return_counts=True)
        if (counts > 1).any():
            raise GraphError("an atom pair is joined through two periodic images: the cutoff is longer than half the "
                             "cell; use a larger supercell or a smaller cutoff (or allow_self_images=True if intended)")
    periodic = periodic_directions(cell, sh, getattr(data, "pbc", None))
    if cutoff is not None and periodic.any():
        w = perpendicular_widths(cell)
        bad = [f"{'abc'[k]}: {w[k]:.3f} A" for k in range(3) if periodic[k] and w[k] < 2 * cutoff]
        if bad:
            raise GraphError(f"cutoff {cutoff} A is longer than half the cell ({', '.join(bad)}): an atom would meet "
                             f"its own image")


def assign_owner(data: Data, partitioner: str = "slices", *, n_parts: int | None = None, t_slice: float | None = None,
                 n_slices: int | None = None, axis=None, start: float | None = None, length: float | None = None,
                 seed: int = 0) -> np.ndarray:
    """[N] partition id of each atom (-1: labelled by none) for the named partitioner."""
    if partitioner not in PARTITIONERS:
        raise ConfigError(f"unknown partitioner {partitioner!r}; choose from {', '.join(PARTITIONERS)}")
    pos = _np(data.pos).astype(np.float64)
    cell = _np(data.cell).reshape(3, 3).astype(np.float64)
    ei = _np(data.edge_index)
    periodic = periodic_directions(cell, _np(data.edge_shift), getattr(data, "pbc", None))
    if partitioner == "slices":
        if n_slices is None and t_slice is None:
            n_slices = n_parts
        return slab_owner(pos, cell, periodic, axis=axis, start=start, length=length, n_slices=n_slices,
                          t_slice=t_slice)
    if n_parts is None:
        raise ConfigError(f"partitioner {partitioner!r} needs n_parts")
    if partitioner == "rcb":
        return rcb_owner(pos, cell, periodic, ei, int(n_parts))
    return metis_owner(len(pos), ei, int(n_parts), seed=seed)


def partition(data: Data, partitioner: str = "slices", *, hops: int = 0, virtual: str = "one-way",
              flow: str = "source_to_target", n_parts: int | None = None, t_slice: float | None = None,
              n_slices: int | None = None, axis=None, start: float | None = None, length: float | None = None,
              cutoff: float | None = None, allow_self_images: bool = False, seed: int = 0) -> list[Data]:
    """Cut one structure's graph into augmented partitions.

    hops: message-passing layers K of the backbone the partitions feed; the halo reaches K + 1
    atoms deep (one ring for the far ends of labelled edges, K for message passing), which makes
    labelled outputs equal to the full graph's. hops=0, virtual="one-way" is the seed's
    Algorithm 1. flow: the backbone's message direction (see `halo`). Slices: t_slice and/or
    n_slices (n_parts is accepted as n_slices), axis (default: longest), start, length. cutoff,
    allow_self_images: see `check_graph`.
    """
    check_graph(data, cutoff, allow_self_images)
    owner = assign_owner(data, partitioner, n_parts=n_parts, t_slice=t_slice, n_slices=n_slices, axis=axis,
                         start=start, length=length, seed=seed)
    return build_partitions(data, owner, hops=hops, virtual=virtual, flow=flow)


def partition_for_model(data: Data, model: torch.nn.Module, partitioner: str = "slices", *,
                        virtual: str = "one-way", **kwargs) -> list[Data]:
    """`partition` with the halo depth and message flow the backbone declares."""
    return partition(data, partitioner, hops=int(getattr(model, "message_passing_layers", 0)), virtual=virtual,
                     flow=getattr(model, "message_flow", "source_to_target"), **kwargs)


def scatter_predictions(parts: Sequence[Data], preds: Sequence, full: Data | tuple[int, int],
                        strict: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled node/edge blocks of every partition, put back in the full graph's order.

    preds[k] is (node_blocks, edge_blocks) for parts[k] (a `Prediction` works). With strict, a node
    or edge labelled by no partition or by two is a GraphError.
    """
    n, e = (int(full.num_nodes), int(full.edge_index.shape[1])) if isinstance(full, Data) else map(int, full)
    node = edge = None
    node_hits = torch.zeros(n, dtype=torch.long)
    edge_hits = torch.zeros(e, dtype=torch.long)
    for p, (nb, eb) in zip(parts, preds):
        if node is None:
            node = nb.new_zeros((n,) + tuple(nb.shape[1:]))
            edge = eb.new_zeros((e,) + tuple(eb.shape[1:]))
        nm, em = p.node_label_mask, p.edge_label_mask
        node[p.orig_node[nm]] = nb[nm]
        edge[p.orig_edge[em]] = eb[em]
        node_hits.index_add_(0, p.orig_node[nm], torch.ones(int(nm.sum()), dtype=torch.long))
        edge_hits.index_add_(0, p.orig_edge[em], torch.ones(int(em.sum()), dtype=torch.long))
    if node is None:
        raise GraphError("no partitions to scatter")
    if strict and ((node_hits != 1).any() or (edge_hits != 1).any()):
        raise GraphError(f"partitions do not label every block exactly once: {int((node_hits == 0).sum())} nodes and "
                         f"{int((edge_hits == 0).sum())} edges unlabelled, {int((node_hits > 1).sum())} nodes and "
                         f"{int((edge_hits > 1).sum())} edges labelled twice")
    return node, edge
