"""`zoo perf --profile MODEL`: where one forward + backward of a backbone spends its CPU time.

torch.profiler (CPU activities) around one forward, masked MSE and backward on a supercell of the
family's base cell (`repeat`), after one untimed pass (first-call caches). Operators are ranked by self CPU
time, the time spent in the operator itself and not in the operators it calls, which is where a
hot spot shows.
"""

from __future__ import annotations

from typing import Sequence

import torch

from zoo.bench.perf.backbones import n_parameters, preset_hparams, untrained
from zoo.bench.perf.family import Family


def profile_backbone(name: str, family: Family, repeat: Sequence[int], *, preset: str, cutoff: float, top: int = 25,
                     threads: int = 1) -> dict:
    """{'model', 'atoms', 'edges', 'params', 'self_cpu_total_ms', 'ops': top rows by self CPU time}."""
    from dataclasses import replace

    from torch.profiler import ProfilerActivity, profile

    from zoo.bench.perf.training import epoch, label_count, training_graph
    from zoo.data.big import repeat_structure
    from zoo.data.torch_data import collate
    from zoo.models.registry import model_class

    torch.set_num_threads(int(threads))
    fam = replace(family, cutoff=cutoff)
    info = fam.info(spinful=bool(model_class(name).spinful))
    st = repeat_structure(family.cell, repeat)
    batch = collate([training_graph(st, info)])
    model = untrained(name, info, preset_hparams(name, preset)).train()
    count = label_count([batch])

    def step() -> None:
        model.zero_grad(set_to_none=True)
        epoch(model, [batch], count)

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = [{"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1e3, "self_pct": 100 * e.self_cpu_time_total / total,
            "cpu_total_ms": e.cpu_time_total / 1e3, "calls": int(e.count)} for e in events[:top]]
    return {"model": name, "preset": preset, "atoms": st.n_atoms, "edges": int(batch.edge_index.shape[1]),
            "cutoff": cutoff, "params": n_parameters(model), "self_cpu_total_ms": total / 1e3, "ops": ops}
