"""Radial bases and cutoff envelopes of an interatomic distance d (Angstrom), batched.

Every function takes d [...] and returns [..., n] (bases) or [...] (envelopes) in d's dtype
and device. Bases do not include an envelope: multiply by one where the model wants smooth
vanishing at the cutoff rc (e.g. `gaussian(d, 0, rc, n) * cosine_cutoff(d, rc)[..., None]`).

Bases
    gaussian         exp(-(d - mu_k)^2 / (2 sigma^2)), mu_k = linspace(start, stop, n),
                     sigma = width_scale * spacing, spacing = (stop - start) / (n - 1)
                     (width_scale = 1: neighbours cross at exp(-1/8); EquiformerV2 uses 2)
    bessel           sqrt(2/rc) sin(k pi d / rc) / d, k = 1..n (DimeNet; HamGNN eq. 19):
                     orthonormal on [0, rc] with weight d^2
    cosine_basis     cos(k pi d / rc), k = k0..k0+n-1 (GEARS H)
Envelopes (1 at d = 0 unless stated, 0 for d >= rc)
    cosine_cutoff        0.5 (cos(pi d / rc) + 1)                         (C^1 at rc)
    polynomial_envelope  1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = d/rc
                         (DimeNet, p = 6 by default: value, slope and curvature vanish at rc)
    smooth_cutoff        exp(1 - 1 / (1 - x^2)), x = d/rc                 (C^infinity at rc)
"""

from __future__ import annotations

import math

import torch


def _check(n: int, cutoff: float) -> None:
    if int(n) < 1:
        raise ValueError(f"radial basis: n must be >= 1, got {n}")
    if not cutoff > 0:
        raise ValueError(f"radial basis: cutoff must be positive, got {cutoff}")


def gaussian(d: torch.Tensor, start: float, stop: float, n: int, width_scale: float = 1.0) -> torch.Tensor:
    """[..., n] Gaussians exp(-0.5 ((d - mu_k) / sigma)^2), mu_k evenly spaced on [start, stop].

    Width convention: sigma = width_scale * spacing with spacing = (stop - start) / (n - 1)
    (for n = 1, spacing = stop - start). Unnormalised: the peak value is 1.
    """
    if int(n) < 1:
        raise ValueError(f"gaussian basis: n must be >= 1, got {n}")
    if not stop > start:
        raise ValueError(f"gaussian basis: need stop > start, got [{start}, {stop}]")
    if not width_scale > 0:
        raise ValueError(f"gaussian basis: width_scale must be positive, got {width_scale}")
    centers = torch.linspace(start, stop, n, dtype=d.dtype, device=d.device)
    width = width_scale * ((stop - start) / max(n - 1, 1))
    return torch.exp(-0.5 * ((d[..., None] - centers) / width) ** 2)


def bessel(d: torch.Tensor, cutoff: float, n: int) -> torch.Tensor:
    """[..., n] spherical Bessel functions of order 0, sqrt(2/rc) sin(k pi d / rc) / d, k = 1..n.

    Normalisation: int_0^rc b_k(d) b_k'(d) d^2 dd = delta_kk'. Finite at d = 0 (limit
    sqrt(2/rc) k pi / rc), written through sinc so value and gradient are finite there.
    Not an envelope: b_k(rc) = 0 but its slope does not vanish.
    """
    _check(n, cutoff)
    k = torch.arange(1, n + 1, dtype=d.dtype, device=d.device)
    # sin(k pi d/rc) / d = (k pi / rc) sinc(k d / rc), torch.sinc(x) = sin(pi x) / (pi x)
    return math.sqrt(2.0 / cutoff) * (k * math.pi / cutoff) * torch.sinc(d[..., None] * k / cutoff)


def cosine_basis(d: torch.Tensor, cutoff: float, n: int, k0: int = 0) -> torch.Tensor:
    """[..., n] cos(k pi d / rc) for k = k0..k0+n-1 (k0 = 0 includes the constant)."""
    _check(n, cutoff)
    if int(k0) < 0:
        raise ValueError(f"cosine basis: k0 must be >= 0, got {k0}")
    k = torch.arange(k0, k0 + n, dtype=d.dtype, device=d.device)
    return torch.cos(d[..., None] * k * (math.pi / cutoff))


def cosine_cutoff(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(pi d / rc) + 1) for d < rc, 0 beyond (value and slope vanish at rc)."""
    return 0.5 * (torch.cos(math.pi * (d / cutoff).clamp(max=1.0)) + 1.0)


def polynomial_envelope(d: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """DimeNet envelope u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2), x = d/rc < 1; 0 beyond.

    u(1) = u'(1) = u''(1) = 0. (DimeNet's own envelope is u(x)/x, singular at 0; zoo's is the
    polynomial, 1 at d = 0.)
    """
    if int(p) < 1:
        raise ValueError(f"polynomial envelope: p must be >= 1, got {p}")
    x = (d / cutoff).clamp(max=1.0)
    xp = x ** p
    return 1.0 - (p + 1) * (p + 2) / 2 * xp + p * (p + 2) * xp * x - p * (p + 1) / 2 * xp * x * x


def smooth_cutoff(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    """exp(1 - 1 / (1 - (d/rc)^2)) for d < rc, 0 beyond: 1 at d = 0, every derivative 0 at rc."""
    x2 = (d / cutoff) ** 2
    inside = x2 < 1.0
    # evaluate on a safe argument outside so neither value nor gradient becomes nan/inf there
    safe = torch.where(inside, x2, torch.zeros_like(x2))
    return torch.where(inside, torch.exp(1.0 - 1.0 / (1.0 - safe)), torch.zeros_like(x2))
