"""`hamgnn-soc` with `soc_head: su2` (zoo/models/hamgnn/su2.py): spinful blocks from irreps, no L blocks.

The head alone: its coupling map is orthogonal and spans exactly the time-reversal-even blocks
kron(I2, H0) + i sum_a kron(sigma_a, X_a); its irreps are those of the total-J form
(l_i x 1/2) x (l_j x 1/2); it is SU(2)-covariant, improper rotations included. The model: SU(2)
rotation, inversion, time reversal and raw hermiticity of both heads on the toy spinful record
(errors printed for the README), Kramers pairs of the assembled H, and a short fit in which the su2
head learns the toy's two-centre SOC between shells of different l that the so3 head cannot express.
"""

from collections import Counter

import pytest
import torch

from tests.conftest import perturbed, sige_chain_atoms, tiny_hfo2
from zoo.data.format import Structure
from zoo.data.synthetic import toy_spinful_record
from zoo.data.torch_data import DatasetInfo, block_masks, record_to_data
from zoo.errors import ConfigError
from zoo.models.contract import hermiticity_error
from zoo.models.hamgnn import HamGNNSOC
from zoo.models.hamgnn.su2 import SpinCoupling, pauli_expand
from zoo.physics.basis import OrbitalLayout, get_basis
from zoo.physics.spin import spin_identity, spinful_wigner, time_reverse
from zoo.physics.torch_spectra import bloch_sum
from zoo.physics.wigner import random_rotation, wigner_D, wigner_D_shells

BASIS = get_basis("szv-molopt-sr")
LAYOUT = OrbitalLayout(BASIS, [8, 72])  # O: s p, Hf: s s p d -> su2 needs K up to 5
CUTOFF = 4.0
INFO = DatasetInfo(LAYOUT, CUTOFF, spinful=True, name="su2-toy")
SMALL = dict(num_features=2, num_layers=1, radial_hidden=8)


def _irreps_D(irreps, R: torch.Tensor) -> torch.Tensor:
    """Block-diagonal D of coupled irreps (K, p) in the internal convention: wigner_D carries (-1)^K
    for an improper R, an irrep of parity p needs p instead."""
    improper = float(torch.linalg.det(R)) < 0
    blocks = []
    for mul, ir in irreps:
        d = wigner_D(ir.l, R)
        if improper and (-1) ** ir.l != ir.p:
            d = -d
        blocks += [d] * mul
    return torch.block_diag(*blocks)


@pytest.fixture(scope="module")
def heads():
    """Both heads, float64, parameters perturbed (so a zero-initialised term cannot pass by accident)."""
    out = {}
    for head, extra in (("so3", {}), ("su2", {"lmax": 5})):
        torch.manual_seed(0)  # the same initialisation whatever ran before
        out[head] = perturbed(HamGNNSOC(INFO, soc_head=head, **extra, **SMALL))
    return out


@pytest.fixture(scope="module")
def toy():
    rec = toy_spinful_record(Structure.from_ase(tiny_hfo2(3)), BASIS, CUTOFF, overlap=False)
    return record_to_data(rec, LAYOUT, dtype=torch.float64)


