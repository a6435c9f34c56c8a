"""Real Wigner-D matrices in the internal convention, via e3nn.

e3nn 0.6's real spherical harmonics of l=1 are (x, y, z) with y as the polar axis. Handing
e3nn a vector in the order (y, z, x) turns its basis into the standard z-polar real
harmonics in m = -l..l order, which is zoo's internal convention. So for a physical
rotation R (acting on column vectors r -> R r):

    D_l(R) = e3nn.Irrep(l, (-1)^l).D_from_matrix(P R P^T),   P = rows (e_y, e_z, e_x)

and the orbital functions obey Y_l(R r) = D_l(R) Y_l(r); a block of a rotated structure is
D_l1(R) B D_l2(R)^T. Improper rotations (det -1) carry the parity (-1)^l.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from e3nn import o3

#: physical (x, y, z) -> e3nn frame (y, z, x)
E3NN_PERM = (1, 2, 0)
_P = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])


def to_e3nn_frame(vec: torch.Tensor) -> torch.Tensor:
    """Reorder the last axis (x, y, z) -> (y, z, x) before calling e3nn functions."""
    return vec[..., list(E3NN_PERM)]


def _as_tensor(R) -> torch.Tensor:
    if isinstance(R, torch.Tensor):
        return R
    return torch.as_tensor(np.asarray(R), dtype=torch.float64)


def wigner_D(l: int, R) -> torch.Tensor:
    """Real (2l+1)^2 Wigner-D for a 3x3 rotation (proper or improper), internal convention."""
    R = _as_tensor(R)
    P = _P.to(device=R.device, dtype=torch.float64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its generators in the default dtype
    try:
        D = o3.Irrep(l, (-1) ** l).D_from_matrix(P @ R.to(torch.float64) @ P.T)
    finally:
        torch.set_default_dtype(old)
    return D.to(R.dtype)


def wigner_D_shells(shells: Sequence[int], R) -> torch.Tensor:
    """Block-diagonal D over a list of shells (e.g. one atom's basis or a padded layout)."""
    return torch.block_diag(*[wigner_D(l, R) for l in shells])


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
