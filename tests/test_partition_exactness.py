"""Exactness of augmented partitioning: for every registered backbone, labelled outputs computed
partition by partition equal the full graph's (float64), and differ when the halo is too thin.

Backbones are picked up from `list_models()`; a class accepting `num_layers` is tried with 1 and
2 layers. Two test-only message-passing backbones (one per message flow) are registered for the
duration of this module only, so k = 1, 2 are exercised even while `trivial` is the only built-in.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from zoo.data.format import Structure
from zoo.data.partition import partition, partition_for_model, scatter_predictions
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, collate, edge_vectors, record_to_data
from zoo.errors import GraphError
from zoo.models import Prediction, build_model, list_models
from zoo.models.registry import _REGISTRY, hparam_names, model_class, register_model
from zoo.models.trivial.model import TrivialTwoCentre, gaussian_basis
from zoo.physics.basis import OrbitalLayout, get_basis

CUTOFF = 2.6
TOL = 1e-10


class _ToyMP(TrivialTwoCentre):
    """Trivial two-centre head scaled by invariants of a small message-passing network.

    Layer t: node update from messages (radial filter x sender feature), then an edge update
    from both endpoints' new features; outputs read both endpoints' final features, the worst
    case the halo rule has to cover. Scalar factors keep the blocks equivariant.
    """

    flow_rows = (0, 1)  # (sender row, receiver row) of edge_index

    def __init__(self, info: DatasetInfo, num_layers: int = 1, n_radial: int = 6, hidden: int = 6):
        super().__init__(info, n_radial=n_radial)
        self.message_passing_layers = num_layers
        g = torch.Generator().manual_seed(3)
        ne = len(info.elements)
        self.embed = torch.nn.Parameter(torch.randn(ne, hidden, generator=g))
        self.msg = torch.nn.ModuleList(torch.nn.Linear(n_radial, hidden) for _ in range(num_layers))
        self.upd = torch.nn.ModuleList(torch.nn.Linear(hidden, hidden) for _ in range(num_layers))
        self.eupd = torch.nn.ModuleList(torch.nn.Linear(hidden, n_radial) for _ in range(num_layers))
        self.node_out = torch.nn.Linear(hidden, 1)
        self.edge_out = torch.nn.Linear(hidden + n_radial, 1)

    def forward(self, batch) -> Prediction:
        base = super().forward(batch)
        i, j = batch.edge_index
        send, recv = batch.edge_index[self.flow_rows[0]], batch.edge_index[self.flow_rows[1]]
        h = self.embed[self.z_index[batch.z]]
        e = gaussian_basis(edge_vectors(batch).norm(dim=1), self.info.cutoff, self.n_radial)
        for t in range(self.message_passing_layers):
            agg = torch.zeros_like(h).index_add(0, recv, self.msg[t](e) * h[send])
            h = torch.tanh(self.upd[t](h + agg))
            e = e + torch.tanh(self.eupd[t](h[i] * h[j]))
        eye = torch.eye(base.node_blocks.shape[-1], dtype=h.dtype)
        node = base.node_blocks + self.node_out(h)[:, :, None] * eye
        edge = base.edge_blocks * (1 + self.edge_out(torch.cat([h[i] * h[j], e], dim=1)))[:, :, None]
        return Prediction(node, edge)


class _ToyMPReverse(_ToyMP):
    message_flow = "target_to_source"
    flow_rows = (1, 0)


TEST_MODELS = {"_test_mp_s2t": _ToyMP, "_test_mp_t2s": _ToyMPReverse}


@pytest.fixture(scope="module", autouse=True)
def test_backbones():
    """Register the test-only backbones for this module and remove them afterwards."""
    added = [n for n in TEST_MODELS if n not in _REGISTRY]
    for n in added:
        register_model(n)(TEST_MODELS[n])
    yield
    for n in added:
        _REGISTRY.pop(n, None)


def _cases():
    out = []
    for name in list(list_models()) + [n for n in TEST_MODELS if n not in list_models()]:
        cls = TEST_MODELS.get(name) or model_class(name)
        if getattr(cls, "spinful", False):
            continue  # spinful backbones: tests/test_contract_spinful.py partitions spinful data
        layers = [1, 2] if "num_layers" in hparam_names(cls) else [None]
        out += [(name, k) for k in layers]
    return out


@pytest.fixture(scope="module")
def graph():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((8, 1, 1))
    atoms.rattle(0.05, seed=7)
    z = atoms.numbers.copy()
    z[::5] = 32  # two species, so element-pair parameters matter
    atoms.numbers = z
    basis = get_basis("szv-molopt-sr")
    rec = toy_record(Structure.from_ase(atoms), basis, CUTOFF)
    layout = OrbitalLayout(basis, [14, 32])
    return record_to_data(rec, layout, torch.float64), DatasetInfo(layout, CUTOFF)


def _model(name, k, info):
    torch.manual_seed(0)
    model = build_model(name, info, **({} if k is None else {"num_layers": k})).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised heads would make every comparison vacuous
            if p.is_floating_point() and not p.any():
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _run(model, data):
    with torch.no_grad():
        out = model(collate([data]))
    return out.node_blocks, out.edge_blocks


def _partitioned(model, parts, full):
    return scatter_predictions(parts, [_run(model, p) for p in parts], full)


def _maxdiff(a, b):
    return max(float((a[0] - b[0]).abs().max()), float((a[1] - b[1]).abs().max()))


@pytest.mark.parametrize("name,k", _cases())
def test_partitioned_equals_full(name, k, graph):
    data, info = graph
    model = _model(name, k, info)
    layers = int(model.message_passing_layers)
    full = _run(model, data)
    # node predictions must be non-trivial, and edge ones too unless the backbone predicts none by design (mean)
    assert float(full[0].abs().max()) > 0, "node predictions are all zero: the comparison would be vacuous"
    if not getattr(model, "zero_offsite", False):
        assert float(full[1].abs().max()) > 0, "edge predictions are all zero: the comparison would be vacuous"
    for kind, kw in (("slices", {"n_slices": 4}), ("rcb", {"n_parts": 3})):
        for virtual in ("one-way", "two-way"):
            parts = partition_for_model(data, model, kind, virtual=virtual, **kw)
            got = _partitioned(model, parts, data)
            assert _maxdiff(got, full) < TOL, f"{name} (K={layers}) {kind} {virtual}: partitioned != full"
    # no halo at all (raw partitions): cross edges are labelled nowhere, and with message passing
    # the labelled outputs near a cut change -- so this test can fail
    raw = partition(data, "slices", n_slices=4, virtual="none")
    with pytest.raises(GraphError, match="unlabelled"):
        _partitioned(model, raw, data)
    if layers >= 1:
        got = scatter_predictions(raw, [_run(model, p) for p in raw], data, strict=False)
        assert float((got[0] - full[0]).abs().max()) > 1e-6, f"{name}: node outputs ignore the missing neighbours"


@pytest.mark.parametrize("name", list(TEST_MODELS))
@pytest.mark.parametrize("k", [1, 2])
def test_halo_rule_is_tight(name, k, graph):
    """For a backbone whose edge outputs read both endpoints' final features, K + 1 rings are
    needed: the halo built for K - 1 layers gives different labelled outputs."""
    data, info = graph
    model = _model(name, k, info)
    full = _run(model, data)
    thin = partition(data, "slices", n_slices=4, hops=k - 1, flow=model.message_flow)
    assert _maxdiff(_partitioned(model, thin, data), full) > 1e-6
    exact = partition(data, "slices", n_slices=4, hops=k, flow=model.message_flow)
    assert _maxdiff(_partitioned(model, exact, data), full) < TOL


@pytest.mark.parametrize("k", [1, 2])
def test_wrong_flow_is_caught(k, graph):
    """A one-way halo built for the other message direction is not exact; two-way is exact for both."""
    data, info = graph
    model = _model("_test_mp_t2s", k, info)
    full = _run(model, data)
    wrong = partition(data, "slices", n_slices=4, hops=k, flow="source_to_target")
    assert _maxdiff(_partitioned(model, wrong, data), full) > 1e-6
    both = partition(data, "slices", n_slices=4, hops=k, virtual="two-way", flow="source_to_target")
    assert _maxdiff(_partitioned(model, both, data), full) < TOL


def test_seed_ablation_differs(graph):
    """Raw partitions (no virtual nodes) change even the labelled interior outputs of a 1-layer model."""
    data, info = graph
    model = _model("_test_mp_s2t", 1, info)
    full = _run(model, data)
    raw = partition(data, "slices", n_slices=4, virtual="none")
    node, edge = scatter_predictions(raw, [_run(model, p) for p in raw], data, strict=False)
    covered = torch.zeros(data.num_nodes, dtype=torch.bool)
    for p in raw:
        covered[p.orig_node[p.node_label_mask]] = True
    assert covered.all()
    assert float((node - full[0]).abs().max()) > 1e-6
    assert np.isfinite(node.numpy()).all()


@pytest.fixture(scope="module")
def narrow_graph():
    """Explicit-image data in a cell narrower than 2 x cutoff (CP2K's per-image blocks at 8 A in a 10.5 A
    cell): one atom pair is joined through two images, each its own labelled edge."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((4, 1, 1))
    atoms.rattle(0.05, seed=3)
    cut = 4.0  # > 5.43 / 2: e.g. face-centred neighbours at 3.84 A meet through two images along y or z
    basis = get_basis("szv-molopt-sr")
    rec = toy_record(Structure.from_ase(atoms), basis, cut)
    layout = OrbitalLayout(basis, [14])
    data = record_to_data(rec, layout, torch.float64)
    pairs = data.edge_index.T.tolist()
    assert len({tuple(p) for p in pairs}) < len(pairs)  # the case under test is present
    return data, DatasetInfo(layout, cut)


@pytest.mark.parametrize("name", sorted({n for n, _ in _cases()}))
def test_partitioned_equals_full_with_multi_image_pairs(name, narrow_graph):
    data, info = narrow_graph
    model = _model(name, None, info)
    full = _run(model, data)
    with pytest.raises(GraphError, match="two periodic images"):
        partition_for_model(data, model, "slices", n_slices=2)
    parts = partition_for_model(data, model, "slices", n_slices=2, allow_self_images=True)
    assert _maxdiff(_partitioned(model, parts, data), full) < TOL, f"{name}: partitioned != full"