def test_coupling_is_orthogonal_and_spans_the_time_reversal_even_blocks():
    """3 n^2 coefficients <-> X exactly (orthogonal), and kron(I2, H0) + i sigma.X is every T-even block."""
    sc = SpinCoupling(LAYOUT)
    n = LAYOUT.n_max
    q = sc.q
    assert q.shape == (3 * n * n, 3 * n * n) == (3 * n * n, sc.irreps.dim)
    torch.testing.assert_close(q.T @ q, torch.eye(q.shape[1], dtype=q.dtype), atol=1e-12, rtol=0)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 2 * n, 2 * n, generator=g, dtype=torch.float64) \
        + 1j * torch.randn(2, 2 * n, 2 * n, generator=g, dtype=torch.float64)
    even = 0.5 * (z + time_reverse(z))  # a generic T-even block
    assert float((time_reverse(even) - even).abs().max()) < 1e-14
    # its Pauli components: H0 = (uu + dd)/2 real, X_a = Im tr_spin(sigma_a H)/2 real
    h0 = 0.5 * (even[:, :n, :n] + even[:, n:, n:])
    assert float(h0.imag.abs().max()) < 1e-14
    uu, ud, du, dd = even[:, :n, :n], even[:, :n, n:], even[:, n:, :n], even[:, n:, n:]
    x = torch.stack([0.5 * (ud + du), 0.5j * (ud - du), 0.5 * (uu - dd)], 1)  # tr(sigma_a H)/2
    assert float(x.real.abs().max()) < 1e-14  # the spin part of a T-even block is imaginary
    coeffs = x.imag.reshape(2, -1) @ q  # the head's coefficients of that block
    rebuilt = spin_identity(h0.real.to(even.dtype)) + pauli_expand(sc(coeffs))
    torch.testing.assert_close(rebuilt, even, atol=1e-12, rtol=0)
    # and whatever the coefficients, the head's output is T-even
    out = pauli_expand(sc(torch.randn(3, q.shape[1], generator=g, dtype=torch.float64)))
    assert float((time_reverse(out) - out).abs().max()) < 1e-14 and float(out.abs().max()) > 0.1


