"""Throughput section: edges per CPU-second of each backbone, forward and forward + backward.

One structure (by default the smallest supercell of the base cell wider than 2 x cutoff: the
a-hfo2 small cell itself at its 5 A), the full graph, one fresh process per backbone: a first
forward + backward warms caches up, then the fastest of `repeats` forwards (no_grad, eval mode)
and of `repeats` forward + masked-MSE + backward passes (train mode). CPU seconds, so the figure
does not depend on how busy the machine is; with the parameter count beside it, the table says
which architecture is cheapest per edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from zoo.bench.perf.backbones import n_parameters, preset_hparams, untrained
from zoo.bench.perf.worker import clock, isolated


def throughput_job(spec: dict) -> dict:
    """Worker side: fastest forward and forward + backward of one backbone on one graph."""
    from zoo.bench.perf.training import epoch, label_count, training_graph
    from zoo.bench.run import dataset_info_from_json
    from zoo.data.structure_io import read_structure
    from zoo.data.torch_data import collate

    info = dataset_info_from_json(spec["info"])
    model = untrained(spec["model"], info, spec["hparams"])
    batch = collate([training_graph(read_structure(spec["structure"]), info)])
    count = label_count([batch])

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        epoch(model, [batch], count)

    model.train()
    train_step()  # warm-up: first-call caches, allocator
    fwd, fwd_bwd = [], []
    for _ in range(int(spec["repeats"])):
        model.eval()
        with torch.no_grad(), clock() as c:
            model(batch)
        fwd.append(c["cpu"])
        model.train()
        with clock() as c:
            train_step()
        fwd_bwd.append(c["cpu"])
    edges = int(batch.edge_index.shape[1])
    return {"params": n_parameters(model), "atoms": int(batch.num_nodes), "edges": edges,
            "forward_s": min(fwd), "forward_backward_s": min(fwd_bwd),
            "forward_edges_per_s": edges / min(fwd), "forward_backward_edges_per_s": edges / min(fwd_bwd)}


def run_throughput(models: Sequence[str], family, structure: Path, *, preset: str, threads: int,
                   max_seconds: float | None, cutoff: float, repeats: int, log: Callable[[str], None]) -> dict:
    """{'rows': one per backbone}, with the cost per edge relative to the cheapest backbone."""
    from dataclasses import replace

    from zoo.bench.run import dataset_info_json
    from zoo.models.registry import model_class

    fam = replace(family, cutoff=cutoff)
    rows = []
    for name in models:
        info = fam.info(spinful=bool(model_class(name).spinful))
        res = isolated({"job": "throughput", "model": name, "hparams": preset_hparams(name, preset),
                        "info": dataset_info_json(info), "structure": str(structure), "repeats": int(repeats)},
                       threads, max_seconds)
        rows.append({"model": name, **res})
        log(f"throughput {name}: " + (f"{res['forward_backward_edges_per_s']:.0f} edges/s forward + backward"
                                      if res["status"] == "ok" else res["status"]))
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        best = max(r["forward_backward_edges_per_s"] for r in ok)
        for r in ok:
            r["cost_vs_cheapest"] = best / r["forward_backward_edges_per_s"]
    return {"rows": rows}
