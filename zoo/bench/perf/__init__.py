"""`zoo perf`: what each backbone costs, as tables of ratios measured in one run.

    zoo perf                                        # inference, training and throughput, every default backbone
    zoo perf --suite inference --models sk,escn --sizes 1k,3k --json perf.json
    zoo perf --profile escn                         # torch.profiler: top ops by self CPU time

Sections (one module each):
- `inference`: `zoo predict`'s streamed path on a-HfO2 supercells of growing N, one fresh process
  per size (wall, CPU, peak RSS); fitted exponent of time vs N and memory flatness;
- `training`: partitioned training epochs (1 ... 16 slabs) against the full graph; halo
  overhead; load imbalance of slabs vs RCB vs METIS;
- `throughput`: edges per CPU-second forward and forward + backward, with parameter counts;
- `profile`: the hot spots of one backbone.
`family` makes the structures (one cached a-HfO2 cell, repeated), `backbones` the untrained
models, `worker` runs each measurement in its own process, `report` prints and writes the tables.
"""

from zoo.bench.perf.suite import SUITES, PerfOptions, run_perf

__all__ = ["SUITES", "PerfOptions", "run_perf"]
