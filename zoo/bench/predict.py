"""Prediction with a trained checkpoint: rebuild the model from the checkpoint's metadata and
write the hermitized H (H_ji(-R) = H_ij(R)^dagger exactly, whatever the backbone's raw output) as
ragged flat blocks (the dataset format's layout) to an .npz file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from zoo.data.format import atomic_write
from zoo.errors import DataError, GraphError, ZooError


def model_from_checkpoint(path: str | Path, best: bool = True):
    """(model in eval mode, DatasetInfo, dtype) from a `zoo bench` checkpoint."""
    from zoo.bench.run import dataset_info_from_json
    from zoo.bench.standardize import for_checkpoint
    from zoo.bench.trainer import DTYPES, load_checkpoint
    from zoo.models.registry import build_model

    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta") or {}
    if "model" not in meta or "info" not in meta:
        raise ZooError(f"{path}: checkpoint lacks the model metadata zoo needs to rebuild the model")
    info = dataset_info_from_json(meta["info"])
    model = for_checkpoint(build_model(meta["model"], info, **meta.get("hparams", {})), meta)
    dtype = DTYPES[ckpt.get("train_config", {}).get("dtype", "float32")]
    model = model.to(dtype)
    state = ckpt.get("best_model") if best and ckpt.get("best_model") is not None else ckpt["model"]
    model.load_state_dict(state)
    model.eval()
    return model, info, dtype


def predict_blocks(model, data, max_atoms_per_part: int = 2000,
                   hermitize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(node_blocks, edge_blocks) of the full graph, on the CPU, in the full graph's order.

    Large structures stream augmented partitions so memory stays bounded: each partition carries
    the halo its backbone needs (`message_passing_layers`), so the raw result equals one
    full-graph pass. With `hermitize` the result equals `symmetrize_prediction` of that pass:
    H_ii <- (H_ii + H_ii^dagger)/2 and H_ij(R) <- (H_ij(R) + H_ji(-R)^dagger)/2, so
    H_ji(-R) = H_ij(R)^dagger exactly. An edge's partner (j, i, -R) may be labelled by another
    partition, so hermitizing each partition on its own would be wrong at the cuts; a pair is
    hermitized once both of its halves are known (see `_HermitizingScatter`).
    """
    from zoo.data.partition import partition
    from zoo.models.contract import symmetrize_prediction

    n = int(data.num_nodes)
    n_parts = -(-n // max(1, int(max_atoms_per_part)))
    dev = next(iter(model.parameters())).device
    with torch.no_grad():
        if n_parts <= 1:
            d = data.to(dev)
            pred = model(d)
            if hermitize:
                pred = symmetrize_prediction(pred, d)
            return pred.node_blocks.cpu(), pred.edge_blocks.cpu()
        parts = partition(data.cpu(), "rcb", n_parts=n_parts, hops=int(getattr(model, "message_passing_layers", 0)),
                          virtual="one-way", flow=getattr(model, "message_flow", "source_to_target"),
                          allow_self_images=True)  # explicit image shifts: small periodic cells are fine
        out = _HermitizingScatter(data, hermitize)
        for part in parts:
            pr = model(part.to(dev))
            out.add(part, pr.node_blocks.cpu(), pr.edge_blocks.cpu())
        return out.result()


class _HermitizingScatter:
    """Labelled blocks of streamed partitions put back in the full graph's order, hermitized pairwise.

    On-site blocks are hermitized as they arrive. Edge e = (i, j, R) and its partner
    r = (j, i, -R) are averaged, H_e <- (H_e + H_r^dagger)/2 and H_r <- H_e^dagger, at the moment
    the second of the two arrives: in the same partition, or when a later partition brings the
    partner of an edge labelled earlier. The only buffer is the full output array, which `zoo
    predict` writes anyway. Edges whose partner is not in the graph stay raw, as in
    `symmetrize_prediction`.
    """

    def __init__(self, full, hermitize: bool = True):
        from zoo.models.contract import reverse_edges

        self.n, self.e = int(full.num_nodes), int(full.edge_index.shape[1])
        self.hermitize = hermitize
        self.rev = reverse_edges(full.edge_index.cpu(), full.edge_shift.cpu(), self.n) if hermitize else None
        self.node: torch.Tensor | None = None
        self.edge: torch.Tensor | None = None
        self.node_hits = torch.zeros(self.n, dtype=torch.long)
        self.edge_hits = torch.zeros(self.e, dtype=torch.long)
        self._here = torch.zeros(self.e, dtype=torch.bool)  # scratch: edges labelled by the current partition

    def add(self, part, node_blocks: torch.Tensor, edge_blocks: torch.Tensor) -> None:
        if self.node is None:
            self.node = node_blocks.new_zeros((self.n,) + tuple(node_blocks.shape[1:]))
            self.edge = edge_blocks.new_zeros((self.e,) + tuple(edge_blocks.shape[1:]))
        nm, em = part.node_label_mask.cpu(), part.edge_label_mask.cpu()
        ids_n, ids_e = part.orig_node.cpu()[nm], part.orig_edge.cpu()[em]
        nb = node_blocks[nm]
        self.node[ids_n] = 0.5 * (nb + nb.transpose(-1, -2).conj()) if self.hermitize else nb
        self.node_hits.index_add_(0, ids_n, torch.ones_like(ids_n))
        self.edge[ids_e] = edge_blocks[em]
        if self.hermitize:
            r = self.rev[ids_e]
            has = r >= 0
            rc = r.clamp(min=0)
            earlier = has & (self.edge_hits[rc] > 0)  # partner labelled by a previous partition
            self._here[ids_e] = True
            within = has & self._here[rc] & (ids_e < r)  # both halves here: take each pair once
            self._here[ids_e] = False
            a, b = ids_e[earlier | within], r[earlier | within]
            h = 0.5 * (self.edge[a] + self.edge[b].transpose(-1, -2).conj())
            self.edge[a] = h
            self.edge[b] = h.transpose(-1, -2).conj()
        self.edge_hits.index_add_(0, ids_e, torch.ones_like(ids_e))

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.node is None:
            raise GraphError("no partitions to scatter")
        if (self.node_hits != 1).any() or (self.edge_hits != 1).any():
            raise GraphError(f"partitions do not label every block exactly once: {int((self.node_hits == 0).sum())} "
                             f"nodes and {int((self.edge_hits == 0).sum())} edges unlabelled, "
                             f"{int((self.node_hits > 1).sum())} nodes and {int((self.edge_hits > 1).sum())} edges "
                             f"labelled twice")
        return self.node, self.edge


def predict_file(checkpoint: str | Path, structure: str | Path, output: str | Path, device: str = "auto",
                 best: bool = True, max_atoms_per_part: int = 2000,
                 hermitize: bool = True) -> tuple[Path, int, int, float]:
    """Predict H for a structure file; returns (output path, atoms, edges, seconds).

    The blocks written are hermitized (see `predict_blocks`); `hermitize=False` writes the
    backbone's raw output instead (diagnostics). The .npz records which in `hermitized`.
    """
    from zoo.bench.trainer import resolve_device
    from zoo.data.structure_io import read_structure
    from zoo.data.torch_data import structure_to_data
    from zoo.physics.assembly import unpad_blocks

    st = read_structure(structure)
    model, info, dtype = model_from_checkpoint(checkpoint, best)
    model = model.to(resolve_device(device))
    data = structure_to_data(st, info.layout, info.cutoff, dtype, spinful=info.spinful)
    t = time.perf_counter()
    node_blocks, edge_blocks = predict_blocks(model, data, max_atoms_per_part, hermitize=hermitize)
    seconds = time.perf_counter() - t
    z = st.numbers
    ei = data.edge_index.cpu().numpy()
    wide = torch.complex128 if node_blocks.is_complex() else torch.float64  # keep a spinful H's imaginary part
    sp = bool(info.spinful)  # spinful blocks: docs/adr/0006 layout, 2n x 2n per block
    h_on = unpad_blocks(node_blocks.to(wide).numpy(), info.layout.index, z, z, spinful=sp)
    h_off = unpad_blocks(edge_blocks.to(wide).numpy(), info.layout.index, z[ei[0]], z[ei[1]], spinful=sp)
    out = Path(output)
    arrays = {"numbers": z, "positions": st.positions, "cell": st.cell, "pbc": st.pbc,
              "edge_index": ei.T.copy(), "edge_shift": data.edge_shift.cpu().numpy().round().astype(np.int64),
              "h_onsite": h_on, "h_offsite": h_off, "norb": info.layout.basis.norb_per_atom(z) * (2 if sp else 1),
              "spinful": np.asarray(sp),
              "basis": np.asarray(json.dumps(info.layout.basis.to_json())), "units": np.asarray("hartree"),
              "hermitized": np.asarray(bool(hermitize))}

    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out, _write, suffix=".npz")
    return out, st.n_atoms, int(ei.shape[1]), seconds
