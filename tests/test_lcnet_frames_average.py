"""lcnet `degenerate_frames: average`: frame averaging over the candidate frames of tied blocks.

On perfect crystals (ties everywhere) the averaged model is rotation-covariant to rounding while
the paper's Algorithm 1 (global-coordinate tie-breaking) is not; on rattled cells (no ties) the two
rules give bit-identical outputs."""

import pytest
import torch
from ase.build import bulk

from tests.conftest import tiny_hfo2
from zoo.data.format import Structure
from zoo.data.torch_data import DatasetInfo, block_masks, structure_to_data
from zoo.models.contract import hermiticity_error
from zoo.models.lcnet import LCNet
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.units import HARTREE_EV
from zoo.physics.wigner import random_rotation, wigner_D_shells

BASIS = get_basis("szv-molopt-sr")
MEV = 1000.0 * HARTREE_EV


def _graph(atoms, elements, cutoff):
    layout = OrbitalLayout(BASIS, elements)
    return structure_to_data(Structure.from_ase(atoms), layout, cutoff, torch.float64), DatasetInfo(layout, cutoff)


def _model(info, rule, **kw):
    torch.manual_seed(0)
    m = LCNet(info, degenerate_frames=rule, **kw).double().eval()
    with torch.no_grad():  # away from the initial values (small last layers), so nothing vanishes
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


def _rotated(data, R):
    dr = data.clone()
    dr.pos, dr.cell = data.pos @ R.T, data.cell @ R.T
    return dr


def _rotation_error_mev(model, data, info, seed):
    """Max |D H(x) D^T - H(Q x)| over every real entry of every block, meV."""
    Q = random_rotation(seed)
    with torch.no_grad():
        model._cache.clear()
        p = model(data)
        model._cache.clear()
        pq = model(_rotated(data, Q))
    D = wigner_D_shells(info.layout.slot_ls, Q)
    nm, em = block_masks(data)
    err = torch.cat([((D @ p.node_blocks @ D.T - pq.node_blocks)[nm]).abs(),
                     ((D @ p.edge_blocks @ D.T - pq.edge_blocks)[em]).abs()]).max()
    return float(err) * MEV, p


CRYSTALS = {  # name: (atoms, elements, cutoff)
    "zincblende-SiGe": (lambda: bulk("SiGe", "zincblende", a=5.54, cubic=True), [14, 32], 4.0),
    "rocksalt-HfO": (lambda: bulk("HfO", "rocksalt", a=4.6, cubic=True), [8, 72], 3.4),
    "fluorite-HfO2": (lambda: bulk("HfO2", "fluorite", a=5.07, cubic=True), [8, 72], 3.7),
}


@pytest.mark.parametrize("name", list(CRYSTALS))
def test_average_is_covariant_on_perfect_crystals(name):
    make, elements, cutoff = CRYSTALS[name]
    data, info = _graph(make(), elements, cutoff)
    first = _model(info, "algorithm1")
    avg = _model(info, "average")
    fr = avg.frames(data)
    n_node, n_pair = int(fr.node.cand.tied.sum()), int(fr.pair.cand.tied.sum())
    assert n_node > 0 and n_pair > 0  # ties everywhere: the test exercises both branches
    errs = {}
    for rule, model in (("algorithm1", first), ("average", avg)):
        errs[rule] = max(_rotation_error_mev(model, data, info, seed)[0] for seed in (1, 2))
    _, p = _rotation_error_mev(avg, data, info, 1)
    scale = float(p.edge_blocks.abs().max()) * MEV
    print(f"\nlcnet on perfect {name} ({data.num_nodes} atoms): {n_node}/{data.num_nodes} atoms and "
          f"{n_pair}/{fr.pair.R.shape[0]} pairs tied ({fr.node.cand.owner.numel()} + "
          f"{fr.pair.cand.owner.numel()} candidate frames); max rotation error algorithm1 "
          f"{errs['algorithm1']:.3e} meV, average {errs['average']:.3e} meV (largest entry {scale:.3e} meV)")
    assert errs["average"] < 1e-10 * max(scale, 1.0)
    assert errs["algorithm1"] > 1e-3 * scale  # the paper's rule is NOT covariant here
    assert hermiticity_error(p, data, relative=True) < 1e-12


def test_average_equals_algorithm1_without_ties():
    """Rattled cell: no ties, no candidate frames, bit-identical predictions and gradients."""
    data, info = _graph(tiny_hfo2(3), [8, 72], 4.0)
    first, avg = _model(info, "algorithm1"), _model(info, "average")
    fr = avg.frames(data)
    assert fr.node_cand is None and fr.pair_cand is None
    p1, p2 = first(data), avg(data)
    assert torch.equal(p1.node_blocks, p2.node_blocks) and torch.equal(p1.edge_blocks, p2.edge_blocks)


