#!/usr/bin/env bash
# Device check: run whenever a GPU is at hand (and it still runs, skipping the CUDA parts, without one).
#
#   bash benchmarks/device_check.sh [--quick]          (from the repository root; < 8 minutes on one GPU)
#
# 1. the contract tests (every registered backbone: shapes, equivariance, hermiticity, spinful
#    rules, partition exactness), on the CPU as CI runs them;
# 2. CUDA only: every registered backbone (its constructor defaults, float32, seeded weights)
#    predicts the same structure on cpu and on cuda through zoo predict's streaming path (3
#    partitions); the hermitized blocks must agree to float32 tolerance
#    (max |cuda - cpu| <= 1e-4 x max |cpu| + 1e-6 Hartree);
# 3. CUDA only: timing of zoo predict's path on both devices for a 1,296-atom m-HfO2 supercell
#    (6 x 6 x 3 cells, 4 A cutoff, 2,000 atoms per partition), one line per backbone; then
#    `zoo perf --suite throughput --device cuda` when that command has a --device option.
# Exit status: non-zero when a test fails or cpu and cuda disagree. --quick skips step 1.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
status=0
quick=0
[ "${1:-}" = "--quick" ] && quick=1
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }

has_cuda=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
if [ "$has_cuda" = "1" ]; then
  "$PY" -c "import torch; print('cuda:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
else
  echo "no CUDA device here: the cpu-vs-cuda comparison and the CUDA timing are skipped (contract tests still run)"
fi

if [ "$quick" = "0" ]; then
  stamp "contract tests"
  timeout 240 "$PY" -m pytest -q -x tests/test_contract.py tests/test_contract_spinful.py \
      tests/test_partition_exactness.py || status=1
fi

if [ "$has_cuda" = "1" ]; then
  stamp "cpu vs cuda predictions (float32) and timing"
  timeout 180 "$PY" - <<'EOF' || status=1
import time

import numpy as np
import torch
from ase import Atoms

from zoo.bench.predict import predict_blocks
from zoo.data.format import Structure
from zoo.data.structures import monoclinic_hfo2
from zoo.data.torch_data import DatasetInfo, structure_to_data
from zoo.models.registry import build_model, list_models, model_class
from zoo.physics.basis import OrbitalLayout, get_basis

layout = OrbitalLayout(get_basis("szv-molopt-sr"), [8, 72])
small = monoclinic_hfo2().repeat((3, 1, 1))
small.rattle(0.05, seed=1)
big = monoclinic_hfo2().repeat((6, 6, 3))
big.rattle(0.05, seed=2)
bad = []
rows = []
for name in list_models():
    spinful = bool(getattr(model_class(name), "spinful", False))
    info = DatasetInfo(layout, 4.0, spinful=spinful, name="device-check")
    torch.manual_seed(0)
    model = build_model(name, info).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # off the initial values (some start at zero)
    data = structure_to_data(Structure.from_ase(small), layout, 4.0, torch.float32, spinful=spinful)
    n_cpu, e_cpu = predict_blocks(model.cpu(), data.clone(), max_atoms_per_part=12)
    n_gpu, e_gpu = predict_blocks(model.cuda(), data.clone(), max_atoms_per_part=12)
    scale = max(float(n_cpu.abs().max()), float(e_cpu.abs().max()) if e_cpu.numel() else 0.0)
    diff = max(float((n_gpu - n_cpu).abs().max()), float((e_gpu - e_cpu).abs().max()) if e_cpu.numel() else 0.0)
    ok = diff <= 1e-4 * scale + 1e-6
    print(f"{name:12s} max|cuda-cpu| {diff:.2e} Ha (max|H| {scale:.2e})  {'ok' if ok else 'MISMATCH'}")
    if not ok:
        bad.append(name)
    gdata = structure_to_data(Structure.from_ase(big), layout, 4.0, torch.float32, spinful=spinful)
    times = {}
    for dev in ("cpu", "cuda"):
        model = model.to(dev)
        t = time.perf_counter()
        predict_blocks(model, gdata.clone(), max_atoms_per_part=2000)
        if dev == "cuda":
            torch.cuda.synchronize()
        times[dev] = time.perf_counter() - t
    rows.append((name, len(big), int(gdata.edge_index.shape[1]), times["cpu"], times["cuda"]))
print(f"\n{'model':12s} {'atoms':>6s} {'edges':>8s} {'cpu s':>8s} {'cuda s':>8s} {'speed-up':>8s}")
for name, n, e, tc, tg in rows:
    print(f"{name:12s} {n:6d} {e:8d} {tc:8.2f} {tg:8.2f} {tc / tg:8.1f}")
if bad:
    raise SystemExit(f"cpu and cuda disagree beyond float32 tolerance: {', '.join(bad)}")
EOF
  if "$PY" -m zoo.cli.main perf --help 2>/dev/null | grep -q -- "--device"; then
    stamp "zoo perf on cuda"
    timeout 60 "$PY" -m zoo.cli.main perf --suite throughput --models sk --device cuda || status=1
  else
    echo "zoo perf has no --device option in this build: its CUDA table is skipped"
  fi
fi
stamp "done (status $status)"
exit $status
