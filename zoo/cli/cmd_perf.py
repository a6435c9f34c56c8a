"""`zoo perf`: inference scaling, partitioned training and throughput of every backbone, in one run."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    from zoo.bench.perf.suite import SUITES, PerfOptions

    d = PerfOptions()
    p = sub.add_parser(
        "perf", help="cost of every backbone: inference vs size, partitioned training, throughput (or --profile)",
        description="Tables of ratios measured in one run on a-HfO2 (one melt-quenched cell, cached, repeated to "
                    "each size), untrained models, each measurement in a fresh process. Every table names the "
                    "machine and the commit.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--suite", dest="suites", default=d.suites, help=f"sections, comma separated: {', '.join(SUITES)}")
    p.add_argument("--models", default=None,
                   help="backbones, comma separated (default: every registered spinless backbone but the test-only "
                        "trivial and the network-free mean)")
    p.add_argument("--preset", default=d.preset, help="model preset (cpu | paper); also picks the training cutoff")
    p.add_argument("--sizes", default=d.sizes, help="inference sizes in atoms (1k = 1000); the nearest supercells "
                                                    "wider than 2 x cutoff are used")
    p.add_argument("--cutoff", type=float, default=None, help="inference cutoff in A (default: a-hfo2's paper cutoff)")
    p.add_argument("--base-cell", default=d.base_cell, choices=["small", "medium", "paper"],
                   help="catalogue size of the a-hfo2 test cell that is repeated (made once by melt-quench, cached)")
    p.add_argument("--structure", default=None, help="or a structure file as the base cell")
    p.add_argument("--cache", default=None, help="zoo cache directory (default: $ZOO_CACHE or ~/.cache/zoo/datasets)")
    p.add_argument("--max-atoms-per-part", type=int, default=d.max_atoms_per_part,
                   help="labelled atoms per streamed partition (as zoo predict)")
    p.add_argument("--train-atoms", type=int, default=d.train_atoms,
                   help="atoms of the training / throughput cell (at least; a rod along the base cell's long axis)")
    p.add_argument("--throughput-atoms", type=int, default=None,
                   help="atoms of the throughput cell (default: the smallest supercell wider than 2 x cutoff)")
    p.add_argument("--train-cutoff", type=float, default=None,
                   help="training, throughput and --profile cutoff in A (default: a-hfo2 small's for --preset "
                        "cpu, paper's for paper)")
    p.add_argument("--slices", default=d.slices, help="slab counts compared with the full graph")
    p.add_argument("--partitioners", default=d.partitioners, help="partitioners in the imbalance table")
    p.add_argument("--epochs", type=int, default=d.epochs, help="timed training epochs (the fastest is reported)")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed throughput passes (the fastest is reported)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch / OpenMP threads per measurement")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="wall-time limit per measurement; larger sizes estimated beyond it are skipped (0: none)")
    p.add_argument("--json", default=None, help="also write every table and the machine to this JSON file")
    p.add_argument("--workdir", default=None, help="where the temporary structures and predictions go")
    p.add_argument("--profile", default=None, metavar="MODEL",
                   help="instead of the sections: torch.profiler of one forward + backward of MODEL")
    p.add_argument("--profile-atoms", type=int, default=None,
                   help="atoms of the --profile structure (default: as --throughput-atoms)")
    p.add_argument("--top", type=int, default=d.top, help="operators in the --profile table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def run(args) -> int:
    from dataclasses import fields

    from zoo.bench.perf.suite import PerfOptions, run_perf

    run_perf(PerfOptions(**{f.name: getattr(args, f.name) for f in fields(PerfOptions)}))
    return 0
