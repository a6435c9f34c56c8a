"""Optional cross-check of escn's SO(2) convolution against fairchem-core's (skipped without fairchem).

fairchem-core is not a dependency (issue 18: ~1.1 GB, 68 packages, a setuptools downgrade), so
this test runs only where `fairchem` is importable; never install it into the project's venv.
It copies the weights of `fairchem.core.models.uma.nn.so2_layers.SO2_Convolution` into zoo's
`SO2Convolution` with one parity sector (`parity: so3`, the original eSCN) and asserts equal
outputs on the same m-major edge-frame input and the same radial factors.

Index maps (checked, not assumed): both lay out one order m as degrees l = m..lmax, then
channels (row l * C + c of each Linear). fairchem's m > 0 pairs are ["real" +m, "imaginary" -m]
and zoo's are [-m, +m]; both compute y_{+m} = W1 x_{+m} - W2 x_{-m}, y_{-m} = W1 x_{-m} + W2 x_{+m},
so W_r = W1, W_i = W2. fairchem's m = 0 Linear puts the extra (gate/attention) outputs first.
The edge-frame rotation is not part of this check: fairchem's Wigner for it would need
CoefficientMapping(lmax, lmax).coefficient_idx(lmax, mmax), not the reduced map used here.
"""

from __future__ import annotations

import pytest
import torch

fairchem_so2 = pytest.importorskip("fairchem.core.models.uma.nn.so2_layers")
fairchem_so3 = pytest.importorskip("fairchem.core.models.uma.common.so3")

from zoo.models.escn.layers import SO2Convolution  # noqa: E402


def _swap_pm(x: torch.Tensor, lmax: int, mmax: int) -> torch.Tensor:
    """Swap the two halves (+m <-> -m) of every m > 0 group of an m-major [E, rows, ...] tensor."""
    parts = [x[:, :lmax + 1]]
    off = lmax + 1
    for m in range(1, mmax + 1):
        n = lmax - m + 1
        parts += [x[:, off + n:off + 2 * n], x[:, off:off + n]]
        off += 2 * n
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("lmax,mmax", [(4, 2), (3, 3)])
def test_so2_convolution_matches_fairchem(lmax, mmax):
    torch.manual_seed(0)
    c_in, c_out, n_extra, n_edges = 5, 3, 4, 7
    mapping = fairchem_so3.CoefficientMapping(lmax, mmax)
    theirs = fairchem_so2.SO2_Convolution(c_in, c_out, lmax, mmax, mapping, internal_weights=False,
                                          edge_channels_list=[6, 6], extra_m0_output_channels=n_extra).double()
    ours = SO2Convolution(lmax, mmax, 1, c_in, c_out, n_extra=n_extra).double()
    n0 = lmax + 1
    with torch.no_grad():
        w = theirs.fc_m0.weight  # [n_extra + n0 c_out, n0 c_in]: extra rows first
        b = theirs.fc_m0.bias
        ours.w_extra.copy_(w[:n_extra].reshape(n_extra, n0, c_in))
        ours.b_extra.copy_(b[:n_extra])
        ours.w0.copy_(w[n_extra:].reshape(1, n0, c_out, n0, c_in))
        ours.b0.copy_(b[n_extra:].reshape(n0, c_out))
        for m in range(1, mmax + 1):
            nl = lmax - m + 1
            w1, w2 = theirs.so2_m_conv[m - 1].fc.weight.split(nl * c_out, dim=0)
            ours.wr[m - 1].copy_(w1.reshape(1, nl, c_out, nl, c_in))
            ours.wi[m - 1].copy_(w2.reshape(1, nl, c_out, nl, c_in))
    rows = sum(n0 if m == 0 else 2 * (lmax - m + 1) for m in range(mmax + 1))
    x_zoo = torch.randn(n_edges, rows, 1, c_in, dtype=torch.float64)
    # zoo takes the radial factors from outside: feed it those of fairchem's own radial MLP
    x_edge = torch.randn(n_edges, 6, dtype=torch.float64)
    with torch.no_grad():
        radial = theirs.rad_func(x_edge)
    assert radial.shape[1] == ours.n_radial  # the same per-(m, l, channel) radial layout
    y_zoo, extra_zoo = ours(x_zoo, radial)
    y_fc, extra_fc = theirs(_swap_pm(x_zoo[:, :, 0], lmax, mmax), x_edge)
    assert torch.allclose(_swap_pm(y_zoo[:, :, 0], lmax, mmax), y_fc, atol=1e-12, rtol=0)
    assert torch.allclose(extra_zoo, extra_fc, atol=1e-12, rtol=0)
