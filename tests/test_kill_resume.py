"""A training killed with SIGKILL at a random point resumes from its last checkpoint and ends
exactly where an uninterrupted run ends; the killed run leaves no leaderboard row."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.conftest import write_toy_dataset
from zoo.bench.trainer import load_checkpoint
from zoo.cli.main import main

EPOCHS = 40


def bench_args(ds, runs, lb):
    return ["bench", "--model", "sk", "--dataset", str(ds), "--max-epochs", str(EPOCHS), "--quiet", "--set",
            "dtype=float64", "--runs-dir", str(runs), "--leaderboard-dir", str(lb)]


def test_sigkill_at_random_point_then_resume(tmp_path):
    ds = write_toy_dataset(tmp_path / "toy", cutoff=3.5)
    assert main(bench_args(ds, tmp_path / "a", tmp_path / "lba")) == 0
    (run_a,) = (tmp_path / "a" / "toy-hfo2").iterdir()

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli.main", *bench_args(ds, tmp_path / "b", tmp_path / "lbb")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(os.getpid())
    target_epoch = rng.randint(1, EPOCHS // 3)  # far from the end, so the kill lands mid-training
    deadline = time.time() + 120
    ckpt = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "b").glob("toy-hfo2/*/checkpoint.pt"))
        if found:
            try:
                if load_checkpoint(found[0])["epoch"] >= target_epoch:
                    ckpt = found[0]
                    break
            except Exception:  # the file is being replaced right now; atomic rename means retry is safe
                pass
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.05))  # a random point inside the next epoch or two
    assert proc.poll() is None, "the run finished before it could be killed; raise EPOCHS"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt is not None
    assert not (tmp_path / "lbb").exists() or not any((tmp_path / "lbb").iterdir())  # no row from a killed run
    killed_at = load_checkpoint(ckpt)["epoch"]  # the checkpoint on disk is intact after SIGKILL
    assert 1 <= killed_at < EPOCHS

    assert main(["bench", "--resume", str(ckpt.parent), "--quiet", "--leaderboard-dir", str(tmp_path / "lbb")]) == 0
    hist_a = json.loads((run_a / "history.json").read_text())
    hist_b = json.loads((ckpt.parent / "history.json").read_text())
    assert [h["train_loss"] for h in hist_a] == [h["train_loss"] for h in hist_b]
    assert [h["val_loss"] for h in hist_a] == [h["val_loss"] for h in hist_b]
    wa, wb = load_checkpoint(run_a / "checkpoint.pt")["model"], load_checkpoint(ckpt)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len((tmp_path / "lbb" / "toy-hfo2.csv").read_text().strip().splitlines()) == 2  # header + one row
