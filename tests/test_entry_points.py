"""Backbones from a user's own package, through the entry-point group `zoo.backbones`.

A throwaway distribution is written to a temporary directory and installed with pip (offline:
--no-index, --no-build-isolation with the venv's setuptools) into a private target directory,
which the subprocesses get on PYTHONPATH. importlib.metadata finds its entry points there exactly
as in site-packages, and nothing leaks into the shared venv, so concurrent test runs never see
the plugin. The distribution carries one working backbone (`mynet`, with presets.yaml and a
README beside its module) and one broken entry point (`brokennet`, whose module needs a package
that does not exist), which must be reported by name without breaking anything else.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.errors import ModelError
from zoo.models import registry
from zoo.models.contract import Backbone, Prediction

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "zoo-test-mynet"
version = "0.0.1"
description = "throwaway zoo backbone plugin (tests/test_entry_points.py)"

[project.entry-points."zoo.backbones"]
mynet = "zoo_test_mynet"
brokennet = "zoo_test_mynet.broken"

[tool.setuptools]
packages = ["zoo_test_mynet"]

[tool.setuptools.package-data]
zoo_test_mynet = ["*.yaml", "*.md"]
"""

MODEL = '''\
"""mynet: per-element on-site levels and distance-decaying couplings between shells of equal l."""

import torch

from zoo.data.torch_data import edge_vectors
from zoo.models import Backbone, Prediction, register_model


@register_model("mynet")
class MyNet(Backbone):
    """Per-element on-site levels; couplings w(Zi, Zj) exp(-decay r) between shells of equal l."""

    message_passing_layers = 0

    def __init__(self, info, *, decay: float = 1.0):
        super().__init__(info)
        lay = info.layout
        self.decay = float(decay)
        elements = list(info.elements)
        z_index = torch.full((max(elements) + 1,), -1, dtype=torch.long)
        z_index[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("z_index", z_index, persistent=False)
        # identity in m between slots of equal l: invariant under D(R) (D orthogonal), parity +1
        same_l = torch.zeros(lay.n_max, lay.n_max)
        for a, la in enumerate(lay.slot_ls):
            for b, lb in enumerate(lay.slot_ls):
                if la == lb:
                    for m in range(2 * la + 1):
                        same_l[lay.slot_offsets[a] + m, lay.slot_offsets[b] + m] = 1.0
        self.register_buffer("same_l", same_l, persistent=False)
        self.onsite = torch.nn.Parameter(torch.zeros(len(elements), lay.n_max))
        self.pair = torch.nn.Parameter(0.01 * torch.randn(len(elements), len(elements)))

    def forward(self, batch) -> Prediction:
        z = self.z_index[batch.z]
        i, j = batch.edge_index
        r = edge_vectors(batch).norm(dim=1)
        # one level per orbital, constant over m within a shell by construction of same_l's diagonal
        node = torch.diag_embed(self.onsite[z] * torch.diagonal(self.same_l))
        edge = (self.pair[z[i], z[j]] * torch.exp(-self.decay * r))[:, None, None] * self.same_l
        return Prediction(node, edge)
'''

PRESETS = """\
cpu:
  decay: 1.0
  train:
    lr: 0.01
    max_epochs: 2
    batch_size: 1
    loss: mse
    dtype: float64
paper:
  decay: 0.5
"""

