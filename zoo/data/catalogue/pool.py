"""Worker processes of a catalogue build: their environment, a pool that knows its workers, clean stops.

Structures are computed in spawned processes: a fresh interpreter per worker, so that thread
counts and an LD_PRELOADed OpenBLAS take effect before tblite or PySCF load. `WorkerPool` runs on
the public concurrent.futures / multiprocessing API only:

- its workers are the multiprocessing children that appear while it is open
  (`multiprocessing.active_children`), so an interrupt (Ctrl-C, SIGTERM via zoo.cli.main) or an
  error in the caller kills exactly them and the programs they started (CP2K runs);
- each task first reports (worker pid, structure name) over a queue handed to the workers by the
  pool's initializer, so a worker that dies abruptly (killed for memory, a crash in an engine's
  native code: concurrent.futures' BrokenProcessPool) is reported as the structure it was computing.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from zoo.errors import ZooError

OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")


class WorkerDied(ZooError):
    """A worker process ended without returning its structure (a signal, the OOM killer, a native crash)."""


def worker_env(jobs: int, engine: str) -> dict[str, str]:
    """Environment of the worker processes. tblite and CP2K: cpus/jobs threads each; tblite also
    gets OpenBLAS preloaded when installed (the wheel bundles reference BLAS, ~8x slower;
    ZOO_NO_OPENBLAS=1 turns it off). PySCF: one thread per worker (on small molecules processes
    beat threads, and the preload made it 10x slower here)."""
    threads = str(max(1, (os.cpu_count() or 1) // max(jobs, 1)))
    if engine == "cp2k":
        return {"OMP_NUM_THREADS": threads}
    if engine != "tblite":
        return {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env = {"OMP_NUM_THREADS": threads}
    if OPENBLAS.is_file() and not os.environ.get("ZOO_NO_OPENBLAS"):
        env["LD_PRELOAD"] = " ".join(x for x in (os.environ.get("LD_PRELOAD", ""), str(OPENBLAS)) if x)
        env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"]
    return env


def openblas_loaded() -> bool:
    """Whether this process has the system OpenBLAS mapped (recorded per structure in the card)."""
    try:
        return str(OPENBLAS.parent) in Path("/proc/self/maps").read_text()
    except OSError:
        return False


# -- inside a worker ----------------------------------------------------------------------------

_reports: Any = None  # the pool's queue, set in each worker by its initializer


def _init_worker(reports) -> None:
    global _reports
    _reports = reports


def _run_named(name: str, fn: Callable[..., Any], args: tuple) -> Any:
    _reports.put((os.getpid(), name))  # one small write (< PIPE_BUF): whole even if the worker dies next
    return fn(*args)


# -- in the builder -----------------------------------------------------------------------------

class WorkerPool:
    """`jobs` spawned worker processes with `env` set while they start; a context manager.

        with WorkerPool(2, worker_env(2, "tblite")) as pool:
            for name, result, error in pool.run(compute, {"train-0": args, ...}):
                ...

    Leaving the block normally waits for the workers; leaving it by an exception (KeyboardInterrupt
    included) cancels what has not started and kills the workers and their descendants, whose
    results are not needed: every finished structure is already on disk."""

    def __init__(self, jobs: int, env: Mapping[str, str]):
        self.jobs = max(1, jobs)
        self.env = dict(env)
        self._running: dict[int, str] = {}  # worker pid -> the structure it last reported starting

    def __enter__(self) -> "WorkerPool":
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # workers start on submit and inherit this environment
        self._before = {p.pid for p in multiprocessing.active_children()}
        ctx = get_context("spawn")
        self._reports = ctx.SimpleQueue()
        self._executor = ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_init_worker,
                                             initargs=(self._reports,))
        return self

    def run(self, fn: Callable[..., Any], tasks: Mapping[str, tuple]) -> Iterator[tuple[str, Any, BaseException | None]]:
        """fn(*args) for every named task; yields (name, result, None) or (name, None, exception) once
        per task, as each ends. A worker that dies breaks the pool: the structure it was computing
        comes back first, with WorkerDied, then every task the pool could no longer run."""
        futures = {self._executor.submit(_run_named, name, fn, args): name for name, args in tasks.items()}
        lost: list[str] = []
        for fut in as_completed(futures):
            self._read_reports()  # also keeps the queue's pipe from filling up
            exc = fut.exception()
            if isinstance(exc, BrokenProcessPool):
                lost.append(futures[fut])  # every unfinished task ends so; the finished ones still come first
                continue
            yield futures[fut], (None if exc else fut.result()), exc
        if lost:
            self._read_reports()
            died = [n for n in dict.fromkeys(self._running.values()) if n in lost]
            cause = "killed by a signal, e.g. for lack of memory, or a crash inside the engine"
            for name in died:  # the pool stops every worker when one dies: with several, say which could be it
                yield name, None, WorkerDied(
                    f"its worker process died abruptly ({cause})" if len(died) == 1 else
                    f"a worker process died abruptly while {', '.join(map(repr, died))} were computed ({cause})")
            for name in lost:
                if name not in died:
                    yield name, None, WorkerDied("not computed: the worker pool stopped when a worker died")

    def _read_reports(self) -> None:
        while not self._reports.empty():
            pid, name = self._reports.get()
            self._running[pid] = name

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._executor.shutdown(wait=True)
            else:
                # running structures (and the engine binaries they started) would otherwise go on,
                # and interpreter exit would wait for them
                workers = [p.pid for p in multiprocessing.active_children() if p.pid not in self._before]
                self._executor.shutdown(wait=False, cancel_futures=True)
                stop_workers(workers)
        finally:
            for k, v in self._saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return False


def stop_workers(pids: list[int]) -> None:
    """Kill the given worker processes and terminate their descendants (e.g. CP2K runs).

    The workers are only signalled, never waited for here: reaping them (psutil's wait does
    waitpid) would leave multiprocessing polling pids it can no longer wait for, and its
    executor thread then spins forever at interpreter exit."""
    import psutil

    workers, descendants = [], []
    for pid in pids:
        try:
            w = psutil.Process(pid)
            descendants += w.children(recursive=True)
            workers.append(w)
        except psutil.NoSuchProcess:
            pass
    for p in workers:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    for p in descendants:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(descendants, timeout=5)  # not our children: polled, not reaped
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
