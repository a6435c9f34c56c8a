"""Training section: partitioned training against the full graph, with the real backbones.

One epoch is what one device does with a structure cut into augmented partitions (seed paper,
Table 3): forward, the harness's masked MSE and backward over every partition in turn, gradients
accumulating, then one Adam step. Each partition's loss is its masked error sum over the count of
every labelled entry of the structure, so the epoch's loss and gradient equal the full graph's
(`epoch`; tests/test_perf_suite.py checks it). The targets are random numbers on the real
orbitals: the cost does not depend on them.

Each configuration (the full graph, then n slabs along the cell's long axis) runs in a fresh
process and reports the fastest of `epochs` epochs in process CPU time (wall time beside it),
the peak RSS, the memory the epochs add above the state before the first one, and the largest
tensor memory autograd saves for one partition's backward (exact, free of allocator noise). The
partitioner table puts slabs, recursive coordinate bisection and METIS side by side for the same
part counts: load imbalance (max / mean edges per partition) and halo atoms per labelled atom.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from zoo.bench.perf.backbones import preset_hparams, untrained
from zoo.bench.perf.family import Family
from zoo.bench.perf.worker import clock, isolated, rss_mb

PARTITIONERS = {"slices": "slabs", "rcb": "RCB", "metis": "METIS"}


def training_graph(structure, info, dtype: torch.dtype = torch.float32, seed: int = 0):
    """The structure's graph with random targets on its real orbitals (y_node, y_edge)."""
    from zoo.data.torch_data import block_masks, structure_to_data
    from zoo.physics.spin import complex_dtype

    data = structure_to_data(structure, info.layout, info.cutoff, dtype, spinful=bool(info.spinful))
    g = torch.Generator().manual_seed(seed)
    ydt = complex_dtype(dtype) if info.spinful else dtype
    node_m, edge_m = block_masks(data)
    data.y_node = torch.randn(node_m.shape, generator=g, dtype=ydt) * node_m
    data.y_edge = torch.randn(edge_m.shape, generator=g, dtype=ydt) * edge_m
    return data


def label_count(batches: Sequence) -> float:
    """Labelled real-orbital entries over all partitions (each block is labelled by exactly one)."""
    from zoo.bench.losses import label_masks

    return float(sum(int(m.sum()) for b in batches for m in label_masks(b)))


class SavedTensors:
    """Bytes autograd saves for backward, per partition (`next()` before each forward)."""

    def __init__(self) -> None:
        self.per_part = [0]

    def next(self) -> None:
        self.per_part.append(0)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        self.per_part[-1] += t.untyped_storage().nbytes()
        return t

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)


def epoch(model: torch.nn.Module, batches: Sequence, count: float, saved: SavedTensors | None = None) -> float:
    """Forward, masked MSE and backward over every batch in turn; returns the loss. Gradients
    accumulate: sum over partitions of (masked error sum / `count`) is the full graph's masked MSE."""
    from zoo.bench.losses import LossSpec, masked_sums

    spec = LossSpec("mse")
    total = 0.0
    for b in batches:
        if saved is not None:
            saved.next()
            with saved.hooks():
                s, _ = masked_sums(spec, model(b), b)
        else:
            s, _ = masked_sums(spec, model(b), b)
        loss = s / count
        loss.backward()
        total += float(loss.detach())
    return total


def partition_graph(data, model, partitioner: str, n_parts: int) -> list:
    """Augmented partitions with the backbone's halo depth and message flow (slabs along the long axis)."""
    from zoo.data.partition import partition_for_model

    if partitioner == "slices":
        return partition_for_model(data, model, "slices", n_slices=n_parts)
    return partition_for_model(data, model, partitioner, n_parts=n_parts)


def halo_per_labelled(summary: dict) -> float:
    """Halo (virtual) atoms computed per labelled atom, over all partitions."""
    labelled = summary["labelled_node_coverage"] * summary["nodes_full"]
    return summary["nodes_total"] / labelled - 1.0


def train_job(spec: dict) -> dict:
    """Worker side: `epochs` epochs of one configuration (parts 0 = the full graph)."""
    from zoo.bench.run import dataset_info_from_json
    from zoo.data.partition import partition_stats
    from zoo.data.structure_io import read_structure
    from zoo.data.torch_data import collate

    info = dataset_info_from_json(spec["info"])
    model = untrained(spec["model"], info, spec["hparams"]).train()
    data = training_graph(read_structure(spec["structure"]), info)
    stats = None
    with clock() as cut:
        if spec["parts"]:
            graphs = partition_graph(data, model, "slices", int(spec["parts"]))
            stats = partition_stats(graphs, data.num_nodes, data.edge_index.shape[1])["summary"]
        else:
            graphs = [data]
    batches = [collate([g]) for g in graphs]
    count = label_count(batches)
    del graphs, data
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    start = rss_mb()
    saved = SavedTensors()
    cpu, wall, loss = [], [], 0.0
    for _ in range(int(spec["epochs"])):
        opt.zero_grad(set_to_none=True)
        with clock() as c:
            loss = epoch(model, batches, count, saved)
            opt.step()
        cpu.append(c["cpu"])
        wall.append(c["wall"])
    return {"cpu_epoch_s": min(cpu), "wall_epoch_s": min(wall), "start_rss_mb": start,
            "saved_mb": max(saved.per_part) / 2**20, "partition_s": cut["wall"], "loss": loss, "stats": stats,
            "hops": int(model.message_passing_layers)}


