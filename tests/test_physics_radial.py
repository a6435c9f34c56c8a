"""Radial bases and cutoff envelopes (zoo.physics.radial): values at known points, smooth
vanishing at the cutoff, the Bessel basis' normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from zoo.physics.radial import (bessel, cosine_basis, cosine_cutoff, gaussian, polynomial_envelope,
                                smooth_cutoff)

RC = 4.0


def test_gaussian_centres_and_width_convention():
    n = 5  # centres 0, 1, 2, 3, 4: spacing 1
    d = torch.tensor([0.0, 2.0, 2.5], dtype=torch.float64)
    g = gaussian(d, 0.0, RC, n)
    assert g.shape == (3, n)
    torch.testing.assert_close(g[0], torch.exp(-0.5 * torch.arange(5.0, dtype=torch.float64) ** 2))
    assert float(g[1, 2]) == 1.0  # peak 1 at a centre
    # sigma = spacing: midway between two centres each is exp(-1/8); with width_scale 2, exp(-1/32)
    torch.testing.assert_close(g[2, 2:4], torch.full((2,), math.exp(-1 / 8), dtype=torch.float64))
    g2 = gaussian(d, 0.0, RC, n, width_scale=2.0)
    torch.testing.assert_close(g2[2, 2:4], torch.full((2,), math.exp(-1 / 32), dtype=torch.float64))
    # offset start: centres on [r_min, rc]
    torch.testing.assert_close(gaussian(torch.tensor([0.5]), 0.5, RC, 8)[0, 0], torch.tensor(1.0))
    with pytest.raises(ValueError, match="width_scale"):
        gaussian(d, 0.0, RC, n, width_scale=0.0)


def test_bessel_values_normalisation_and_e3nn_agreement():
    n = 6
    d = torch.tensor([1e-300, 0.7, 2.0, RC], dtype=torch.float64)
    b = bessel(d, RC, n)
    k = torch.arange(1, n + 1, dtype=torch.float64)
    torch.testing.assert_close(b[0], math.sqrt(2 / RC) * k * math.pi / RC)  # d -> 0 limit
    torch.testing.assert_close(b[1], math.sqrt(2 / RC) * torch.sin(k * math.pi * 0.7 / RC) / 0.7)
    torch.testing.assert_close(b[3], torch.zeros(n, dtype=torch.float64), atol=1e-15, rtol=0)
    # e3nn's 'bessel' basis is the same function (HamGNN builds on it)
    from e3nn.math import soft_one_hot_linspace
    x = torch.linspace(0.1, RC - 0.1, 7, dtype=torch.float64)
    ref = soft_one_hot_linspace(x, 0.0, RC, n, basis="bessel", cutoff=True)
    torch.testing.assert_close(bessel(x, RC, n), ref, atol=1e-12, rtol=1e-12)
    # orthonormal with weight d^2 on [0, rc]
    def f(r, a):
        return float(bessel(torch.tensor([r], dtype=torch.float64), RC, n)[0, a])
    gram = np.array([[quad(lambda r: f(r, a) * f(r, c) * r * r, 0, RC, limit=200)[0] for c in range(n)]
                     for a in range(n)])
    np.testing.assert_allclose(gram, np.eye(n), atol=1e-8)


def test_bessel_gradient_is_finite_at_zero():
    d = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(bessel(d, RC, 4).sum(), d)
    assert torch.isfinite(g).all()
    assert abs(float(g[0])) < 1e-12  # even function of d: zero slope at the origin


def test_cosine_basis_values():
    d = torch.tensor([0.0, 1.0, RC], dtype=torch.float64)
    c = cosine_basis(d, RC, 3)
    torch.testing.assert_close(c[0], torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(c[1], torch.tensor([1.0, math.cos(math.pi / 4), 0.0], dtype=torch.float64))
    torch.testing.assert_close(c[2], torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(cosine_basis(d, RC, 2, k0=1), c[:, 1:])


@pytest.mark.parametrize("env,derivs", [(cosine_cutoff, 1), (polynomial_envelope, 2), (smooth_cutoff, 4)])
def test_envelopes_are_one_at_zero_and_vanish_smoothly_at_the_cutoff(env, derivs):
    zero = torch.tensor([0.0], dtype=torch.float64)
    assert float(env(zero, RC)) == pytest.approx(1.0, abs=1e-15)
    beyond = torch.tensor([RC, RC + 0.5, 10.0], dtype=torch.float64)
    assert float(env(beyond, RC).abs().max()) == 0.0
    # value and the first `derivs` derivatives -> 0 as d -> rc from inside: each shrinks at least
    # linearly in the distance h to the cutoff (nested autograd)
    def derivatives(h):
        d = torch.tensor([RC - h], dtype=torch.float64, requires_grad=True)
        y, out = env(d, RC), []
        for k in range(derivs + 1):
            out.append(abs(float(y.detach())))
            if k < derivs:
                (y,) = torch.autograd.grad(y.sum(), d, create_graph=True)
        return out
    far, near = derivatives(1e-2), derivatives(1e-3)
    for k, (a, b) in enumerate(zip(far, near)):
        assert b <= 0.15 * a + 1e-13, (k, a, b)
    # monotone decreasing on [0, rc], finite gradient everywhere including beyond rc
    x = torch.linspace(0, RC + 1, 301, dtype=torch.float64, requires_grad=True)
    v = env(x, RC)
    assert (v[1:] - v[:-1] <= 1e-15).all()
    (g,) = torch.autograd.grad(v.sum(), x)
    assert torch.isfinite(g).all() and float(g[x > RC].abs().max()) == 0.0


def test_envelope_known_values():
    h = torch.tensor([RC / 2], dtype=torch.float64)
    assert float(cosine_cutoff(h, RC)) == pytest.approx(0.5)
    assert float(smooth_cutoff(h, RC)) == pytest.approx(math.exp(1 - 1 / 0.75))
    p = 6
    assert float(polynomial_envelope(h, RC, p)) == pytest.approx(
        1 - 28 * 0.5 ** 6 + 48 * 0.5 ** 7 - 21 * 0.5 ** 8)


def test_gaussian_reproduces_the_escn_and_sk_formulas_bit_for_bit():
    """escn's and sk's leaderboard rows were made with these expressions: the shared basis must
    give the very same floats (float32 and float64)."""
    for dtype in (torch.float32, torch.float64):
        d = torch.rand(200, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 5.0
        for start, n in ((0.0, 32), (0.5, 8)):
            centers = torch.linspace(start, 5.0, n, dtype=dtype)
            old = torch.exp(-0.5 * ((d[:, None] - centers) / ((5.0 - start) / (n - 1))) ** 2)
            assert torch.equal(gaussian(d, start, 5.0, n), old)
        old_env = 0.5 * (torch.cos(math.pi * (d / 5.0).clamp(max=1.0)) + 1.0)
        assert torch.equal(cosine_cutoff(d, 5.0), old_env)
