"""Wigner-D, spherical harmonics and the internal convention's named functions."""

import numpy as np
import pytest
import torch

from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.conventions import FUNCTIONS
from zoo.physics.wigner import (_P, random_rotation, spherical_harmonics, wigner_D, wigner_D_batch, wigner_D_layout,
                                wigner_D_list, wigner_D_shells)


def racah(name: str, r: np.ndarray) -> np.ndarray:
    """Racah-normalised real solid harmonics with positive leading coefficient (textbook formulas)."""
    x, y, z = r.T
    r2 = x * x + y * y + z * z
    s3, s15 = np.sqrt(3), np.sqrt(15)
    table = {
        "s": np.ones_like(x), "py": y, "pz": z, "px": x,
        "dxy": s3 * x * y, "dyz": s3 * y * z, "dz2": 0.5 * (3 * z * z - r2), "dxz": s3 * x * z,
        "dx2-y2": 0.5 * s3 * (x * x - y * y),
        "fy(3x2-y2)": np.sqrt(5 / 8) * y * (3 * x * x - y * y), "fxyz": s15 * x * y * z,
        "fyz2": np.sqrt(3 / 8) * y * (5 * z * z - r2), "fz3": 0.5 * z * (5 * z * z - 3 * r2),
        "fxz2": np.sqrt(3 / 8) * x * (5 * z * z - r2), "fz(x2-y2)": 0.5 * s15 * z * (x * x - y * y),
        "fx(x2-3y2)": np.sqrt(5 / 8) * x * (x * x - 3 * y * y),
    }
    return table[name]


@pytest.mark.parametrize("l", [0, 1, 2, 3])
def test_internal_harmonics_are_the_named_functions(l):
    r = np.random.default_rng(l).normal(size=(50, 3))
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    y = spherical_harmonics(l, torch.as_tensor(r)).numpy()
    for name, (fl, m) in FUNCTIONS.items():
        if fl == l:
            np.testing.assert_allclose(y[:, m + l], np.sqrt(2 * l + 1) * racah(name, r), atol=1e-12, err_msg=name)


@pytest.mark.parametrize("improper", [False, True])
@pytest.mark.parametrize("l", [0, 1, 2, 3, 4])
def test_wigner_is_a_representation(l, improper):
    r1, r2 = random_rotation(1, improper), random_rotation(2)
    torch.testing.assert_close(wigner_D(l, r1 @ r2), wigner_D(l, r1) @ wigner_D(l, r2), atol=1e-12, rtol=0)
    d = wigner_D(l, r1)
    torch.testing.assert_close(d @ d.T, torch.eye(2 * l + 1, dtype=d.dtype), atol=1e-12, rtol=0)


@pytest.mark.parametrize("l", [1, 2, 3])
def test_harmonics_rotate_with_wigner(l):
    R = random_rotation(7)
    r = torch.randn(20, 3, dtype=torch.float64)
    torch.testing.assert_close(spherical_harmonics(l, r @ R.T), spherical_harmonics(l, r) @ wigner_D(l, R).T,
                               atol=1e-12, rtol=0)


def test_parity_of_inversion():
    for l in range(4):
        torch.testing.assert_close(wigner_D(l, -torch.eye(3, dtype=torch.float64)),
                                   (-1) ** l * torch.eye(2 * l + 1, dtype=torch.float64))


def test_l1_is_py_pz_px():
    R = random_rotation(3)
    torch.testing.assert_close(wigner_D(1, R), R[[1, 2, 0]][:, [1, 2, 0]], atol=1e-12, rtol=0)


def test_block_diagonal_over_shells():
    R = random_rotation(4)
    D = wigner_D_shells([0, 1, 2], R)
    assert D.shape == (9, 9)
    torch.testing.assert_close(D[4:, 4:], wigner_D(2, R))
    assert float(D[:4, 4:].abs().max()) == 0.0


# -- the batched Wigner-D shared by every backbone ---------------------------------------------



def _e3nn_reference(l: int, R: torch.Tensor) -> torch.Tensor:
    """e3nn's own D (Euler angles + matrix exponentials of its generators), built in float64.

    e3nn builds its generators in the default dtype, so this reference (test only) switches
    it; conftest restores it after every test."""
    from e3nn import o3
    torch.set_default_dtype(torch.float64)
    return o3.Irrep(l, (-1) ** l).D_from_matrix(_P @ R @ _P.T)


def _rotations(n: int, seed: int, improper: bool = False) -> torch.Tensor:
    return torch.stack([random_rotation(seed * 1000 + k, improper and k % 2 == 1) for k in range(n)])


@pytest.mark.parametrize("l", [0, 1, 2, 3, 4, 6])
def test_batched_is_a_representation_of_o3(l):
    r1, r2 = _rotations(16, 1, improper=True), _rotations(16, 2, improper=True)
    d12, d1, d2 = wigner_D_batch(l, r1 @ r2), wigner_D_batch(l, r1), wigner_D_batch(l, r2)
    assert d12.shape == (16, 2 * l + 1, 2 * l + 1)
    torch.testing.assert_close(d12, d1 @ d2, atol=1e-12, rtol=0)
    torch.testing.assert_close(d1 @ d1.transpose(1, 2), torch.eye(2 * l + 1, dtype=torch.float64).expand_as(d1),
                               atol=1e-12, rtol=0)
    # improper rotations carry the parity (-1)^l
    torch.testing.assert_close(wigner_D_batch(l, -r1), (-1) ** l * d1, atol=1e-12, rtol=0)


