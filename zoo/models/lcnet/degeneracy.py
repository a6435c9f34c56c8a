"""Measure what `degenerate_frames` does on a dataset: ties, rotation error, forward cost.

    python -m zoo.models.lcnet.degeneracy [--dataset c-hfo2] [--preset cpu] [--extra]

For every structure of the dataset (and, with --extra, the unrattled 2x2x2 m-HfO2 cell and a
perfect 2x2x2 fluorite HfO2 cell at the dataset's cutoff): the atoms and pairs whose frame needs
a tie-break (`global_info`), the candidate frames frame averaging adds, the rotation error
max |D H(x) D^T - H(Q x)| in meV over every real entry of every block (float64, an untrained,
randomly initialised model of the preset, one random rotation per structure) for both rules, and
the forward time of `average` over `algorithm1` (float32, median of 5, no_grad; "cold" rebuilds
the frames and LC words, "cached" reuses them as training steps do).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from zoo.data.format import Dataset, Structure
from zoo.errors import DataError
from zoo.data.torch_data import DatasetInfo, block_masks, record_to_data, structure_to_data
from zoo.models.registry import build_model
from zoo.physics.units import HARTREE_EV
from zoo.physics.wigner import random_rotation, wigner_D_shells


def _models(info: DatasetInfo, preset: str, dtype: torch.dtype, **kw):
    out = {}
    for rule in ("algorithm1", "average"):
        torch.manual_seed(0)  # the same parameters for both rules
        out[rule] = build_model("lcnet", info, preset=preset, degenerate_frames=rule, **kw).to(dtype).eval()
    return out


def _rot_err_mev(model, data, info, Q) -> float:
    dq = data.clone()
    dq.pos, dq.cell = data.pos @ Q.T, data.cell @ Q.T
    with torch.no_grad():
        model._cache.clear()
        p = model(data)
        model._cache.clear()
        pq = model(dq)
    D = wigner_D_shells(info.layout.slot_ls, Q)
    nm, em = block_masks(data)
    err = torch.cat([((D @ p.node_blocks @ D.T - pq.node_blocks)[nm]).abs(),
                     ((D @ p.edge_blocks @ D.T - pq.edge_blocks)[em]).abs()]).max()
    return float(err) * 1000.0 * HARTREE_EV


def _time(model, data, cold: bool, reps: int = 5) -> float:
    ts = []
    with torch.no_grad():
        model._cache.clear()
        model(data)
        for _ in range(reps):
            if cold:
                model._cache.clear()
            t = time.perf_counter()
            model(data)
            ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def measure(name: str, data64, data32, info: DatasetInfo, preset: str, seed: int, **kw) -> dict:
    m64, m32 = _models(info, preset, torch.float64, **kw), _models(info, preset, torch.float32, **kw)
    fr = m64["average"].frames(data64)
    nc, pc = fr.node.cand, fr.pair.cand
    pair_tied = pc.tied if pc.owner.numel() else torch.zeros_like(fr.pair.global_info)
    row = dict(name=name, atoms=int(data64.num_nodes), onsite_tied=int(nc.tied.sum()) if nc.owner.numel() else 0,
               pairs=int(fr.pair.R.shape[0]), pairs_tied=int(pair_tied.sum()), edges=int(data64.edge_index.shape[1]),
               edges_tied=int(pair_tied[fr.pair.pair_of].sum()), cand_node=int(nc.owner.numel()),
               cand_pair=int(pc.owner.numel()))
    Q = random_rotation(seed)
    for rule in ("algorithm1", "average"):
        row[f"err_{rule}"] = _rot_err_mev(m64[rule], data64, info, Q)
    for mode in ("cold", "cached"):
        t1, t2 = (_time(m32[r], data32, mode == "cold") for r in ("algorithm1", "average"))
        row[f"t_{mode}"] = (t1, t2)
    return row


def _open(name_or_path: str) -> Dataset:
    """A dataset directory, or a catalogue name that is already built (never builds one)."""
    if Path(name_or_path).exists():
        return Dataset.open(name_or_path)
    from zoo.data import catalogue

    if not catalogue.is_built(name_or_path):
        raise DataError(f"{name_or_path!r} is neither a dataset directory nor a built catalogue dataset "
                        f"(build it with `zoo data build {name_or_path}`)")
    return Dataset.open(catalogue.dataset_path(name_or_path))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="c-hfo2")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--tol", type=float, default=None, help="degeneracy_tol override (A)")
    ap.add_argument("--extra", action="store_true", help="also the unrattled m-HfO2 and perfect fluorite cells")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = _open(args.dataset)
    layout, cutoff = ds.layout(), float(ds.card.cutoff)
    info = DatasetInfo(layout, cutoff)
    kw = {} if args.tol is None else {"degeneracy_tol": args.tol}
    rows = []
    for k, nm in enumerate(ds.names):
        rec = ds.read(nm)
        rows.append(measure(nm, record_to_data(rec, layout, torch.float64), record_to_data(rec, layout, torch.float32),
                            info, args.preset, k, **kw))
    if args.extra:
        from ase.build import bulk

        from zoo.data.structures import monoclinic_hfo2

        for nm, atoms in (("m-HfO2 2x2x2 unrattled", monoclinic_hfo2().repeat(2)),
                          ("fluorite HfO2 2x2x2 perfect", bulk("HfO2", "fluorite", a=5.07, cubic=True).repeat(2))):
            s = Structure.from_ase(atoms)
            rows.append(measure(nm, structure_to_data(s, layout, cutoff, torch.float64),
                                structure_to_data(s, layout, cutoff, torch.float32), info, args.preset, 99, **kw))
    print(f"lcnet degenerate_frames on {ds.name} (preset {args.preset}, degeneracy_tol "
          f"{args.tol if args.tol is not None else 'preset'}, cutoff {cutoff} A)")
    print("structure | atoms | on-site tied | pairs tied / pairs | edge blocks tied | candidate frames (node+pair) "
          "| rot. err algorithm1 meV | rot. err average meV | cost avg/alg1 cold | cached")
    for r in rows:
        print(f"{r['name']} | {r['atoms']} | {r['onsite_tied']} | {r['pairs_tied']} / {r['pairs']} | "
              f"{r['edges_tied']} / {r['edges']} | {r['cand_node']}+{r['cand_pair']} | {r['err_algorithm1']:.3e} | "
              f"{r['err_average']:.3e} | {r['t_cold'][1] / r['t_cold'][0]:.2f} | "
              f"{r['t_cached'][1] / r['t_cached'][0]:.2f}")


if __name__ == "__main__":
    main()
