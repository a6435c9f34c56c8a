"""One measurement in a fresh process, so that its peak RSS is its own.

    python -m zoo.bench.perf.worker '{"job": "predict", ...}'     (prints one JSON line)

The parent (`isolated`) starts it with the thread count pinned, waits at most `timeout` seconds,
and turns a timeout, a crash or a kill (e.g. out of memory) into a status instead of an exception,
so that one model too large for the machine does not end the whole suite. The jobs themselves live
beside the sections that use them (`inference.predict_job`, `training.train_job`,
`throughput.throughput_job`).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import psutil

JOBS = {
    "predict": "zoo.bench.perf.inference:predict_job",
    "train": "zoo.bench.perf.training:train_job",
    "throughput": "zoo.bench.perf.throughput:throughput_job",
}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@contextmanager
def clock() -> Iterator[dict]:
    """{'wall': s, 'cpu': s} of the block (CPU: this process, every thread, user + system)."""
    out: dict = {}
    w, c = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out["wall"], out["cpu"] = time.perf_counter() - w, time.process_time() - c


def thread_env(threads: int) -> dict[str, str]:
    n = str(int(threads))
    return dict(os.environ, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n)


def isolated(spec: dict, threads: int = 1, timeout: float | None = None) -> dict:
    """Run `spec` in a fresh worker; its result dict with status 'ok', or {'status': why not}."""
    cmd = [sys.executable, "-m", "zoo.bench.perf.worker", json.dumps({**spec, "threads": int(threads)})]
    try:
        out = subprocess.run(cmd, env=thread_env(threads), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out (> {timeout:.0f} s)"}
    if out.returncode < 0:
        return {"status": f"killed by signal {-out.returncode}" + (" (out of memory?)" if out.returncode == -9 else "")}
    lines = [ln for ln in out.stdout.strip().splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        err = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        return {"status": "failed: " + (err[-1][:300] if err else f"exit status {out.returncode}")}
    return {"status": "ok", **json.loads(lines[-1])}


def run_job(spec: dict) -> dict:
    """Run one job in this process: its result plus this process's peak RSS."""
    import importlib

    if spec.get("job") not in JOBS:
        raise ValueError(f"unknown job {spec.get('job')!r}; known: {', '.join(JOBS)}")
    import torch

    torch.set_num_threads(int(spec.get("threads", 1)))
    mod, fn = JOBS[spec["job"]].split(":")
    result = getattr(importlib.import_module(mod), fn)(spec)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    print(json.dumps(run_job(spec)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
