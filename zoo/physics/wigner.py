"""Real Wigner-D matrices and spherical harmonics in the internal convention (ADR 0001).

e3nn 0.6's real spherical harmonics of l=1 are (x, y, z) with y as the polar axis. Handing
e3nn a vector in the order (y, z, x) turns its basis into the standard z-polar real
harmonics in m = -l..l order, which is zoo's internal convention. For a physical rotation R
(acting on column vectors r -> R r, proper or improper) the orbital functions obey

    Y_l(R r) = D_l(R) Y_l(r),

and a block of the rotated structure is D_l1(R) B D_l2(R)^T. Improper rotations carry the
parity (-1)^l.

How D is computed (one code path for every caller, batched over any leading axes):

    D_0 = [1],   D_1(R) = P R P^T   (P: rows e_y, e_z, e_x; the l=1 functions are (py, pz, px)),
    D_l(R) = C_l^T (D_{l-1}(R) (x) D_1(R)) C_l,

where C_l [(2l-1)*3, 2l+1] = sqrt(2l+1) * e3nn.wigner_3j(l-1, 1, l) (orthonormal columns, the
l-component of (l-1) (x) 1). This is exact for every orthogonal R (the 3j symbols intertwine,
and the parity (-1)^l comes out of D_1's det), a polynomial of degree l in R's entries (no
Euler angles: no gimbal lock, finite gradients everywhere), and works in the dtype and on the
device of R. The C_l are built once in float64 (e3nn builds 3j symbols in float64 whatever the
default dtype) and cached per dtype/device: nothing here touches torch's default dtype.
For a non-orthogonal R the result is the polynomial's value (only meaningful on O(3)).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch
from e3nn import o3

#: physical (x, y, z) -> e3nn frame (y, z, x)
E3NN_PERM = (1, 2, 0)
#: the same as a matrix, rows (e_y, e_z, e_x): D_1(R) = P R P^T (float64; cast where used)
_P = torch.eye(3, dtype=torch.float64)[list(E3NN_PERM)]


def to_e3nn_frame(vec: torch.Tensor) -> torch.Tensor:
    """Reorder the last axis (x, y, z) -> (y, z, x) before calling e3nn functions."""
    return vec[..., list(E3NN_PERM)]


def _as_tensor(R) -> torch.Tensor:
    if isinstance(R, torch.Tensor):
        return R
    return torch.as_tensor(np.asarray(R), dtype=torch.float64)


@functools.lru_cache(maxsize=None)
def _coupling64(l: int) -> torch.Tensor:
    """C_l [(2l-1)*3, 2l+1] in float64 on the CPU: C_l^T C_l = identity."""
    c = o3.wigner_3j(l - 1, 1, l, dtype=torch.float64) * (2 * l + 1) ** 0.5
    return c.reshape((2 * l - 1) * 3, 2 * l + 1)


_COUPLING: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _coupling(l: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    key = (l, dtype, device)
    c = _COUPLING.get(key)
    if c is None:
        c = _COUPLING[key] = _coupling64(l).to(dtype=dtype, device=device)
    return c


def wigner_D_list(lmax: int, R) -> list[torch.Tensor]:
    """[D_0(R), ..., D_lmax(R)] for rotation matrices R [..., 3, 3]; D_l is [..., 2l+1, 2l+1].

    Batched over the leading axes of R, differentiable, in R's dtype and device (float or
    double; proper or improper R).
    """
    R = _as_tensor(R)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"wigner_D: rotation matrices must be [..., 3, 3], got {tuple(R.shape)}")
    if lmax < 0:
        raise ValueError(f"wigner_D: lmax must be >= 0, got {lmax}")
    lead = R.shape[:-2]
    r = R.reshape(-1, 3, 3)
    e = r.shape[0]
    perm = list(E3NN_PERM)
    d1 = r[:, perm][:, :, perm]  # P R P^T
    out = [r.new_ones(e, 1, 1), d1]
    for l in range(2, lmax + 1):
        c = _coupling(l, r.dtype, r.device)  # [(i, j), A]: i of degree l-1, j of degree 1
        a, n = 2 * l - 1, 2 * l + 1
        # D_l[A, b] = sum C[(i,j), A] D_{l-1}[i,k] D_1[j,m] C[(k,m), b], as two flat GEMMs and three
        # fused multiply-adds (batched 3x3 / 9x9 matmuls are slow on CPU):
        # w[e,k,j,A] = sum_i D_{l-1}[e,i,k] C[i,j,A]
        w = (out[-1].transpose(1, 2).contiguous().reshape(e * a, a) @ c.reshape(a, 3 * n)).reshape(e, a, 3, n)
        # u[e,k,m,A] = sum_j D_1[e,j,m] w[e,k,j,A]
        u = w[:, :, 0, None, :] * d1[:, None, 0, :, None]
        u = u + w[:, :, 1, None, :] * d1[:, None, 1, :, None]
        u = u + w[:, :, 2, None, :] * d1[:, None, 2, :, None]
        # D[e,A,b] = sum_{(k,m)} u[e,(k,m),A] C[(k,m),b]
        out.append((u.reshape(e, 3 * a, n).transpose(1, 2).reshape(e * n, 3 * a) @ c).reshape(e, n, n))
    return [d.reshape(*lead, 2 * l + 1, 2 * l + 1) for l, d in enumerate(out[:lmax + 1])]


def wigner_D_batch(l: int, R) -> torch.Tensor:
    """D_l(R) [..., 2l+1, 2l+1] for rotation matrices R [..., 3, 3] (see the module docstring)."""
    return wigner_D_list(l, R)[l]


def wigner_D_layout(layout_or_slot_ls, R) -> torch.Tensor:
    """Block-diagonal D over a list of shells, [..., n, n] for R [..., 3, 3].

    `layout_or_slot_ls` is an `OrbitalLayout` (its padded `slot_ls`, ADR 0003) or any sequence
    of shell l's in order (one atom's basis). Every padded block B of a layout transforms as
    D B D^T under R; padding slots transform like real ones, so padding stays padding.
    """
    shells = [int(l) for l in getattr(layout_or_slot_ls, "slot_ls", layout_or_slot_ls)]
    R = _as_tensor(R)
    if not shells:
        raise ValueError("wigner_D_layout: empty list of shells")
    ds = wigner_D_list(max(shells), R)
    lead = R.shape[:-2]
    n = sum(2 * l + 1 for l in shells)
    rows, off = [], 0
    for l in shells:
        d = 2 * l + 1
        # one row band per shell: zeros left, D_l, zeros right (no in-place writes, cheap backward)
        rows.append(torch.cat([R.new_zeros(*lead, d, off), ds[l], R.new_zeros(*lead, d, n - off - d)], dim=-1))
        off += d
    return torch.cat(rows, dim=-2)


def wigner_D(l: int, R) -> torch.Tensor:
    """Real (2l+1)^2 Wigner-D for one 3x3 rotation (proper or improper), internal convention.

    A numpy R is taken as float64; a tensor keeps its dtype and device.
    """
    return wigner_D_batch(l, R)


def wigner_D_shells(shells: Sequence[int], R) -> torch.Tensor:
    """Block-diagonal D over a list of shells (e.g. one atom's basis or a padded layout)."""
    return wigner_D_layout(list(shells), R)


def random_rotation(seed: int | None = None, improper: bool = False, dtype=torch.float64) -> torch.Tensor:
    """Uniform random rotation matrix (times -1 if `improper`)."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    q = torch.randn(4, generator=g, dtype=dtype)
    q = q / q.norm()
    R = o3.quaternion_to_matrix(q)
    return -R if improper else R


def spherical_harmonics(l: int | Sequence[int], vec: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Real spherical harmonics of physical vectors in the internal convention ('component' norm)."""
    return o3.spherical_harmonics(l, to_e3nn_frame(vec), normalize=normalize, normalization="component")
