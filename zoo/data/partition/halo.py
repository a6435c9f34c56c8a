"""Partitions with k-hop halos of virtual nodes, built from an ownership array.

The rule (see docs/partitioning.md for the derivation). Let L be the atoms a partition owns
and K the message-passing layers of the backbone (`hops`).

* Labelled outputs: node i for i in L; edge (i, j, s) for i in L (the row-0 atom owns the
  edge, so over all partitions every node and every edge block is labelled exactly once).
* An edge output reads the final features of both endpoints, so the atoms whose layer-K
  features must be exact are X = L + N(L). A node's layer-t feature is exact when its
  layer-(t-1) neighbourhood is complete and exact; by induction every atom at graph distance
  d <= K - t from X has an exact layer-t feature if every atom at distance <= K - 1 from X
  (the *inner* set) has all its incoming edges. Hence: nodes = atoms within K hops of X
  (K + 1 rings around L); edges = labelled edges, their reverses, and every edge whose
  receiving atom is inner. The outermost ring only sends.
* `virtual="one-way"` keeps exactly those edges, oriented by the backbone's message flow
  ("source_to_target": messages go edge_index[0] -> edge_index[1] and are summed at row 1,
  torch-geometric's default and the seed's convention; "target_to_source": summed at row 0).
  `"two-way"` keeps every edge with an inner endpoint (exact for either flow), and `"none"`
  keeps L and the edges among L only (the seed's raw-partition ablation; cross edges are then
  labelled nowhere).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch_geometric.data import Data

from zoo.errors import GraphError

VIRTUAL_MODES = ("none", "one-way", "two-way")
FLOWS = ("source_to_target", "target_to_source")


def atom_adjacency(n: int, edge_index: np.ndarray) -> sp.csr_matrix:
    """Symmetric atom-level adjacency (images merged): rings are counted between atoms, since a
    translation-invariant backbone gives every image of an atom the same features."""
    ei = np.asarray(edge_index)
    a = sp.coo_matrix((np.ones(ei.shape[1], dtype=np.int8), (ei[0], ei[1])), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.int8)
    return a


def ring_distance(adj: sp.csr_matrix, seed: np.ndarray, max_ring: int) -> np.ndarray:
    """[N] hop distance from the seed set (bool mask), or -1 beyond max_ring."""
    dist = np.full(adj.shape[0], -1, dtype=np.int64)
    dist[seed] = 0
    frontier = seed.copy()
    for r in range(1, max_ring + 1):
        reached = (adj @ frontier.astype(np.int8)) > 0
        new = reached & (dist < 0)
        if not new.any():
            break
        dist[new] = r
        frontier = new
    return dist


def _take(value, idx: torch.Tensor):
    return value.index_select(0, idx)


def subgraph(data: Data, nodes: np.ndarray, edges: np.ndarray, node_label: np.ndarray,
             edge_label: np.ndarray) -> Data:
    """Data restricted to `nodes` (original ids, in order) and `edges` (original ids, in order).

    Node- and edge-level tensors are selected (edge_index remapped); the cell, positions and
    integer image shifts are kept, so every edge vector equals the full graph's.
    """
    n, e = int(data.num_nodes), int(data.edge_index.shape[1])
    nodes_t = torch.as_tensor(nodes, dtype=torch.long)
    edges_t = torch.as_tensor(edges, dtype=torch.long)
    local = torch.full((n,), -1, dtype=torch.long)
    local[nodes_t] = torch.arange(len(nodes_t))
    out = Data()
    for key, value in data.items():
        if key == "edge_index":
            ei = local[value[:, edges_t]]
            if (ei < 0).any():
                raise GraphError("internal: a partition edge points to an atom outside the partition")
            out.edge_index = ei
        elif key in ("num_nodes",):
            continue
        elif isinstance(value, torch.Tensor) and value.dim() > 0 and key != "cell":
            is_edge = "edge" in key and value.shape[0] == e
            if is_edge:
                out[key] = _take(value, edges_t)
            elif value.shape[0] == n and "edge" not in key:
                out[key] = _take(value, nodes_t)
            else:
                out[key] = value
        else:
            out[key] = value
    base_node = data.node_label_mask[nodes_t] if "node_label_mask" in data else True
    base_edge = data.edge_label_mask[edges_t] if "edge_label_mask" in data else True
    out.node_label_mask = torch.as_tensor(node_label, dtype=torch.bool) & base_node
    out.edge_label_mask = torch.as_tensor(edge_label, dtype=torch.bool) & base_edge
    out.orig_node = nodes_t
    out.orig_edge = edges_t
    out.num_nodes = len(nodes_t)
    return out


def build_partitions(data: Data, owner: np.ndarray, hops: int = 0, virtual: str = "one-way",
                     flow: str = "source_to_target") -> list[Data]:
    """One Data per partition id in owner (ids 0..P-1; -1 = labelled nowhere). See module doc."""
    if virtual not in VIRTUAL_MODES:
        raise GraphError(f"virtual must be one of {VIRTUAL_MODES}, got {virtual!r}")
    if flow not in FLOWS:
        raise GraphError(f"flow must be one of {FLOWS}, got {flow!r}")
    if int(hops) < 0:
        raise GraphError(f"hops must be >= 0, got {hops}")
    hops = int(hops)
    n = int(data.num_nodes)
    ei = data.edge_index.cpu().numpy()
    owner = np.asarray(owner, dtype=np.int64)
    if owner.shape != (n,):
        raise GraphError(f"owner has shape {owner.shape}, expected ({n},)")
    adj = atom_adjacency(n, ei)
    send, recv = (ei[0], ei[1]) if flow == "source_to_target" else (ei[1], ei[0])
    parts = []
    for p in range(int(owner.max()) + 1 if len(owner) else 0):
        own = owner == p
        if not own.any():
            raise GraphError(f"partition {p} owns no atom")
        if virtual == "none":
            dist = np.where(own, 0, -1)
            keep_e = own[ei[0]] & own[ei[1]]
        else:
            # distance from L; X = L + N(L) is ring <= 1, inner is ring <= K, nodes ring <= K + 1
            dist = ring_distance(adj, own, hops + 1)
            in_node = dist >= 0
            inner = in_node & (dist <= hops)
            lab = own[ei[0]] | own[ei[1]]  # labelled edges and their reverses
            if virtual == "one-way":
                keep_e = lab | inner[recv]
            else:
                keep_e = lab | inner[ei[0]] | inner[ei[1]]
            keep_e &= in_node[ei[0]] & in_node[ei[1]]
        nodes = np.flatnonzero(dist >= 0)
        nodes = nodes[np.lexsort((nodes, dist[nodes]))]  # labelled first, then ring by ring
        edges = np.flatnonzero(keep_e)
        edge_lab = own[ei[0, edges]]
        edges = np.concatenate([edges[edge_lab], edges[~edge_lab]])  # labelled edges first
        part = subgraph(data, nodes, edges, own[nodes], own[ei[0, edges]])
        part.ring = torch.as_tensor(dist[nodes], dtype=torch.long)
        part.part_id = p
        part.halo_hops = hops
        parts.append(part)
    return parts
