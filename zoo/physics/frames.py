"""Local coordinate frames as rotation matrices [E, 3, 3] (rows are the local axes).

Convention: a frame R has the local x', y', z' axes (unit vectors in global coordinates) as
its ROWS, so R maps global coordinates to local ones, r_local = R r, and R^T maps back. With
`zoo.physics.wigner`, a block B (global frame) expressed in the local frame is
D(R) B D(R)^T and a local-frame block goes back as D(R)^T B_local D(R) (D(R)^T = D(R^T)).

Two constructions:

* `edge_frame(vec)`: the local z' axis is the edge direction, R r_hat = e_z (+z, the polar
  axis of the internal real-SH basis, so the local m is the angular momentum about the edge).
  The roll about the edge (the x', y' axes) is a gauge: the branchless orthonormal basis of
  Duff et al., J. Comput. Graph. Tech. 6 (2017): for the unit edge n = (x, y, z),
  s = sign(z) (+1 at z = 0), a = -1 / (s + z), b = x y a,

      x' = (1 + s x^2 a, s b, -s x),   y' = (b, s + y^2 a, -y),   z' = n,

  finite and smooth for every direction (|s + z| >= 1, also on +-z; only the gauge jumps where
  z changes sign). Under a global rotation Q: edge_frame(Q v) = G edge_frame(v) Q^T with G e_z = e_z:
  a rotation about z (the gauge) for proper Q, a mirror through a plane containing z for
  improper Q. So anything that commutes with rotations about the edge axis (SO(2) layers,
  Slater-Koster bond integrals) is exactly rotation-equivariant; parity is the caller's to track.

* `local_frame(v1, v2)`: LC-Net's complete local coordinates from two vectors,

      x' = v1 / |v1|,   y' = (v1 x v2) / |v1 x v2|,   z' = x' x y'.

  No gauge: local_frame(Q v1, Q v2) = diag(1, det Q, 1) local_frame(v1, v2) Q^T (the cross
  product is axial, so a mirror flips y' only). Where v1 and v2 are (nearly) parallel the frame
  is undefined; it is returned as `degenerate` (and filled with a valid but arbitrary rotation)
  so the caller can apply its own degeneracy rule (LC-Net picks another neighbour).
"""

from __future__ import annotations

import torch


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def _orthonormal_basis(n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x', y') completing a unit n [..., 3] to a right-handed orthonormal basis (x', y', n)."""
    x, y, z = n.unbind(-1)
    # copysign keeps z = -0.0 on the stable branch too: |s + z| >= 1 always
    s = torch.copysign(torch.ones_like(z), z)
    a = -1.0 / (s + z)
    b = x * y * a
    e1 = torch.stack([1.0 + s * x * x * a, s * b, -s * x], dim=-1)
    e2 = torch.stack([b, s + y * y * a, -y], dim=-1)
    return e1, e2


def edge_frame(vec: torch.Tensor) -> torch.Tensor:
    """Rotations R [..., 3, 3] (det +1, rows = local axes) with R (vec / |vec|) = e_z.

    `vec` [..., 3] need not be normalised but must be non-zero. See the module docstring for
    the gauge (roll about the edge) and its equivariance.
    """
    n = _unit(vec)
    e1, e2 = _orthonormal_basis(n)
    return torch.stack([e1, e2, n], dim=-2)


def local_frame(v1: torch.Tensor, v2: torch.Tensor, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """LC-Net local frames: (R [..., 3, 3], degenerate [...] bool).

    Rows of R are x' = v1/|v1|, y' = v1 x v2 / |v1 x v2|, z' = x' x y' (det +1). `degenerate`
    marks |x' x v2/|v2|| <= tol (v1, v2 parallel within ~tol rad); there y' is replaced by a
    unit vector perpendicular to x' (from `edge_frame`'s basis) so R stays a finite rotation,
    but it is NOT equivariant: the caller must handle those entries.
    """
    x = _unit(v1)
    c = torch.linalg.cross(x, v2, dim=-1)
    cn = c.norm(dim=-1)
    degenerate = cn <= tol * v2.norm(dim=-1)
    fallback, _ = _orthonormal_basis(x)
    safe = torch.where(degenerate, torch.ones_like(cn), cn)
    y = torch.where(degenerate[..., None], fallback, c / safe[..., None])
    z = torch.linalg.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=-2), degenerate
