"""Edge-aligned frames: per-edge Wigner-D that turn an edge onto the polar axis.

zoo's internal real-SH basis is e3nn's basis seen through the (y, z, x) reordering, so the
polar axis of the internal basis (physical z) is e3nn's y axis. With v = to_e3nn_frame(r_hat),
e3nn writes v = R(alpha, beta, 0) e_y with R(a, b, c) = Ry(a) Rx(b) Ry(c),

    cos(beta) = v_y,  sin(beta) = sqrt(v_x^2 + v_z^2),  (cos, sin)(alpha) = (v_z, v_x) / sin(beta).

Then D_l(R) = Y_l(alpha) J_l^T Y_l(beta) J_l, where Y_l(t) is the rotation about the polar axis
(non-zero on the diagonal and anti-diagonal only) and J_l = D_l(Rz(90 deg)) turns a rotation
about y into one about x. Features go to the edge frame with D^T (edge on +z physical) and
back with D. No acos/atan2 and no random roll: the angles' cosines and sines come straight from
the vector (Chebyshev recurrences give cos(m t), sin(m t)), which keeps the forward pass
deterministic and its gradient finite for edges on the polar axis (there alpha := 0; any roll
is allowed because the SO(2) layers commute with it).
"""

from __future__ import annotations

import torch
from e3nn import o3


def _polar_rotation(l: int, cos_m: torch.Tensor, sin_m: torch.Tensor) -> torch.Tensor:
    """[E, 2l+1, 2l+1] rotation about the polar axis; cos_m/sin_m are [E, lmax+1] = cos(m t), sin(m t)."""
    e = cos_m.shape[0]
    out = cos_m.new_zeros(e, 2 * l + 1, 2 * l + 1)
    for i in range(2 * l + 1):
        f = l - i  # e3nn: row i carries frequency l - i; sin(-x) = -sin(x)
        out[:, i, 2 * l - i] = sin_m[:, abs(f)] * (1.0 if f >= 0 else -1.0)
        out[:, i, i] = cos_m[:, abs(f)]  # after the sine: for f = 0 both land on the centre
    return out


def _multiples(c: torch.Tensor, s: torch.Tensor, lmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos(m t), sin(m t) for m = 0..lmax from cos t, sin t (angle-addition recurrence)."""
    cs, ss = [torch.ones_like(c)], [torch.zeros_like(s)]
    for _ in range(lmax):
        cs.append(cs[-1] * c - ss[-1] * s)
        ss.append(ss[-1] * c + cs[-2] * s)
    return torch.stack(cs, dim=1), torch.stack(ss, dim=1)


class EdgeRotation(torch.nn.Module):
    """Computes, for unit edge vectors (physical frame), the Wigner-D blocks D_l(R_e), l = 0..lmax."""

    def __init__(self, lmax: int):
        super().__init__()
        self.lmax = lmax
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # e3nn builds its generators in the default dtype
        try:
            rz90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
            angles = o3.matrix_to_angles(rz90)
            js = [o3.wigner_D(l, *angles) for l in range(lmax + 1)]
        finally:
            torch.set_default_dtype(old)
        for l, J in enumerate(js):
            self.register_buffer(f"J{l}", J, persistent=False)

    def forward(self, unit: torch.Tensor) -> list[torch.Tensor]:
        """unit [E, 3] (x, y, z) -> [D_0, ..., D_lmax], each [E, 2l+1, 2l+1]."""
        vx, vy, vz = unit[:, 1], unit[:, 2], unit[:, 0]  # e3nn frame: (x, y, z)_e3nn = (y, z, x)
        rho2 = vx * vx + vz * vz
        ok = rho2 > 1e-20
        rho = torch.where(ok, torch.where(ok, rho2, torch.ones_like(rho2)).sqrt(), torch.zeros_like(rho2))
        safe = torch.where(ok, rho, torch.ones_like(rho))
        cos_a = torch.where(ok, vz / safe, torch.ones_like(vz))
        sin_a = torch.where(ok, vx / safe, torch.zeros_like(vx))
        ca, sa = _multiples(cos_a, sin_a, self.lmax)
        cb, sb = _multiples(vy, rho, self.lmax)
        out = []
        for l in range(self.lmax + 1):
            J = getattr(self, f"J{l}").to(dtype=unit.dtype, device=unit.device)
            ya, yb = _polar_rotation(l, ca, sa), _polar_rotation(l, cb, sb)
            out.append(ya @ (J.T @ yb @ J))
        return out


class MMajor:
    """Index maps between l-major components (l^2 + l + m) and the m-major order of the SO(2) layers.

    m-major, truncated at |m| <= mmax: [m=0: l=0..L], then for m = 1..mmax [(-m): l=m..L] [(+m): l=m..L].
    `local_rows[l]` are the rows m = -min(l, mmax)..min(l, mmax) of a degree-l block that survive.
    """

    def __init__(self, lmax: int, mmax: int):
        self.lmax, self.mmax = lmax, mmax
        # position of (l, m) inside the concatenation of truncated per-l blocks
        pos: dict[tuple[int, int], int] = {}
        k = 0
        self.local_rows: list[list[int]] = []
        for l in range(lmax + 1):
            mm = min(l, mmax)
            self.local_rows.append([l + m for m in range(-mm, mm + 1)])
            for m in range(-mm, mm + 1):
                pos[(l, m)] = k
                k += 1
        self.size = k
        order = [pos[(l, 0)] for l in range(lmax + 1)]
        for m in range(1, mmax + 1):
            order += [pos[(l, -m)] for l in range(m, lmax + 1)]
            order += [pos[(l, m)] for l in range(m, lmax + 1)]
        self.order = torch.tensor(order, dtype=torch.long)
        self.inverse = torch.argsort(self.order)
        #: sizes of the m groups in m-major order: m=0, then (-m, +m) pairs
        self.m_sizes = [lmax + 1] + [2 * (lmax - m + 1) for m in range(1, mmax + 1)]


def to_edge_frame(x: torch.Tensor, wigner: list[torch.Tensor], mm: MMajor) -> torch.Tensor:
    """x [E, (L+1)^2, ...] global l-major -> [E, mm.size, ...] edge frame, m-major, |m| <= mmax."""
    e, tail = x.shape[0], x.shape[2:]
    # split (not slicing) so that the backward pass concatenates instead of filling zeros per degree
    blocks = x.reshape(e, x.shape[1], -1).split([2 * l + 1 for l in range(len(wigner))], dim=1)
    parts = [D.transpose(1, 2)[:, mm.local_rows[l], :] @ b for l, (D, b) in enumerate(zip(wigner, blocks))]
    local = torch.cat(parts, dim=1).index_select(1, mm.order.to(x.device))
    return local.reshape(e, mm.size, *tail)


def from_edge_frame(y: torch.Tensor, wigner: list[torch.Tensor], mm: MMajor) -> torch.Tensor:
    """Inverse of `to_edge_frame`: [E, mm.size, ...] m-major local -> [E, (L+1)^2, ...] global."""
    e, tail = y.shape[0], y.shape[2:]
    flat = y.reshape(e, y.shape[1], -1).index_select(1, mm.inverse.to(y.device))
    blocks = flat.split([len(r) for r in mm.local_rows], dim=1)
    out = torch.cat([D[:, :, mm.local_rows[l]] @ b for l, (D, b) in enumerate(zip(wigner, blocks))], dim=1)
    return out.reshape(e, out.shape[1], *tail)
