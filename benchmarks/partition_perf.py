"""Memory and time per epoch of partitioned training vs the full graph (seed paper, Table 3 style).

    OMP_NUM_THREADS=1 python benchmarks/partition_perf.py                 # 1008-atom Si, 1, 2, 4, 8 slices
    python benchmarks/partition_perf.py --model sk --slices 1 2 4 8 16     # a registered backbone instead

Structure: a rattled diamond-Si supercell (14 x 3 x 3 conventional cells, 1008 atoms, 76 A along
x, periodic), synthetic equivariant H from `zoo.data.synthetic.toy_record`. Model: a small
invariant message-passing network on top of the trivial two-centre head (`--layers`, default 1
as in the seed), or `--model NAME` from the registry. One epoch = forward + masked MSE +
backward over every partition, one after another (what one device does). Each configuration
runs in a fresh process so its peak RSS is its own; "saved" is the largest amount of tensor
memory autograd keeps for backward in one partition (exact, noise-free). Time is the process CPU
time of the fastest epoch (one thread; robust on a shared machine), wall time beside it. Ratios are full / cfg.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil
import torch
from tabulate import tabulate

from zoo.data.partition import partition, partition_stats
from zoo.data.torch_data import DatasetInfo, block_masks, collate, edge_vectors
from zoo.models import Prediction, build_model
from zoo.models.trivial.model import TrivialTwoCentre, gaussian_basis
from zoo.physics.basis import OrbitalLayout, get_basis


class SmallMP(TrivialTwoCentre):
    """Trivial head scaled by invariants of a few message-passing layers (messages row 0 -> row 1)."""

    def __init__(self, info: DatasetInfo, num_layers: int = 1, hidden: int = 64, n_radial: int = 16):
        super().__init__(info, n_radial=n_radial)
        self.message_passing_layers = num_layers
        self.embed = torch.nn.Parameter(torch.randn(len(info.elements), hidden))
        self.msg = torch.nn.ModuleList(torch.nn.Linear(n_radial, hidden) for _ in range(num_layers))
        self.upd = torch.nn.ModuleList(torch.nn.Linear(hidden, hidden) for _ in range(num_layers))
        self.edge_out = torch.nn.Sequential(torch.nn.Linear(hidden + n_radial, hidden), torch.nn.SiLU(),
                                            torch.nn.Linear(hidden, 1))
        self.node_out = torch.nn.Linear(hidden, 1)

    def forward(self, batch) -> Prediction:
        base = super().forward(batch)
        i, j = batch.edge_index
        h = self.embed[self.z_index[batch.z]]
        e = gaussian_basis(edge_vectors(batch).norm(dim=1), self.info.cutoff, self.n_radial)
        for t in range(self.message_passing_layers):
            h = torch.nn.functional.silu(self.upd[t](h + torch.zeros_like(h).index_add(0, j, self.msg[t](e) * h[i])))
        eye = torch.eye(base.node_blocks.shape[-1], dtype=h.dtype)
        node = base.node_blocks + self.node_out(h)[:, :, None] * eye
        edge = base.edge_blocks * (1 + self.edge_out(torch.cat([h[i] * h[j], e], dim=1)))[:, :, None]
        return Prediction(node, edge)


def build_structure(path: str, rep: tuple[int, int, int], cutoff: float, basis_name: str) -> None:
    from ase.build import bulk

    from zoo.data.format import Structure
    from zoo.data.synthetic import toy_record
    from zoo.data.torch_data import record_to_data

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(rep)
    atoms.rattle(0.1, seed=0)
    basis = get_basis(basis_name)
    rec = toy_record(Structure.from_ase(atoms), basis, cutoff, overlap=False)
    layout = OrbitalLayout(basis, [14])
    torch.save({"data": record_to_data(rec, layout, torch.float32), "layout": layout.to_json(), "cutoff": cutoff}, path)


def loss_fn(pred: Prediction, batch) -> torch.Tensor:
    mn, me = block_masks(batch)
    mn = mn & batch.node_label_mask[:, None, None]
    me = me & batch.edge_label_mask[:, None, None]
    err = torch.cat([(pred.node_blocks - batch.y_node)[mn], (pred.edge_blocks - batch.y_edge)[me]])
    return (err ** 2).mean()


def child(cfg: dict) -> dict:
    torch.set_num_threads(1)
    blob = torch.load(cfg["path"], weights_only=False)
    data = blob["data"]
    info = DatasetInfo(OrbitalLayout.from_json(blob["layout"]), blob["cutoff"])
    torch.manual_seed(0)
    if cfg["model"] == "small-mp":
        model = SmallMP(info, num_layers=cfg["layers"])
    else:
        model = build_model(cfg["model"], info)
    if cfg["slices"] == 0:
        graphs, stats = [data], None
    else:
        graphs = partition(data, "slices", n_slices=cfg["slices"], hops=int(model.message_passing_layers),
                           flow=getattr(model, "message_flow", "source_to_target"))
        stats = partition_stats(graphs, data.num_nodes, data.edge_index.shape[1])["summary"]
    batches = [collate([g]) for g in graphs]
    del blob, graphs
    base_rss = psutil.Process().memory_info().rss
    saved = [0]

    def pack(t):
        saved[-1] += t.untyped_storage().nbytes()
        return t

    times, cpu = [], []
    for epoch in range(cfg["epochs"] + 1):  # epoch 0 warms up
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            saved.append(0)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = loss_fn(model(b), b)
            loss.backward()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"time": float(np.min(cpu[1:])), "wall": float(np.min(times[1:])), "peak_mb": max(peak - base_rss, 0) / 2**20,
            "saved_mb": max(saved) / 2**20, "stats": stats, "K": int(model.message_passing_layers)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rep", type=int, nargs=3, default=(14, 3, 3), help="conventional Si cells per axis")
    ap.add_argument("--cutoff", type=float, default=4.0)
    ap.add_argument("--basis", default="dzvp-molopt-sr")
    ap.add_argument("--model", default="small-mp", help="small-mp or a registered backbone name")
    ap.add_argument("--layers", type=int, default=1, help="message-passing layers of small-mp")
    ap.add_argument("--slices", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--epochs", type=int, default=5, help="timed epochs (the fastest is reported: the machine may be shared)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "graph.pt")
        build_structure(path, tuple(args.rep), args.cutoff, args.basis)
        data = torch.load(path, weights_only=False)["data"]
        print(f"structure: {data.num_nodes} atoms, {data.edge_index.shape[1]} edges, cutoff {args.cutoff} A, "
              f"basis {args.basis}, model {args.model}" + (f" ({args.layers} layers)" if args.model == "small-mp" else ""))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        res = {}
        for n in [0] + list(args.slices):
            cfg = {"path": path, "slices": n, "model": args.model, "layers": args.layers, "epochs": args.epochs}
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], env=env, check=True,
                                 capture_output=True, text=True)
            res[n] = json.loads(out.stdout.strip().splitlines()[-1])
    full = res[0]
    rows = []
    for n, r in res.items():
        s = r["stats"] or {}
        rows.append({
            "config": "full graph" if n == 0 else f"{n} slices",
            "CPU s/epoch": f"{r['time']:.3f}", "time ratio": f"{full['time'] / r['time']:.2f}x",
            "wall s/epoch": f"{r['wall']:.3f}",
            "peak RSS MB": f"{r['peak_mb']:.0f}", "RSS ratio": f"{full['peak_mb'] / max(r['peak_mb'], 1e-9):.2f}x",
            "saved MB": f"{r['saved_mb']:.1f}", "saved ratio": f"{full['saved_mb'] / r['saved_mb']:.2f}x",
            "node overhead": f"{s.get('node_overhead', 1.0):.2f}", "edge overhead": f"{s.get('edge_overhead', 1.0):.2f}",
            "virtual edges": f"{100 * s.get('virtual_edge_fraction', 0.0):.0f}%",
            "imbalance": f"{s.get('imbalance', 1.0):.2f}",
        })
    print(f"halo for K = {full['K']} message-passing layers ({full['K'] + 1} rings), virtual edges one-way; "
          f"ratios = full graph / configuration (higher is better)")
    print(tabulate(rows, headers="keys", tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