README = """\
# mynet (test plugin)

Not a paper's model: a throwaway backbone that tests/test_entry_points.py installs to check that a
user's own package adds a backbone to zoo through the `zoo.backbones` entry-point group.
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """Directory holding the installed plugin distribution (to be put on PYTHONPATH)."""
    try:  # offline wheel build without the `wheel` package needs setuptools >= 70.1 (torch itself requires >= 77)
        version = tuple(int(x) for x in importlib.metadata.version("setuptools").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        version = (0, 0)
    if version < (70, 1):
        pytest.skip("installing the test plugin offline needs setuptools >= 70.1 in this venv")
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    pkg = src / "zoo_test_mynet"
    pkg.mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "__init__.py").write_text(MODEL)
    (pkg / "broken.py").write_text("import zoo_test_package_that_does_not_exist  # noqa: F401\n")
    (pkg / "presets.yaml").write_text(PRESETS)
    (pkg / "README.md").write_text(README)
    site = root / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                        "--disable-pip-version-check", "--quiet", "--target", str(site), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(site.glob("zoo_test_mynet-0.0.1.dist-info/entry_points.txt"))
    return site


def zoo(args: list[str], plugin: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "zoo.cli.main", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def test_zoo_models_lists_an_installed_plugin(plugin_path, tmp_path):
    r = zoo(["models"], plugin_path, tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[2:] if line.strip()}
    assert rows["mynet"][1] == "zoo_test_mynet" and rows["mynet"][2] == "0"  # module, MP layers of its cpu preset
    assert {"escn", "sk", "trivial"} <= set(rows)  # built-ins still there
    # the broken entry point is named, with its distribution and the real cause, and breaks nothing
    assert "brokennet" not in rows
    assert "'brokennet'" in r.stderr and "zoo-test-mynet" in r.stderr
    assert "zoo_test_package_that_does_not_exist" in r.stderr


@pytest.mark.slow
def test_bench_and_predict_with_a_plugin_backbone(plugin_path, tmp_path):
    """`zoo bench --model mynet` trains and scores it; `zoo predict` rebuilds it from the checkpoint."""
    from tests.conftest import tiny_hfo2, write_toy_dataset

    ds = write_toy_dataset(tmp_path / "toy")
    lb, runs = tmp_path / "lb", tmp_path / "runs"
    r = zoo(["bench", "--model", "mynet", "--dataset", str(ds), "--leaderboard-dir", str(lb), "--runs-dir", str(runs),
             "--quiet"], plugin_path, tmp_path)
    assert r.returncode == 0, r.stderr
    (run_dir,) = list((runs / "toy-hfo2").iterdir())
    row = json.loads((run_dir / "row.json").read_text())
    assert row["model"] == "mynet" and row["epochs_run"] == 2
    # w(O, Hf) != w(Hf, O): mynet's raw output is not hermitian, and the row says by how much
    assert row["hermiticity_max_mev"] > 0 and np.isfinite(row["total_mae_mev"])

    tiny_hfo2(5).write(tmp_path / "new.xyz", format="extxyz")
    r = zoo(["predict", str(run_dir / "checkpoint.pt"), str(tmp_path / "new.xyz"), "-o", str(tmp_path / "H.npz"),
             "--max-atoms-per-part", "10"], plugin_path, tmp_path)
    assert r.returncode == 0, r.stderr
    h = np.load(tmp_path / "H.npz")
    assert bool(h["hermitized"]) and h["h_onsite"].size == int((h["norb"] ** 2).sum())
    # written H is hermitian pair by pair: the block of (j, i, -R) is the transpose of (i, j, R)
    norb, ei, sh = h["norb"], h["edge_index"], h["edge_shift"]
    sizes = norb[ei[:, 0]] * norb[ei[:, 1]]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    blocks = {(int(i), int(j), *map(int, s)): h["h_offsite"][starts[e]:starts[e + 1]].reshape(norb[i], norb[j])
              for e, ((i, j), s) in enumerate(zip(ei, sh))}
    assert max(np.abs(b).max() for b in blocks.values()) > 0
    for (i, j, *s), b in blocks.items():
        np.testing.assert_array_equal(blocks[(j, i, *(-x for x in s))], b.T)


# -- the loader itself, in process (fake entry points; no install) -------------------------------

class UnregisteredNet(Backbone):
    """A Backbone class named by `module:class` in an entry point, without @register_model."""

    def forward(self, batch) -> Prediction:
        raise NotImplementedError  # never called: only registration is under test


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as if not yet loaded (built-ins stay imported, so they stay registered)."""
    registry.list_models()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_PLUGIN_ERRORS", {})
    monkeypatch.setattr(registry, "_loaded", False)

    def use(eps: list[EntryPoint]) -> None:
        monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                            lambda group: [ep for ep in eps if group == ep.group])

    return use


def test_plugins_load_and_failures_are_named(fresh_registry):
    g = registry.ENTRY_POINT_GROUP
    fresh_registry([EntryPoint("ghostnet", "zoo_test_no_such_module_anywhere", g),
                    EntryPoint("notnet", "collections:OrderedDict", g),
                    EntryPoint("classnet", f"{__name__}:UnregisteredNet", g),
                    EntryPoint("elsewhere", "zoo_test_no_such_module_either", "some.other.group")])
    names = registry.list_models()
    assert {"escn", "sk", "trivial"} <= set(names)
    assert "classnet" in names and registry.model_class("classnet") is UnregisteredNet
    errors = registry.plugin_errors()
    assert set(errors) == {"ghostnet", "notnet"}
    assert "'ghostnet'" in errors["ghostnet"] and "zoo_test_no_such_module_anywhere" in errors["ghostnet"]
    assert "not a zoo Backbone subclass" in errors["notnet"]
    with pytest.raises(ModelError, match="ghostnet.*zoo_test_no_such_module_anywhere"):
        registry.model_class("ghostnet")


def test_plugin_cannot_take_a_builtin_name(fresh_registry, tmp_path, monkeypatch):
    (tmp_path / "zoo_test_squatter.py").write_text(textwrap.dedent("""\
        from zoo.models import Backbone, register_model

        @register_model("escn")
        class Squatter(Backbone):
            pass
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fresh_registry([EntryPoint("squatter", "zoo_test_squatter", registry.ENTRY_POINT_GROUP)])
    assert registry.model_class("escn").__module__ == "zoo.models.escn.model"
    assert "already registered" in registry.plugin_errors()["squatter"]
    assert torch.nn.Module in registry.model_class("escn").__mro__
