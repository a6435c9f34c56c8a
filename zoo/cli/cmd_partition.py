"""`zoo data partition-info`: how a structure's graph splits into augmented partitions."""

from __future__ import annotations

import json

from tabulate import tabulate


def add_data_parsers(dsub) -> None:
    p = dsub.add_parser("partition-info", help="labelled / virtual nodes and edges per partition, overhead, imbalance")
    p.add_argument("dataset", help="dataset directory or catalogue name")
    p.add_argument("--split", default="train", help="split whose structures to partition (default: train)")
    p.add_argument("--structure", default=None, help="only this structure of the split")
    p.add_argument("--partitioner", choices=("slices", "rcb", "metis"), default="slices")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--t-slice", type=float, default=None, help="slab thickness in A (slices)")
    size.add_argument("--n-parts", type=int, default=None, help="number of partitions (slices, rcb, metis)")
    p.add_argument("--axis", default=None, help="slice axis x, y or z (default: the longest)")
    p.add_argument("--hops", type=int, default=0,
                   help="message-passing layers of the backbone; the halo is hops + 1 atoms deep (default 0)")
    p.add_argument("--virtual", choices=("none", "one-way", "two-way"), default="one-way")
    p.add_argument("--allow-self-images", action="store_true",
                   help="accept atoms bonded to their own periodic image (explicit-image data in small cells)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_partition_info)


def run_partition_info(args) -> int:
    from zoo.cli.cmd_data import resolve_dataset_path
    from zoo.data.format import Dataset
    from zoo.data.partition import partition, partition_stats
    from zoo.data.torch_data import record_to_data
    from zoo.errors import ConfigError

    if args.partitioner != "slices" and args.n_parts is None:
        raise ConfigError(f"--partitioner {args.partitioner} needs --n-parts")
    if args.partitioner == "slices" and args.n_parts is None and args.t_slice is None:
        raise ConfigError("--partitioner slices needs --t-slice or --n-parts")
    ds = Dataset.open(resolve_dataset_path(args.dataset), validate=False)
    names = ds.split(args.split)
    if args.structure is not None:
        if args.structure not in names:
            raise ConfigError(f"structure {args.structure!r} is not in split {args.split!r}")
        names = [args.structure]
    layout = ds.layout()
    out = []
    for name in names:
        data = record_to_data(ds.read(name), layout, cutoff=ds.card.cutoff)
        parts = partition(data, args.partitioner, hops=args.hops, virtual=args.virtual, n_parts=args.n_parts,
                          t_slice=args.t_slice, axis=args.axis, cutoff=ds.card.cutoff,
                          allow_self_images=args.allow_self_images)
        stats = partition_stats(parts, data.num_nodes, data.edge_index.shape[1])
        out.append({"structure": name, **stats})
        if args.json:
            continue
        s = stats["summary"]
        print(f"{name}: {data.num_nodes} atoms, {s['edges_full']} edges -> {s['parts']} partitions "
              f"({args.partitioner}, halo for {args.hops} message-passing layers, virtual edges {args.virtual})")
        print(tabulate(stats["rows"], headers="keys"))
        print(f"overhead  nodes {s['node_overhead']:.3f}x  edges {s['edge_overhead']:.3f}x   "
              f"virtual  nodes {100 * s['virtual_node_fraction']:.1f}%  edges {100 * s['virtual_edge_fraction']:.1f}%   "
              f"imbalance (max/mean edges) {s['imbalance']:.3f}   "
              f"labelled coverage  nodes {100 * s['labelled_node_coverage']:.1f}%  "
              f"edges {100 * s['labelled_edge_coverage']:.1f}%\n")
    if args.json:
        print(json.dumps(out, indent=1))
    return 0