def test_irreps_equal_the_total_j_couplings_of_spin_half_shells():
    """Per slot pair: (l_i x l_j) x (0 + 1) has the J content of sum_{j1, j2} (j1 x j2), j = l +- 1/2.

    The spinless head carries the 0 (H0), the su2 head the 1 (X): together they are the
    (l_i x 1/2) x (l_j x 1/2) expansion up to a fixed recoupling inside each J."""
    sc = SpinCoupling(LAYOUT)
    ls = LAYOUT.slot_ls
    ours = Counter((ir.l, ir.p) for _, ir in sc.irreps)
    ref = Counter()
    for la in ls:
        for lb in ls:
            p = (-1) ** (la + lb)
            ours.update((L, p) for L in range(abs(la - lb), la + lb + 1))  # the spinless H0 irreps
            two_j1 = [2 * la + 1] + ([2 * la - 1] if la > 0 else [])  # 2 j, j = l +- 1/2
            two_j2 = [2 * lb + 1] + ([2 * lb - 1] if lb > 0 else [])
            for a in two_j1:
                for b in two_j2:
                    ref.update((J, p) for J in range(abs(a - b) // 2, (a + b) // 2 + 1))
    assert ours == ref


@pytest.mark.parametrize("improper", [False, True], ids=["rotation", "rotoinversion"])
def test_head_is_su2_covariant(improper):
    """Rotating the coefficients by their irreps' D rotates the assembled spin term by kron(U, D_layout)."""
    sc = SpinCoupling(LAYOUT)
    R = random_rotation(5, improper=improper)
    c = torch.randn(4, sc.irreps.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    Dc = _irreps_D(sc.irreps, R)
    D = spinful_wigner(LAYOUT.slot_ls, R)
    s, sr = pauli_expand(sc(c)), pauli_expand(sc(c @ Dc.T))
    torch.testing.assert_close(sr, D @ s @ D.conj().T, atol=1e-12, rtol=0)
    # the check can fail: the orbital-only rotation (spin left alone) is not the symmetry
    Do = torch.kron(torch.eye(2, dtype=D.dtype), wigner_D_shells(LAYOUT.slot_ls, R).to(D.dtype))
    assert float((sr - Do @ s @ Do.conj().T).abs().max()) > 1e-3


def _rotated(d, R):
    dr = d.clone()
    dr.pos = d.pos @ R.T
    dr.cell = d.cell @ R.T
    return dr


def _errors(model, d):
    """Relative max errors of SU(2) rotation, inversion, time reversal, hermiticity on one structure."""
    nm, em = block_masks(d)
    with torch.no_grad():
        p = model(d)
        scale = float(max(p.node_blocks[nm].abs().max(), p.edge_blocks[em].abs().max()))
        out = {}
        for key, R in (("su2", random_rotation(21)), ("parity", -torch.eye(3, dtype=torch.float64))):
            pr = model(_rotated(d, R))
            D = spinful_wigner(LAYOUT.slot_ls, R)
            out[key] = max(float((D @ p.node_blocks @ D.conj().T - pr.node_blocks)[nm].abs().max()),
                           float((D @ p.edge_blocks @ D.conj().T - pr.edge_blocks)[em].abs().max())) / scale
        out["tr"] = max(float((time_reverse(p.node_blocks) - p.node_blocks)[nm].abs().max()),
                        float((time_reverse(p.edge_blocks) - p.edge_blocks)[em].abs().max())) / scale
        out["herm"] = hermiticity_error(p, d, relative=True)
    return p, out


@pytest.mark.parametrize("head", ["so3", "su2"])
def test_symmetry_errors_of_both_heads(heads, toy, head):
    """SU(2) (random proper rotation), parity (inversion: (-1)^(l_i+l_j) on orbitals, spin untouched),
    time reversal and raw hermiticity, relative to max|H|, float64, on the toy spinful record."""
    p, err = _errors(heads[head], toy)
    print(f"\nhamgnn-soc soc_head={head}: SU(2) {err['su2']:.1e}  parity {err['parity']:.1e}  "
          f"T {err['tr']:.1e}  hermiticity {err['herm']:.1e}")
    assert err["su2"] < 1e-10 and err["parity"] < 1e-10 and err["tr"] < 1e-12 and err["herm"] < 1e-12, err
    # the spin-flip quadrants are populated on and off site: there is SOC in the output
    nm, em = block_masks(toy)
    n = LAYOUT.n_max
    assert p.node_blocks[:, :n, n:][nm[:, :n, n:]].abs().max() > 1e-4
    assert p.edge_blocks[:, :n, n:][em[:, :n, n:]].abs().max() > 1e-4


def test_su2_spin_part_reaches_shells_of_different_l(heads, toy):
    """Unlike xi o L (equal-l shells only), the su2 head writes spin terms between s, p and d shells."""
    n = LAYOUT.n_max
    with torch.no_grad():
        e = heads["su2"](toy).edge_blocks
    l_of = torch.as_tensor(LAYOUT.slot_l_of_orbital())
    different = l_of[:, None] != l_of[None, :]
    _, em = block_masks(toy)
    flip = e[:, :n, n:]
    assert flip[em[:, :n, n:] & different].abs().max() > 1e-4


def test_kramers_pairs_with_the_su2_head(heads, toy):
    with torch.no_grad():
        p = heads["su2"](toy)
    h = bloch_sum(p.node_blocks, p.edge_blocks, toy.edge_index, toy.edge_shift, toy.node_orb_mask, hermitize=False)
    assert float((h - h.conj().T).abs().max()) < 1e-12
    ev = torch.linalg.eigvalsh(h)
    assert float((ev[0::2] - ev[1::2]).abs().max()) < 1e-9 * float(ev.abs().max())
    assert float((ev[2::2] - ev[0:-2:2]).max()) > 1e-3


def test_configuration_errors():
    with pytest.raises(ConfigError, match="soc_head must be"):
        HamGNNSOC(INFO, soc_head="l.s", **SMALL)
    with pytest.raises(ConfigError, match="lmax=4 .* lmax >= 5"):
        HamGNNSOC(INFO, soc_head="su2", **SMALL)


def _toy_graphs():
    graphs = []
    for k in range(3):
        rec = toy_spinful_record(Structure.from_ase(tiny_hfo2(k, reps=(1, 1, 1))), BASIS, CUTOFF, overlap=False,
                                 name=f"s{k}")
        graphs.append(record_to_data(rec, LAYOUT, dtype=torch.float32))
    return graphs


def _fit(head: str, graphs, epochs: int, **hp) -> tuple[tuple[float, float], tuple[float, float]]:
    """(MAE, imaginary MAE between shells of different l) on the training graphs before and after a short
    L1 fit (float32, lr 1e-2)."""
    from zoo.bench.trainer import Trainer, TrainConfig

    l_of = torch.as_tensor(LAYOUT.slot_l_of_orbital()).repeat(2)
    same_l = (l_of[:, None] == l_of[None, :]) & (l_of[:, None] > 0)

    def mae(model, part, sel=None):
        with torch.no_grad():
            errs = []
            for g in graphs[:2]:
                p = model(g)
                nm, em = block_masks(g)
                if sel is not None:
                    nm, em = nm & sel, em & sel
                errs += [part(p.node_blocks - g.y_node)[nm], part(p.edge_blocks - g.y_edge)[em]]
            return float(torch.cat(errs).abs().mean())

    torch.manual_seed(0)
    model = HamGNNSOC(INFO, l1_loss=True, num_layers=1, soc_head=head, **hp)
    before = (mae(model, torch.abs), mae(model, torch.imag, ~same_l))
    cfg = TrainConfig(lr=1e-2, min_lr=1e-6, patience=1000, max_epochs=epochs, batch_size=1, dtype="float32",
                      device="cpu")
    Trainer(model, graphs[:2], graphs[2:], cfg, seed=0, quiet=True, device=torch.device("cpu")).fit()
    after = (mae(model, torch.abs), mae(model, torch.imag, ~same_l))
    print(f"\nhamgnn-soc soc_head={head} toy fit, {epochs} epochs (mEh): MAE {1e3 * before[0]:.2f} -> "
          f"{1e3 * after[0]:.2f}; Im between different l {1e3 * before[1]:.3f} -> {1e3 * after[1]:.3f}")
    return before, after


def test_su2_head_learns_the_toy_soc_between_different_l():
    """A short L1 fit cuts the overall MAE and the imaginary error between shells of different l (the toy's
    two-centre L M + M L term, outside the so3 head's xi o L form)."""
    before, after = _fit("su2", _toy_graphs(), 6, num_features=4, lmax=5)
    assert after[0] < 0.8 * before[0] and after[1] < 0.8 * before[1]


@pytest.mark.slow
def test_su2_head_fits_the_toy_soc_that_so3_cannot():
    """Both heads, same budget: both cut the MAE, only su2 the imaginary error between different l."""
    graphs = _toy_graphs()
    res = {head: _fit(head, graphs, 15, num_features=4, **extra) for head, extra in (("so3", {}), ("su2", {"lmax": 5}))}
    for head in ("so3", "su2"):
        assert res[head][1][0] < 0.7 * res[head][0][0]
    assert res["so3"][1][1] == pytest.approx(res["so3"][0][1], rel=1e-5)  # so3 writes nothing there
    assert res["su2"][1][1] < 0.7 * res["su2"][0][1]
    assert res["su2"][1][0] < res["so3"][1][0]


def test_su2_partitioned_equals_full():
    """One-way-halo partitions at the model's depth reproduce the full-graph output with the su2 head."""
    from zoo.data.partition import partition_for_model, scatter_predictions
    from zoo.data.torch_data import collate

    atoms = sige_chain_atoms()
    layout = OrbitalLayout(BASIS, [14, 32])
    rc = 2.6  # nearest neighbours only: below half of the 5.43 A cell widths, so no pair meets two images
    data = record_to_data(toy_spinful_record(Structure.from_ase(atoms), BASIS, rc, overlap=False), layout,
                          dtype=torch.float64)
    info = DatasetInfo(layout, rc, spinful=True, name="partition-su2")
    model = perturbed(HamGNNSOC(info, soc_head="su2", lmax=2 * max(layout.slot_ls) + 1, **SMALL))
    with torch.no_grad():
        full = model(collate([data]))
        parts = partition_for_model(data, model, "slices", virtual="one-way", n_slices=3)
        outs = [model(collate([p])) for p in parts]
        node, edge = scatter_predictions(parts, [(o.node_blocks, o.edge_blocks) for o in outs], data)
    err = max(float((node - full.node_blocks).abs().max()), float((edge - full.edge_blocks).abs().max()))
    assert err < 1e-12, f"partitioned != full ({err:.2e})"
    assert len(parts) == 3
