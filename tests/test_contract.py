"""The backbone contract, checked for every registered backbone.

Shapes and dtypes, rotation equivariance (Wigner-D), inversion parity, atom permutation,
hermiticity after symmetrization, and that gradients reach the parameters. Parameters are
perturbed away from their initial values first, so a zero-initialised output cannot pass by
accident.
"""

import numpy as np
import pytest
import torch

from tests.conftest import tiny_hfo2
from zoo.data.format import Structure
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import DatasetInfo, block_masks, record_to_data
from zoo.models import build_model, list_models, symmetrize_prediction
from zoo.physics.assembly import assemble, unpad_blocks
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.wigner import random_rotation, wigner_D_shells

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])
CUTOFF = 4.0


def make_model(name):
    torch.manual_seed(0)
    model = build_model(name, DatasetInfo(LAYOUT, CUTOFF, name="contract")).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def graph(atoms):
    rec = toy_record(Structure.from_ase(atoms), BASIS, CUTOFF, overlap=False)
    return rec, record_to_data(rec, LAYOUT, dtype=torch.float64)


def edge_keys(data):
    return [(int(i), int(j), *map(int, s)) for (i, j), s in zip(data.edge_index.T, data.edge_shift.round().long())]


@pytest.fixture(scope="module")
def structure():
    return tiny_hfo2(3)


@pytest.mark.parametrize("name", list_models())
def test_shapes_and_gradients(name, structure):
    model = make_model(name)
    _, d = graph(structure)
    pred = model(d)
    n = LAYOUT.n_max
    assert pred.node_blocks.shape == (d.num_nodes, n, n)
    assert pred.edge_blocks.shape == (d.edge_index.shape[1], n, n)
    assert torch.isfinite(pred.node_blocks).all() and torch.isfinite(pred.edge_blocks).all()
    nm, em = block_masks(d)
    assert pred.edge_blocks[em].abs().max() > 1e-6 and pred.node_blocks[nm].abs().max() > 1e-6
    loss = ((pred.node_blocks - d.y_node)[nm] ** 2).mean() + ((pred.edge_blocks - d.y_edge)[em] ** 2).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
@pytest.mark.parametrize("name", list_models())
def test_equivariance_and_parity(name, improper, structure):
    model = make_model(name)
    _, d = graph(structure)
    R = random_rotation(21, improper=improper)
    dr = d.clone()
    dr.pos = d.pos @ R.T
    dr.cell = d.cell @ R.T
    with torch.no_grad():
        p, pr = model(d), model(dr)
    D = wigner_D_shells(LAYOUT.slot_ls, R)
    nm, em = block_masks(d)
    scale = max(p.edge_blocks[em].abs().max(), p.node_blocks[nm].abs().max())
    err_n = ((D @ p.node_blocks @ D.T - pr.node_blocks)[nm]).abs().max() / scale
    err_e = ((D @ p.edge_blocks @ D.T - pr.edge_blocks)[em]).abs().max() / scale
    assert err_n < 1e-8 and err_e < 1e-8, (float(err_n), float(err_e))


@pytest.mark.parametrize("name", list_models())
def test_permutation(name, structure):
    model = make_model(name)
    _, d = graph(structure)
    perm = np.random.default_rng(0).permutation(len(structure))
    _, dp = graph(structure[perm])
    with torch.no_grad():
        p, pp = model(d), model(dp)
    inv = np.argsort(perm)  # old index a is new index inv[a]
    torch.testing.assert_close(pp.node_blocks[inv], p.node_blocks, atol=1e-9, rtol=1e-7)
    new_pos = {k: e for e, k in enumerate(edge_keys(dp))}
    idx = [new_pos[(int(inv[i]), int(inv[j]), *s)] for i, j, *s in edge_keys(d)]
    torch.testing.assert_close(pp.edge_blocks[idx], p.edge_blocks, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("name", list_models())
def test_hermitian_after_symmetrization(name, structure):
    model = make_model(name)
    rec, d = graph(structure)
    with torch.no_grad():
        p = symmetrize_prediction(model(d), d)
    z, ei = rec.numbers, rec.edge_index
    on = unpad_blocks(p.node_blocks.numpy(), LAYOUT.index, z, z)
    off = unpad_blocks(p.edge_blocks.numpy(), LAYOUT.index, z[ei[:, 0]], z[ei[:, 1]])
    h = assemble(rec.norb, on, ei, rec.edge_shift, off).toarray()
    np.testing.assert_allclose(h, h.T, atol=1e-12)
    hk = assemble(rec.norb, on, ei, rec.edge_shift, off, k=[0.2, -0.1, 0.3]).toarray()
    np.testing.assert_allclose(hk, hk.conj().T, atol=1e-12)
    assert np.abs(h).max() > 1e-6