def partitioner_table(data, model, parts: Sequence[int],
                      partitioners: Sequence[str] = tuple(PARTITIONERS)) -> list[dict]:
    """One row per part count: imbalance and halo atoms per labelled atom of each partitioner
    (a partitioner that cannot run here, e.g. METIS without pymetis, says why in its cells)."""
    from zoo.data.partition import partition_stats
    from zoo.errors import ZooError

    rows = []
    for n in parts:
        row: dict = {"parts": int(n)}
        for p in partitioners:
            label = PARTITIONERS[p]
            try:
                s = partition_stats(partition_graph(data, model, p, n), data.num_nodes,
                                    data.edge_index.shape[1])["summary"]
            except ZooError as exc:  # METIS without pymetis, an empty slab, more parts than atoms
                row[f"{label} imbalance"] = row[f"{label} halo/labelled"] = f"n/a: {str(exc).split(' (')[0]}"
                continue
            row[f"{label} imbalance"] = s["imbalance"]
            row[f"{label} halo/labelled"] = halo_per_labelled(s)
            row[f"{label} edge overhead"] = s["edge_overhead"]
        rows.append(row)
    return rows


def run_training(models: Sequence[str], family: Family, structure: Path, *, preset: str, threads: int,
                 max_seconds: float | None, cutoff: float, slices: Sequence[int], partitioners: Sequence[str],
                 epochs: int, log: Callable[[str], None]) -> dict:
    """{'rows': one per (model, configuration), 'partitioners': a table per halo depth and flow}, on the
    training cell `structure` (a rod, `family.slab_repeat`).

    A configuration whose estimated time (the full graph's epoch x its edge overhead x epochs)
    exceeds `max_seconds` is skipped; so is every configuration of a model whose full graph failed."""
    from dataclasses import replace

    from zoo.bench.run import dataset_info_json
    from zoo.data.structure_io import read_structure
    from zoo.models.registry import model_class

    st = read_structure(structure)
    fam = replace(family, cutoff=cutoff)
    rows, tables = [], {}
    graphs: dict[bool, object] = {}
    for name in models:
        spin = bool(model_class(name).spinful)
        info = fam.info(spinful=spin)
        hp = preset_hparams(name, preset)
        model = untrained(name, info, hp)
        key = (int(model.message_passing_layers), getattr(model, "message_flow", "source_to_target"))
        if spin not in graphs:
            graphs[spin] = training_graph(st, info)
        if key not in tables:
            tables[key] = {"hops": key[0], "flow": key[1], "models": [],
                           "partitioners": [PARTITIONERS[p] for p in partitioners],
                           "rows": partitioner_table(graphs[spin], model, slices, partitioners)}
        tables[key]["models"].append(name)
        overhead = {r["parts"]: r.get("slabs edge overhead", 1.0) for r in tables[key]["rows"]}
        base = {"job": "train", "model": name, "hparams": hp, "info": dataset_info_json(info),
                "structure": str(structure), "epochs": int(epochs)}
        full = None
        for n in [0, *slices]:
            row = {"model": name, "config": "full graph" if n == 0 else f"{n} slab" + "s" * (n > 1), "parts": n}
            if full is not None and full["status"] != "ok":
                rows.append({**row, "status": "skipped (the full graph did not run)"})
                continue
            est = full["wall_epoch_s"] * overhead.get(n, 1.0) * epochs if full else 0.0
            if max_seconds and est > max_seconds:
                rows.append({**row, "status": f"skipped (~{est:.0f} s > --max-seconds {max_seconds:g})"})
                continue
            res = isolated({**base, "parts": n}, threads, max_seconds)
            row.update(res)
            rows.append(row)
            if n == 0:
                full = res
            if res["status"] == "ok":
                log(f"training {name} {row['config']}: {res['cpu_epoch_s']:.2f} s CPU/epoch, "
                    f"peak {res['peak_rss_mb']:.0f} MB")
            else:
                log(f"training {name} {row['config']}: {res['status']}")
        _ratios([r for r in rows if r["model"] == name])
    return {"rows": rows, "partitioners": list(tables.values())}


def _ratios(rows: list[dict]) -> None:
    """Time and memory of each configuration over the full graph's (below 1: cheaper than the full graph)."""
    full = next((r for r in rows if r["parts"] == 0 and r.get("status") == "ok"), None)
    for r in rows:
        if full is None or r.get("status") != "ok":
            continue
        r["time_ratio"] = r["cpu_epoch_s"] / full["cpu_epoch_s"]
        r["memory_ratio"] = r["peak_rss_mb"] / full["peak_rss_mb"]
        r["saved_ratio"] = r["saved_mb"] / full["saved_mb"] if full["saved_mb"] else float("nan")
        s = r.get("stats") or {}
        r["halo_per_labelled"] = halo_per_labelled(s) if s else 0.0
        r["edge_overhead"] = s.get("edge_overhead", 1.0)
        r["imbalance"] = s.get("imbalance", 1.0)
