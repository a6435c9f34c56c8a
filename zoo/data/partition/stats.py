"""Partition statistics: labelled vs virtual nodes and edges, overhead, imbalance."""

from __future__ import annotations

from typing import Sequence

from torch_geometric.data import Data


def partition_stats(parts: Sequence[Data], n_nodes: int | None = None, n_edges: int | None = None) -> dict:
    """Per-partition counts and the summary a user sizes a run by.

    rows: part, labelled/virtual nodes and edges, total edges. summary: node and edge overhead
    (sum over partitions of what is computed / the full graph's count; 1.0 = no duplication),
    virtual fractions, and imbalance = max / mean total edges (1.0 = perfectly balanced).
    """
    rows = []
    for k, p in enumerate(parts):
        ln = int(p.node_label_mask.sum())
        le = int(p.edge_label_mask.sum())
        nn, ne = int(p.num_nodes), int(p.edge_index.shape[1])
        rows.append({"part": int(getattr(p, "part_id", k)), "labelled_nodes": ln, "virtual_nodes": nn - ln,
                     "labelled_edges": le, "virtual_edges": ne - le, "nodes": nn, "edges": ne})
    tot_n = sum(r["nodes"] for r in rows)
    tot_e = sum(r["edges"] for r in rows)
    lab_n = sum(r["labelled_nodes"] for r in rows)
    lab_e = sum(r["labelled_edges"] for r in rows)
    full_n = n_nodes if n_nodes is not None else lab_n
    full_e = n_edges if n_edges is not None else lab_e
    edges = [r["edges"] for r in rows]
    mean_e = tot_e / len(rows) if rows else 0.0
    summary = {
        "parts": len(rows),
        "nodes_full": full_n, "edges_full": full_e,
        "nodes_total": tot_n, "edges_total": tot_e,
        "node_overhead": tot_n / full_n if full_n else float("nan"),
        "edge_overhead": tot_e / full_e if full_e else float("nan"),
        "virtual_node_fraction": 1 - lab_n / tot_n if tot_n else 0.0,
        "virtual_edge_fraction": 1 - lab_e / tot_e if tot_e else 0.0,
        "imbalance": max(edges) / mean_e if mean_e else float("nan"),
        "max_edges": max(edges) if edges else 0,
        "labelled_node_coverage": lab_n / full_n if full_n else float("nan"),
        "labelled_edge_coverage": lab_e / full_e if full_e else float("nan"),
    }
    return {"rows": rows, "summary": summary}
