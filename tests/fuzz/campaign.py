"""Seeded fuzz campaign over every reader zoo exposes to user files.

    python -m tests.fuzz.campaign --n 5000            # 5000 inputs per reader (the long campaign)
    python -m tests.fuzz.campaign --n 50 --readers read_structure:cif --seed 7

Each attempt copies a valid seed input into a fresh directory named after the attempt, damages
it with one seeded mutation (tests/fuzz/mutators.py) and runs the reader. An attempt passes when
the reader either succeeds (the damage was harmless, e.g. a flipped bit in padding) or raises a
`zoo.errors.ZooError` whose message names the input (its path contains the attempt directory).
Anything else is an *escape*: a foreign exception type (h5py, numpy, ase, KeyError, ...), a
ZooError that does not name the file, a hang (> `TIMEOUT` s), or -- for writers -- a partial
dataset directory left behind. An escape is reproducible from (reader, seed, attempt index).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tests.fuzz import mutators as M
from zoo.errors import ZooError

TIMEOUT = 10.0  # seconds per attempt before it counts as a hang (a sane attempt takes < 0.5 s)


class Hang(BaseException):  # not Exception: readers that wrap every Exception must not swallow it
    pass


@dataclass
class Escape:
    reader: str
    seed: int
    attempt: int
    mutation: str
    error: str
    where: str = ""

    def __str__(self) -> str:
        return f"[{self.reader} seed={self.seed} #{self.attempt} {self.mutation}] {self.error} {self.where}"


@dataclass
class Result:
    tried: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)  # ended in a ZooError naming the file
    accepted: Counter = field(default_factory=Counter)  # the damaged input still read fine
    escapes: list[Escape] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        rows = [f"{'reader':32s} {'tried':>6s} {'rejected':>8s} {'accepted':>8s} {'escapes':>7s}"]
        for r in sorted(self.tried):
            esc = sum(e.reader == r for e in self.escapes)
            rows.append(f"{r:32s} {self.tried[r]:6d} {self.rejected[r]:8d} {self.accepted[r]:8d} {esc:7d}")
        rows.append(f"total {sum(self.tried.values())} inputs in {self.seconds:.1f} s, {len(self.escapes)} escapes")
        return "\n".join(rows)


@dataclass
class Target:
    """A reader under fuzz: `seed_input(dir)` writes a valid input into dir and returns the
    path to damage; `mutate(rng, path)` damages it; `run(path, attempt_dir)` reads it; `leftovers`
    (optional) lists what a writer left that it must not (e.g. a partial dataset directory)."""

    name: str
    seed_input: Callable[[Path], Path]
    mutate: Callable[[np.random.Generator, Path], str]
    run: Callable[[Path, Path], None]
    leftovers: Callable[[Path, bool], list[Path]] | None = None  # (attempt dir, read succeeded)
    victim: Path | None = field(default=None, repr=False)  # set by run_campaign: the seed's damaged path


# -- mutation wrappers ---------------------------------------------------------------------

def bytes_mutation(rng: np.random.Generator, path: Path) -> str:
    data, label = M.mutate_bytes(rng, path.read_bytes())
    path.write_bytes(data)
    return label


def text_mutation(rng: np.random.Generator, path: Path) -> str:
    text, label = M.mutate_text(rng, path.read_text(errors="replace"))
    path.write_text(text)
    return label


def json_mutation(rng: np.random.Generator, path: Path) -> str:
    if rng.random() < 0.25:
        return bytes_mutation(rng, path)
    obj, label = M.mutate_json(rng, json.loads(path.read_text()))
    path.write_text(json.dumps(obj))
    return label


def hdf5_mutation(rng: np.random.Generator, path: Path) -> str:
    if rng.random() < 0.4:
        return bytes_mutation(rng, path)
    return M.mutate_hdf5(rng, path)


def any_file_mutation(rng: np.random.Generator, root: Path) -> str:
    """Pick one file under `root` and damage it the way its kind allows."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    f = files[int(rng.integers(0, len(files)))]
    rel = f.name if root.is_file() else f.relative_to(root)
    if f.suffix in (".h5", ".hdf5") and rng.random() < 0.6:
        try:
            return f"{rel}:{M.mutate_hdf5(rng, f)}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if f.suffix == ".json" and rng.random() < 0.6:
        try:
            return f"{rel}:{json_mutation(rng, f)}"
        except ValueError:
            pass
    if f.suffix in (".xyz", ".dat", ".csr", ".txt", ".json", "") and rng.random() < 0.6:
        return f"{rel}:{text_mutation(rng, f)}"
    return f"{rel}:{bytes_mutation(rng, f)}"


# -- the campaign --------------------------------------------------------------------------

