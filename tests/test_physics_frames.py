"""Edge frames and LC-Net local frames (zoo.physics.frames), and the shared edge bookkeeping
(reverse-edge lookup, species index) the frame-based backbones rely on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data.graph import neighbor_graph, reverse_edge_index, species_index
from zoo.errors import GraphError
from zoo.models.contract import reverse_edges
from zoo.physics.frames import edge_frame, local_frame
from zoo.physics.wigner import random_rotation, spherical_harmonics, wigner_D_list

EZ = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def _vectors() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(40, 3, dtype=torch.float64, generator=g) * 2.0
    poles = torch.tensor([[0, 0, 1.5], [0, 0, -0.7], [1e-9, 0, 1], [0, -1e-12, -1], [1, 0, 0], [0, 1, 0],
                          [1, 1, -0.0], [-1, 0.5, 0.0]], dtype=torch.float64)
    return torch.cat([v, poles])


def _assert_rotations(R: torch.Tensor, det: float = 1.0) -> None:
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.full(R.shape[:-2], det, dtype=R.dtype), atol=1e-12, rtol=0)


def test_edge_frame_is_a_rotation_taking_the_edge_to_z():
    v = _vectors()
    R = edge_frame(v)
    assert torch.isfinite(R).all()
    _assert_rotations(R)
    unit = v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(torch.einsum("eab,eb->ea", R, unit), EZ.expand_as(unit), atol=1e-12, rtol=0)
    torch.testing.assert_close(R[-8], torch.eye(3, dtype=torch.float64))  # +z: the identity
    torch.testing.assert_close(R[-7], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))


def test_edge_frame_gradient_is_finite_on_the_axis():
    v = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -1.0], [0.3, -0.2, 0.9]], dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 3, 3, dtype=torch.float64)
    (g,) = torch.autograd.grad((edge_frame(v) * w).sum(), v)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("improper", [False, True])
def test_edge_frame_is_equivariant_up_to_a_roll_about_z(improper):
    """edge_frame(Q v) = G edge_frame(v) Q^T with G e_z = e_z (a roll; a mirror containing z if det Q = -1)."""
    v = _vectors()
    Q = random_rotation(3, improper)
    G = edge_frame(v @ Q.T) @ Q @ edge_frame(v).transpose(1, 2)
    _assert_rotations(G, -1.0 if improper else 1.0)
    torch.testing.assert_close(G[:, 2], EZ.expand(len(v), 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(G[:, :, 2], EZ.expand(len(v), 3), atol=1e-12, rtol=0)


def test_edge_frame_wigner_puts_the_edge_on_the_polar_axis():
    """D(R_e) Y_l(r_hat) = Y_l(e_z): only m = 0 survives in the edge frame, for every l."""
    v = _vectors()
    unit = v / v.norm(dim=1, keepdim=True)
    for l, D in enumerate(wigner_D_list(4, edge_frame(v))):
        local = torch.einsum("eab,eb->ea", D, spherical_harmonics(l, unit))
        torch.testing.assert_close(local, spherical_harmonics(l, EZ[None]).expand_as(local), atol=1e-12, rtol=0)


def test_local_frame_rows_and_equivariance():
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.randn(30, 3, dtype=torch.float64, generator=g), torch.randn(30, 3, dtype=torch.float64, generator=g)
    R, degenerate = local_frame(v1, v2)
    assert not degenerate.any()
    _assert_rotations(R)
    x = v1 / v1.norm(dim=1, keepdim=True)
    y = torch.linalg.cross(v1, v2, dim=1)
    y = y / y.norm(dim=1, keepdim=True)
    torch.testing.assert_close(R[:, 0], x, atol=1e-14, rtol=0)
    torch.testing.assert_close(R[:, 1], y, atol=1e-14, rtol=0)
    torch.testing.assert_close(R[:, 2], torch.linalg.cross(x, y, dim=1), atol=1e-14, rtol=0)
    # y' is normal to the (v1, v2) plane, so v2 lies in the local x'z' plane
    assert float((R[:, 1] * v2).sum(1).abs().max()) < 1e-12
    for improper in (False, True):
        Q = random_rotation(4, improper)
        Rq, _ = local_frame(v1 @ Q.T, v2 @ Q.T)
        flip = torch.diag(torch.tensor([1.0, -1.0 if improper else 1.0, 1.0], dtype=torch.float64))
        torch.testing.assert_close(Rq, flip @ R @ Q.T, atol=1e-12, rtol=0)


def test_local_frame_flags_parallel_vectors():
    v1 = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    v2 = torch.stack([-2 * v1[0], v1[1] * (1 + 1e-9), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)])
    R, degenerate = local_frame(v1, v2)
    assert degenerate.tolist() == [True, True, False]
    assert torch.isfinite(R).all()
    _assert_rotations(R)
    torch.testing.assert_close(R[:, 0], v1 / v1.norm(dim=1, keepdim=True), atol=1e-14, rtol=0)


# -- reverse edges and species index -----------------------------------------------------------

def test_reverse_edges_with_self_images_and_absent_partners():
    # (0,0,+a) pairs with (0,0,-a); (0,1,0) with (1,0,0); (1,1,+b) has no partner; (0,1,+c) neither
    ei = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 0], [0, 1], [1, 0]])
    sh = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0], [-1, 0, 0], [0, 0, 1], [0, 0, 1]])
    expect = [4, 2, 1, -1, 0, -1, -1]
    assert reverse_edge_index(ei, sh).tolist() == expect
    t = reverse_edges(torch.as_tensor(ei.T), torch.as_tensor(sh, dtype=torch.float64), 2)
    assert t.dtype == torch.long and t.tolist() == expect
    assert reverse_edge_index(np.zeros((0, 2), dtype=int), np.zeros((0, 3), dtype=int)).shape == (0,)
    with pytest.raises(GraphError, match="edge_index"):
        reverse_edge_index(ei.T, sh)


def test_reverse_edges_on_a_periodic_graph_are_an_involution():
    from ase.build import bulk
    atoms = bulk("Si", "diamond", a=5.43)  # 2 atoms: every neighbour is a periodic image
    ei, sh = neighbor_graph(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, 4.0)
    rev = reverse_edge_index(ei, sh)
    assert (rev >= 0).all() and (rev[rev] == np.arange(len(ei))).all()
    assert (ei[rev] == ei[:, ::-1]).all() and (sh[rev] == -sh).all()
    assert ((ei[:, 0] == ei[:, 1]) & (sh != 0).any(1)).sum() > 0  # self-image edges are present


def test_species_index_table():
    t = species_index([72, 8, 8])
    assert t.shape == (73,) and t[8] == 0 and t[72] == 1
    assert (np.delete(t, [8, 72]) == -1).all()
    with pytest.raises(GraphError, match="atomic numbers"):
        species_index([])