@pytest.mark.parametrize("improper", [False, True])
def test_batched_agrees_with_e3nn_and_single_matrix(improper):
    rs = _rotations(5, 3, improper=improper)
    for l in range(5):
        batch = wigner_D_batch(l, rs)
        for k in range(len(rs)):
            torch.testing.assert_close(batch[k], wigner_D(l, rs[k]), atol=1e-14, rtol=0)
            torch.testing.assert_close(batch[k], _e3nn_reference(l, rs[k]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("lmax", [2, 4])
def test_batched_rotates_harmonics(lmax):
    """Y_l(R r) = D_l(R) Y_l(r), per edge, for proper and improper R."""
    rs = _rotations(12, 4, improper=True)
    r = torch.randn(12, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for l, D in enumerate(wigner_D_list(lmax, rs)):
        lhs = spherical_harmonics(l, torch.einsum("eab,eb->ea", rs, r))
        rhs = torch.einsum("eab,eb->ea", D, spherical_harmonics(l, r))
        torch.testing.assert_close(lhs, rhs, atol=1e-12, rtol=0)


def test_layout_is_block_diagonal_over_slots():
    layout = OrbitalLayout(get_basis("szv-molopt-sr"), [8, 72])  # Hf: s s p d, O: s p -> slots s s p d
    rs = _rotations(3, 6, improper=True)
    D = wigner_D_layout(layout, rs)
    assert D.shape == (3, layout.n_max, layout.n_max)
    for k in range(3):
        torch.testing.assert_close(D[k], wigner_D_shells(layout.slot_ls, rs[k]), atol=1e-14, rtol=0)
        for l, o in zip(layout.slot_ls, layout.slot_offsets):
            torch.testing.assert_close(D[k, o:o + 2 * l + 1, o:o + 2 * l + 1], wigner_D(l, rs[k]), atol=1e-14, rtol=0)
    off = D.clone()
    for l, o in zip(layout.slot_ls, layout.slot_offsets):
        off[:, o:o + 2 * l + 1, o:o + 2 * l + 1] = 0
    assert float(off.abs().max()) == 0.0
    # leading batch axes are kept
    assert wigner_D_layout([1, 2], rs.reshape(3, 1, 3, 3).expand(3, 2, 3, 3)).shape == (3, 2, 8, 8)


def test_batched_dtype_gradient_and_default_dtype():
    assert torch.get_default_dtype() == torch.float32
    rs = _rotations(4, 7)
    d32 = wigner_D_batch(3, rs.float())
    assert d32.dtype == torch.float32
    torch.testing.assert_close(d32.double(), wigner_D_batch(3, rs), atol=2e-6, rtol=0)
    # differentiable: d/dt of D(exp(t K) R) at t = 0 equals dD/dR . (K R), checked by central differences
    K = torch.tensor([[0.0, -0.3, 0.2], [0.3, 0.0, -0.5], [-0.2, 0.5, 0.0]], dtype=torch.float64)
    R = rs[0].clone().requires_grad_(True)
    w = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (g,) = torch.autograd.grad((wigner_D_batch(3, R) * w).sum(), R)
    h = 1e-6
    fd = ((wigner_D_batch(3, torch.matrix_exp(h * K) @ rs[0]) - wigner_D_batch(3, torch.matrix_exp(-h * K) @ rs[0]))
          * w).sum() / (2 * h)
    assert abs(float((g * (K @ rs[0])).sum()) - float(fd)) < 1e-7
    assert torch.get_default_dtype() == torch.float32


def test_batched_speed_is_sane():
    """One vectorised pass: 20k rotations up to l = 4 must cost far less than a per-edge loop would."""
    import time
    rs = _rotations(8, 8).repeat(2500, 1, 1)
    wigner_D_list(4, rs[:10])
    t = time.perf_counter()
    ds = wigner_D_list(4, rs)
    batched = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(50):
        wigner_D_list(4, rs[k])
    per_edge = (time.perf_counter() - t) / 50
    assert ds[4].shape == (20000, 9, 9)
    assert batched < 0.1 * per_edge * len(rs), (batched, per_edge)


def test_no_backbone_flips_the_default_dtype(monkeypatch):
    """escn, sk and trivial build and run without ever calling torch.set_default_dtype."""
    from tests.conftest import tiny_hfo2
    from zoo.data.format import Structure
    from zoo.data.synthetic import toy_record
    from zoo.data.torch_data import DatasetInfo, record_to_data
    from zoo.models.registry import build_model

    assert torch.get_default_dtype() == torch.float32
    calls = []
    real = torch.set_default_dtype
    monkeypatch.setattr(torch, "set_default_dtype", lambda d: (calls.append(d), real(d)))
    basis = get_basis("szv-molopt-sr")
    layout = OrbitalLayout(basis, [8, 72])
    data = record_to_data(toy_record(Structure.from_ase(tiny_hfo2(0, (1, 1, 1))), basis, 3.5), layout,
                          dtype=torch.float32)
    small = {"escn": dict(sphere_channels=4, attn_hidden_channels=4, attn_alpha_channels=4, attn_value_channels=2,
                          ffn_hidden_channels=8, edge_channels=8, num_rbf=8), "sk": {}, "trivial": {}}
    for name, kw in small.items():
        model = build_model(name, DatasetInfo(layout, 3.5), **kw)
        pred = model(data)
        pred.edge_blocks.sum().backward()
        assert pred.edge_blocks.dtype == torch.float32 and torch.isfinite(pred.edge_blocks).all(), name
    assert calls == [] and torch.get_default_dtype() == torch.float32