def _alarm(signum, frame):
    raise Hang(f"no answer within {TIMEOUT} s")


def attempt(target: Target, base: Path, work: Path, seed: int, k: int, result: Result) -> None:
    rng = np.random.default_rng([seed, k, sum(map(ord, target.name))])
    adir = work / f"{target.name.replace(':', '-').replace('.', '-')}-{k:06d}"
    shutil.copytree(base, adir)
    victim = adir / target.victim.relative_to(base)
    try:
        label = target.mutate(rng, victim)
    except Exception as exc:  # noqa: BLE001 -- a mutator that cannot apply is a skipped attempt
        label = f"(mutation failed: {type(exc).__name__})"
    result.tried[target.name] += 1
    use_alarm = hasattr(signal, "SIGALRM")
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
    problem, where, ok = None, "", False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target.run(victim, adir)
        result.accepted[target.name] += 1
        ok = True
    except Hang as exc:
        problem = f"hang: {exc}"
    except ZooError as exc:
        if adir.name not in str(exc):
            problem = f"{type(exc).__name__} does not name the file: {str(exc)[:300]}"
        else:
            result.rejected[target.name] += 1
    except Exception as exc:  # noqa: BLE001 -- that is exactly what we are looking for
        problem = f"{type(exc).__name__}: {str(exc)[:300]}"
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        zoo_frames = [f for f in tb if "/zoo/" in f.filename]
        if zoo_frames:
            where += f" (from {Path(zoo_frames[-1].filename).name}:{zoo_frames[-1].lineno})"
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    if target.leftovers is not None and problem is None:
        left = target.leftovers(adir, ok)
        if left:
            problem = f"partial output left behind: {[str(p.relative_to(adir)) for p in left]}"
    if problem:
        result.escapes.append(Escape(target.name, seed, k, label, problem, where))
    shutil.rmtree(adir, ignore_errors=True)


def run_campaign(targets: list[Target], n: int | dict[str, int], seed: int = 0, workdir: Path | None = None,
                 progress: bool = False, after_target: Callable[[Result], None] | None = None) -> Result:
    result = Result()
    t0 = time.perf_counter()
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="zoo-fuzz-")) if own else Path(workdir)
    try:
        for target in targets:
            base = work / f"seed-{target.name.replace(':', '-')}"
            base.mkdir(parents=True, exist_ok=True)
            target.victim = target.seed_input(base)
            count = n if isinstance(n, int) else n.get(target.name, 0)
            for k in range(count):
                attempt(target, base, work, seed, k, result)
                if progress and (k + 1) % 500 == 0:
                    print(f"  {target.name}: {k + 1}/{count}", file=sys.stderr, flush=True)
            shutil.rmtree(base, ignore_errors=True)
            result.seconds = time.perf_counter() - t0
            if after_target is not None:
                after_target(result)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> int:
    from tests.fuzz.targets import all_targets, importer_targets

    p = argparse.ArgumentParser(prog="python -m tests.fuzz.campaign", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="inputs per reader (default 5000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--readers", default=None, help="comma-separated reader names (default: all)")
    p.add_argument("--no-importers", action="store_true", help="skip the importers' readers")
    p.add_argument("--list", action="store_true", help="list the readers and exit")
    p.add_argument("--json", default=None, help="also write the result (counts, escapes) to this JSON file")
    p.add_argument("--mem-gb", type=float, default=8.0,
                   help="cap on this process' data segment (GB): a reader that tries to allocate more gets a "
                        "MemoryError (an escape unless it turns it into a ZooError) instead of the OOM killer")
    args = p.parse_args(argv)
    if args.mem_gb > 0:
        import resource

        cap = int(args.mem_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    targets = all_targets() + ([] if args.no_importers else importer_targets())
    if args.list:
        print("\n".join(t.name for t in targets))
        return 0
    if args.readers:
        want = set(args.readers.split(","))
        unknown = want - {t.name for t in targets}
        if unknown:
            p.error(f"unknown readers {sorted(unknown)}")
        targets = [t for t in targets if t.name in want]

    def save(result: Result) -> None:  # after every reader, so a long run that is stopped keeps its counts
        if args.json:
            Path(args.json).write_text(json.dumps({
                "seed": args.seed, "tried": dict(result.tried), "rejected": dict(result.rejected),
                "accepted": dict(result.accepted), "seconds": result.seconds,
                "escapes": [e.__dict__ for e in result.escapes]}, indent=1))

    result = run_campaign(targets, args.n, args.seed, progress=True, after_target=save)
    print(result.table())
    for e in result.escapes[:50]:
        print("ESCAPE", e)
    return 1 if result.escapes else 0


if __name__ == "__main__":
    sys.exit(main())