def test_average_on_a_tied_crystal_is_atom_order_independent_and_differentiable():
    make, elements, cutoff = CRYSTALS["zincblende-SiGe"]
    atoms = make()
    data, info = _graph(atoms, elements, cutoff)
    model = _model(info, "average")
    out = model(data)
    loss = out.node_blocks.square().sum() + out.edge_blocks.square().sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    perm = torch.randperm(len(atoms), generator=torch.Generator().manual_seed(0)).numpy()
    dp, _ = _graph(atoms[perm], elements, cutoff)
    with torch.no_grad():
        model._cache.clear()
        op = model(dp)
    torch.testing.assert_close(op.node_blocks, out.node_blocks.detach()[perm], atol=1e-12, rtol=0)


def test_unknown_rule_is_refused():
    from zoo.errors import ConfigError

    _, info = _graph(bulk("Si", "diamond", a=5.43), [14], 3.0)
    with pytest.raises(ConfigError, match="degenerate_frames"):
        LCNet(info, degenerate_frames="vote")


def test_average_focal_loss_is_rotation_invariant_on_a_perfect_crystal():
    """With ties, the focal loss of a tied block is its mean over the candidate frames: the loss of
    the rotated structure (rotated targets and predictions) is the same; in the Algorithm-1 frames
    it is not."""
    from zoo.data.synthetic import toy_record
    from zoo.data.torch_data import record_to_data

    make, elements, cutoff = CRYSTALS["fluorite-HfO2"]
    layout = OrbitalLayout(BASIS, elements)
    data = record_to_data(toy_record(Structure.from_ase(make()), BASIS, cutoff, overlap=False), layout, torch.float64)
    info = DatasetInfo(layout, cutoff)
    Q = random_rotation(4)
    D = wigner_D_shells(info.layout.slot_ls, Q)
    dq = _rotated(data, Q)
    dq.y_node, dq.y_edge = D @ data.y_node @ D.T, D @ data.y_edge @ D.T
    g = torch.Generator().manual_seed(0)
    pred = (data.y_node + 0.01 * torch.randn(data.y_node.shape, generator=g, dtype=torch.float64),
            data.y_edge + 0.01 * torch.randn(data.y_edge.shape, generator=g, dtype=torch.float64))
    from zoo.models.contract import Prediction

    rel = {}
    for rule in ("algorithm1", "average"):
        model = _model(info, rule)
        s1, c1 = model.loss_terms(Prediction(*pred), data)
        s2, c2 = model.loss_terms(Prediction(D @ pred[0] @ D.T, D @ pred[1] @ D.T), dq)
        assert int(c1) == int(c2) == int(sum(m.sum() for m in block_masks(data)))
        rel[rule] = abs(float(s1) - float(s2)) / float(s1)
    print(f"\nfocal loss change under a rotation (perfect fluorite): algorithm1 {rel['algorithm1']:.2e}, "
          f"average {rel['average']:.2e} (relative)")
    assert rel["average"] < 1e-12 and rel["algorithm1"] > 1e-6


def test_average_with_two_models_is_covariant_and_hermitian():
    """The paper's separate forward/backward models: both see the same candidate frames."""
    make, elements, cutoff = CRYSTALS["zincblende-SiGe"]
    data, info = _graph(make(), elements, cutoff)
    model = _model(info, "average", twin_models=True)
    err, p = _rotation_error_mev(model, data, info, 3)
    assert err < 1e-10 * float(p.edge_blocks.abs().max()) * MEV
    assert hermiticity_error(p, data, relative=True) < 1e-12


@pytest.mark.parametrize("num_layers", [1])
def test_average_keeps_the_receptive_field(num_layers):
    """Candidate frames read the same neighbour lists as Algorithm 1: on a perfect (all-tied) crystal
    a halo of message_passing_layers hops is exact, one hop thinner is not."""
    from zoo.data.partition import partition, scatter_predictions
    from zoo.data.torch_data import collate

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((6, 1, 1))  # perfect geometry: ties everywhere
    atoms.numbers[::5] = 32  # a species pattern, so the thinner halo's missing neighbours show
    data, info = _graph(atoms, [14, 32], 2.6)  # nearest neighbours (2.35 A) only: below half the cell
    model = _model(info, "average", num_layers=num_layers)
    assert bool(model.frames(data).node.cand.tied.all())

    def run(d):
        with torch.no_grad():
            model._cache.clear()
            out = model(collate([d]))
        return out.node_blocks, out.edge_blocks

    full = run(data)
    for hops, exact in ((num_layers, False), (num_layers + 1, True)):
        parts = partition(data, "slices", n_slices=3, hops=hops, flow=model.message_flow)
        node, edge = scatter_predictions(parts, [run(p) for p in parts], data)
        diff = max(float((node - full[0]).abs().max()), float((edge - full[1]).abs().max()))
        assert (diff < 1e-10) == exact, (hops, diff)
