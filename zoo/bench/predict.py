"""Prediction with a trained checkpoint: rebuild the model from the checkpoint's metadata and
write H as ragged flat blocks (the dataset format's layout) to an .npz file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from zoo.data.format import atomic_write
from zoo.errors import DataError, ZooError


def model_from_checkpoint(path: str | Path, best: bool = True):
    """(model in eval mode, DatasetInfo, dtype) from a `zoo bench` checkpoint."""
    from zoo.bench.run import dataset_info_from_json
    from zoo.bench.trainer import DTYPES, load_checkpoint
    from zoo.models.registry import build_model

    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta") or {}
    if "model" not in meta or "info" not in meta:
        raise ZooError(f"{path}: checkpoint lacks the model metadata zoo needs to rebuild the model")
    info = dataset_info_from_json(meta["info"])
    model = build_model(meta["model"], info, **meta.get("hparams", {}))
    dtype = DTYPES[ckpt.get("train_config", {}).get("dtype", "float32")]
    model = model.to(dtype)
    state = ckpt.get("best_model") if best and ckpt.get("best_model") is not None else ckpt["model"]
    model.load_state_dict(state)
    model.eval()
    return model, info, dtype


def predict_blocks(model, data, max_atoms_per_part: int = 2000):
    """(node_blocks, edge_blocks) of the full graph, streaming augmented partitions when the
    structure is large so memory stays bounded: each partition carries the halo its backbone
    needs (`message_passing_layers`), so the result equals one full-graph pass."""
    from zoo.data.partition import partition, scatter_predictions

    n = int(data.num_nodes)
    n_parts = -(-n // max(1, int(max_atoms_per_part)))
    dev = next(iter(model.parameters())).device
    with torch.no_grad():
        if n_parts <= 1:
            pred = model(data.to(dev))
            return pred.node_blocks.cpu(), pred.edge_blocks.cpu()
        parts = partition(data.cpu(), "rcb", n_parts=n_parts, hops=int(getattr(model, "message_passing_layers", 0)),
                          virtual="one-way", flow=getattr(model, "message_flow", "source_to_target"),
                          allow_self_images=True)  # explicit image shifts: small periodic cells are fine
        preds = []
        for part in parts:
            pr = model(part.to(dev))
            preds.append((pr.node_blocks.cpu(), pr.edge_blocks.cpu()))
        return scatter_predictions(parts, preds, data)


def predict_file(checkpoint: str | Path, structure: str | Path, output: str | Path, device: str = "auto",
                 best: bool = True, max_atoms_per_part: int = 2000) -> tuple[Path, int, int, float]:
    """Predict H for a structure file; returns (output path, atoms, edges, seconds)."""
    from zoo.bench.trainer import resolve_device
    from zoo.data.structure_io import read_structure
    from zoo.data.torch_data import structure_to_data
    from zoo.physics.assembly import unpad_blocks

    st = read_structure(structure)
    model, info, dtype = model_from_checkpoint(checkpoint, best)
    model = model.to(resolve_device(device))
    data = structure_to_data(st, info.layout, info.cutoff, dtype)
    t = time.perf_counter()
    node_blocks, edge_blocks = predict_blocks(model, data, max_atoms_per_part)
    seconds = time.perf_counter() - t
    z = st.numbers
    ei = data.edge_index.cpu().numpy()
    h_on = unpad_blocks(node_blocks.double().numpy(), info.layout.index, z, z)
    h_off = unpad_blocks(edge_blocks.double().numpy(), info.layout.index, z[ei[0]], z[ei[1]])
    out = Path(output)
    arrays = {"numbers": z, "positions": st.positions, "cell": st.cell, "pbc": st.pbc,
              "edge_index": ei.T.copy(), "edge_shift": data.edge_shift.cpu().numpy().round().astype(np.int64),
              "h_onsite": h_on, "h_offsite": h_off, "norb": info.layout.basis.norb_per_atom(z),
              "basis": np.asarray(json.dumps(info.layout.basis.to_json())), "units": np.asarray("hartree")}

    def _write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(out, _write, suffix=".npz")
    return out, st.n_atoms, int(ei.shape[1]), seconds
