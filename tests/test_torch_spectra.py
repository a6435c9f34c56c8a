"""Torch assembly of H(k), S(k) and generalized eigenvalues against the scipy path (zoo.physics.assembly)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
import torch
from ase.build import molecule

from tests.conftest import tiny_hfo2
from zoo.data.format import Structure
from zoo.data.synthetic import toy_record
from zoo.data.torch_data import collate, record_to_data
from zoo.errors import ZooError
from zoo.physics.basis import BasisSet, OrbitalLayout, get_basis
from zoo.physics.torch_spectra import (
    basis_order_rank, bloch_sum, cholesky_overlap, generalized_eigvalsh, kgrid_size, monkhorst_pack,
    periodic_directions, random_kpoints, split_batch,
)

# O's shells out of l order (p before s), so the padded slot order differs from the basis order and
# an exact match with the flat-block assembly needs the orbital rank
SHUFFLED = BasisSet("shuffled", {72: (0, 0, 1, 2), 8: (1, 0)})
K_GENERAL = [0.13, -0.27, 0.41]


def _periodic(seed: int = 0, basis: BasisSet = SHUFFLED):
    rec = toy_record(Structure.from_ase(tiny_hfo2(seed, reps=(1, 1, 1))), basis, 4.0, name=f"hfo2-{seed}", seed=seed)
    return rec, OrbitalLayout(basis, [72, 8])


def _molecule():
    basis = get_basis("def2-svp")
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=1)
    rec = toy_record(Structure.from_ase(atoms), basis, 6.0, name="ethanol")
    return rec, OrbitalLayout(basis, [1, 6, 8])


def _assemble(data, which: str, k, rank=None, hermitize=False):
    node, edge = (data.y_node, data.y_edge) if which == "H" else (data.s_node, data.s_edge)
    return bloch_sum(node, edge, data.edge_index, data.edge_shift, data.node_orb_mask, k,
                     hermitize=hermitize, orbital_rank=rank)


@pytest.mark.parametrize("system", ["periodic", "molecule"])
@pytest.mark.parametrize("k", [None, K_GENERAL])
def test_bloch_sum_equals_scipy_assembly(system, k):
    rec, layout = _periodic() if system == "periodic" else _molecule()
    data = record_to_data(rec, layout, torch.float64)
    rank = basis_order_rank(layout, data.z)
    assert system == "molecule" or (data.edge_shift != 0).any()  # images really enter the Bloch sum
    for which in ("H", "S"):
        ref = rec.matrix(which, k).toarray()
        got = _assemble(data, which, k, rank).numpy()
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-13, rtol=0)
        # hermitized, as Record.eigvalsh uses it
        ref_h = rec.matrix(which, k, hermitize=True).toarray()
        np.testing.assert_allclose(_assemble(data, which, k, rank, hermitize=True).numpy(), ref_h, atol=1e-13, rtol=0)
    if k is None:
        assert not _assemble(data, "H", k).is_complex()  # Gamma of real blocks stays real
    if system == "periodic" and k is not None:
        # a non-trivial phase: H(k) differs from H(Gamma)
        assert np.abs(rec.matrix("H", k).toarray() - rec.matrix("H").toarray()).max() > 1e-3


def test_batched_k_equals_single_k_and_slot_order_is_a_permutation():
    rec, layout = _periodic()
    data = record_to_data(rec, layout, torch.float64)
    ks = torch.tensor([[0.0, 0.0, 0.0], K_GENERAL, [0.5, 0.25, -0.5]], dtype=torch.float64)
    many = _assemble(data, "H", ks)
    assert many.shape[0] == 3
    for a in range(3):
        np.testing.assert_allclose(many[a].numpy(), _assemble(data, "H", ks[a]).numpy(), atol=1e-14)
    # slot order vs basis order: the same matrix up to a permutation, hence the same spectrum
    e_slot = torch.linalg.eigvalsh(_assemble(data, "H", K_GENERAL, hermitize=True))
    e_basis = torch.linalg.eigvalsh(_assemble(data, "H", K_GENERAL, basis_order_rank(layout, data.z), hermitize=True))
    np.testing.assert_allclose(e_slot.numpy(), e_basis.numpy(), atol=1e-12)


@pytest.mark.parametrize("k", [None, K_GENERAL])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-11), (torch.float32, 2e-4)])
def test_generalized_eigenvalues_equal_scipy_eigh(k, dtype, tol):
    rec, layout = _periodic(seed=2)
    data = record_to_data(rec, layout, dtype)
    h = _assemble(data, "H", k, hermitize=True)
    s = _assemble(data, "S", k, hermitize=True)
    got = generalized_eigvalsh(h, s, name="toy")
    ref = sla.eigh(rec.matrix("H", k, hermitize=True).toarray(), rec.matrix("S", k, hermitize=True).toarray(),
                   eigvals_only=True)
    assert got.dtype == dtype  # eigenvalues are real in the input precision, at Gamma and at k
    np.testing.assert_allclose(got.double().numpy(), ref, atol=tol, rtol=0)
    # S matters: the orthonormal-basis spectrum of H is different
    assert np.abs(torch.linalg.eigvalsh(h).double().numpy() - ref).max() > 1e-2
    # a reused Cholesky factor gives the same numbers
    np.testing.assert_allclose(generalized_eigvalsh(h, factor=cholesky_overlap(s)).double().numpy(),
                               got.double().numpy(), atol=tol)


def test_spinful_blocks_assemble_like_the_flat_spinful_record():
    from zoo.data.synthetic import toy_spinful_record
    from zoo.physics.torch_spectra import spinful_overlap_blocks

    rec = toy_spinful_record(Structure.from_ase(tiny_hfo2(0, reps=(1, 1, 1))), SHUFFLED, 4.0)
    layout = OrbitalLayout(SHUFFLED, [72, 8])
    data = record_to_data(rec, layout, torch.float64)
    assert data.y_node.is_complex() and data.node_orb_mask.shape[1] == 2 * layout.n_max
    rank = basis_order_rank(layout, data.z)  # spinless ranks, doubled inside for the spin-major layout
    s_node, s_edge = spinful_overlap_blocks(data.s_node), spinful_overlap_blocks(data.s_edge)
    for k in (None, K_GENERAL):
        h = _assemble(data, "H", k, rank)
        np.testing.assert_allclose(h.numpy(), rec.matrix("H", k).toarray(), atol=1e-13, rtol=0)
        s = bloch_sum(s_node, s_edge, data.edge_index, data.edge_shift, data.node_orb_mask, k, hermitize=False,
                      orbital_rank=rank)
        np.testing.assert_allclose(s.numpy(), rec.matrix("S", k).toarray(), atol=1e-13, rtol=0)
        ref = sla.eigh(rec.matrix("H", k, hermitize=True).toarray(), rec.matrix("S", k, hermitize=True).toarray(),
                       eigvals_only=True)
        # default (slot) orbital order for both H and S: the spectrum needs the same order, not the basis one
        got = generalized_eigvalsh(bloch_sum(data.y_node, data.y_edge, data.edge_index, data.edge_shift,
                                             data.node_orb_mask, k),
                                   bloch_sum(s_node, s_edge, data.edge_index, data.edge_shift, data.node_orb_mask, k))
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-11, rtol=0)
        # time reversal with spin-orbit coupling: Kramers pairs, every level twice at Gamma
        if k is None:
            np.testing.assert_allclose(got[0::2].numpy(), got[1::2].numpy(), atol=1e-10)
            assert np.abs(np.diff(got[1::2].numpy())).min() > 1e-6  # ...and the pairs are split by SOC


def test_indefinite_overlap_is_refused_with_the_name():
    rec, layout = _periodic()
    data = record_to_data(rec, layout, torch.float64)
    h = _assemble(data, "H", K_GENERAL, hermitize=True)
    s = _assemble(data, "S", K_GENERAL, hermitize=True)
    shift = float(torch.linalg.eigvalsh(s).min()) + 0.3  # push the lowest eigenvalue to -0.3
    s_bad = s - shift * torch.eye(s.shape[-1], dtype=s.dtype)
    with pytest.raises(ZooError, match=r"S\(k\) of dataset 'x', structure 'y' is not positive definite "
                                       r"\(lowest eigenvalue -0\.3\)"):
        generalized_eigvalsh(h, s_bad, name="dataset 'x', structure 'y'")


def test_split_batch_gives_each_structure_its_own_matrix():
    (r0, layout), (r1, _) = _periodic(0), _periodic(1)
    d0, d1 = record_to_data(r0, layout, torch.float64), record_to_data(r1, layout, torch.float64)
    batch = collate([d0, d1, d0])
    pieces = split_batch(batch)
    assert [p.name for p in pieces] == ["hfo2-0", "hfo2-1", "hfo2-0"]
    assert [p.nodes.stop - p.nodes.start for p in pieces] == [d0.num_nodes, d1.num_nodes, d0.num_nodes]
    for piece, rec in zip(pieces, (r0, r1, r0)):
        h = bloch_sum(batch.y_node[piece.nodes], batch.y_edge[piece.edges], piece.local_edge_index(batch),
                      batch.edge_shift[piece.edges], batch.node_orb_mask[piece.nodes], K_GENERAL,
                      hermitize=False, orbital_rank=basis_order_rank(layout, batch.z[piece.nodes]))
        np.testing.assert_allclose(h.numpy(), rec.matrix("H", K_GENERAL).toarray(), atol=1e-13)
    single = split_batch(d1)  # a plain Data is one structure
    assert len(single) == 1 and single[0].edges == slice(0, d1.edge_index.shape[1]) and single[0].name == "hfo2-1"


def test_kpoint_sampling():
    mp = monkhorst_pack((3, 2, 4), pbc=(True, True, False))
    assert mp.shape == (6, 3)
    assert torch.all(mp[:, 2] == 0)
    # Monkhorst-Pack: symmetric about Gamma; odd sizes hold Gamma, even ones do not
    assert sorted(mp[:, 0].unique().tolist()) == pytest.approx([-1 / 3, 0.0, 1 / 3])
    assert sorted(mp[:, 1].unique().tolist()) == pytest.approx([-0.25, 0.25])
    gc = monkhorst_pack((4, 1, 1), gamma_centered=True)
    assert sorted(gc[:, 0].tolist()) == pytest.approx([-0.25, 0.0, 0.25, 0.5])
    assert kgrid_size(np.diag([5.0, 10.0, 20.0]), (True, True, False), density=3.0) == (4, 2, 1)  # ceil(2 pi 3 / a)

    k1 = random_kpoints(5, (True, False, True), torch.Generator().manual_seed(7))
    k2 = random_kpoints(5, (True, False, True), torch.Generator().manual_seed(7))
    assert k1.shape == (5, 3) and torch.equal(k1, k2)
    assert torch.all(k1[:, 1] == 0) and torch.all(k1.abs() <= 0.5) and k1[:, 0].std() > 0
    assert torch.equal(random_kpoints(5, False), torch.zeros(1, 3, dtype=torch.float64))  # molecules: Gamma only

    # periodic axes inferred from image shifts: a slab (pbc x, y only) has none along z; a molecule none at all
    atoms = tiny_hfo2(0, reps=(1, 1, 1))
    atoms.pbc = (True, True, False)
    slab = record_to_data(toy_record(Structure.from_ase(atoms), SHUFFLED, 4.0), OrbitalLayout(SHUFFLED, [72, 8]))
    assert periodic_directions(slab).tolist() == [True, True, False]
    mol, layout = _molecule()
    assert periodic_directions(record_to_data(mol, layout)).tolist() == [False, False, False]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rec, layout = _periodic()
    data = record_to_data(rec, layout, torch.float64)
    ref = generalized_eigvalsh(_assemble(data, "H", K_GENERAL, hermitize=True), _assemble(data, "S", K_GENERAL))
    dc = data.to("cuda")
    got = generalized_eigvalsh(_assemble(dc, "H", K_GENERAL, hermitize=True), _assemble(dc, "S", K_GENERAL))
    assert got.device.type == "cuda"
    np.testing.assert_allclose(got.cpu().numpy(), ref.numpy(), atol=1e-10)
