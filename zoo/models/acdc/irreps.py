"""Equivariant feature arrays in e3x's layout and the layers GEARS H builds from them.

A feature array is x [..., P, (L+1)^2, F]: P parity channels, the (2l+1) components of every
degree l = 0..L in the internal real-harmonic order (docs/adr/0001), F features.

* P = 2: channel 0 holds the even irreps (l, p = +1), channel 1 the odd ones (l, p = -1), for
  every l ("both parities", e3x's pseudotensors included);
* P = 1: one channel of natural parity, p = (-1)^l (what spherical harmonics of a vector are).

Under a rotation R (det R = +-1) an irrep (l, p) transforms as D_l(R') p^[det R = -1] with
R' = det(R) R the proper part. Every layer here acts per degree and parity (linear maps) or
through Clebsch-Gordan couplings (tensor products), so it commutes with that action.
Coupling coefficients are `zoo.physics.coupling.coupling_matrix` (sqrt(2L+1) x e3nn's
wigner_3j, orthonormal), the basis in which the internal Wigner-D matrices act.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.physics.coupling import coupling_matrix


def n_components(lmax: int) -> int:
    return (lmax + 1) ** 2


def degree_index(lmax: int) -> torch.Tensor:
    """long [(L+1)^2]: the degree l of every component ([0, 1, 1, 1, 2, ...])."""
    return torch.repeat_interleave(torch.arange(lmax + 1), 2 * torch.arange(lmax + 1) + 1)


def parity_index(parity: int, lmax: int) -> torch.Tensor:
    """long [P, L+1]: the parity slot (0 even, 1 odd) of each (channel, degree)."""
    if parity == 2:
        return torch.tensor([[0] * (lmax + 1), [1] * (lmax + 1)])
    return torch.tensor([[l % 2 for l in range(lmax + 1)]])


def to_both_parities(x: torch.Tensor, lmax_out: int | None = None) -> torch.Tensor:
    """e3x `change_max_degree_or_type(x, L, include_pseudotensors=True)`: a P = 1 array moves
    each degree into its natural-parity channel of a P = 2 array; degrees are cut or zero-padded."""
    p, k = x.shape[-3], x.shape[-2]
    lmax_in = int(round(math.sqrt(k))) - 1
    lmax_out = lmax_in if lmax_out is None else lmax_out
    k_out = n_components(lmax_out)
    if p == 1:
        l_idx = degree_index(lmax_in).to(x.device)
        odd = (l_idx % 2 == 1)[:, None]
        even_part = torch.where(odd, torch.zeros_like(x[..., 0, :, :]), x[..., 0, :, :])
        odd_part = torch.where(odd, x[..., 0, :, :], torch.zeros_like(x[..., 0, :, :]))
        x = torch.stack([even_part, odd_part], dim=-3)
    if k_out <= k:
        return x[..., :k_out, :]
    pad = x.new_zeros(*x.shape[:-2], k_out - k, x.shape[-1])
    return torch.cat([x, pad], dim=-2)


class EquiLinear(nn.Module):
    """e3x `Dense`: y^(l,p) = x^(l,p) W_(l,p) (+ b on the even scalars only).

    One weight matrix per (parity channel, degree); parameters P (L+1) F_in F_out (+ F_out bias).
    """

    def __init__(self, parity: int, lmax: int, f_in: int, f_out: int, bias: bool = True):
        super().__init__()
        self.parity, self.lmax = parity, lmax
        self.weight = nn.Parameter(torch.randn(parity, lmax + 1, f_in, f_out) / math.sqrt(f_in))
        self.bias = nn.Parameter(torch.zeros(f_out)) if bias else None
        self.register_buffer("l_idx", degree_index(lmax), persistent=False)
        e0 = torch.zeros(parity, n_components(lmax), 1)
        e0[0, 0, 0] = 1.0
        self.register_buffer("e0", e0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight[:, self.l_idx]  # [P, K, F_in, F_out]
        y = torch.einsum("...pkf,pkfg->...pkg", x, w)
        if self.bias is not None:
            y = y + self.e0.to(y.dtype) * self.bias
        return y


def bent_identity_gate(s: torch.Tensor) -> torch.Tensor:
    """g(s) = (sqrt(s^2+1) - 1)/(2s) + 1, written as s / (2 (sqrt(s^2+1) + 1)) + 1 (no 0/0 at s = 0)."""
    return s / (2.0 * (torch.sqrt(s * s + 1.0) + 1.0)) + 1.0


def mish_gate(s: torch.Tensor) -> torch.Tensor:
    """g(s) = tanh(softplus(s)), so that s g(s) = mish(s)."""
    return torch.tanh(nn.functional.softplus(s))


GATES = {"bent_identity": bent_identity_gate, "mish": mish_gate}


def gated(x: torch.Tensor, kind: str) -> torch.Tensor:
    """e3x gated-linear activation: every component of feature f is multiplied by g(s_f), s_f the
    even scalar x[..., 0, 0, f]; on the scalars themselves this is the plain activation s g(s)."""
    return GATES[kind](x[..., 0:1, 0:1, :]) * x


#: floor of the norm in IrrepNorm's normalisations (feature units, features are O(1))
NORM_EPS = 1e-4


def _safe_normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / sqrt(|x|^2 + eps^2) along dim.

    e3x.ops.normalize divides by |x| unless |x|^2 is below the dtype's tiny, which turns round-off
    (an irrep that vanishes by symmetry, e.g. odd l at an inversion centre, computes as ~1e-17 in
    float64, ~1e-8 in float32) into a unit vector of random direction. The floor keeps such
    components small; |x| is rotation invariant, so equivariance is exact either way.
    """
    n2 = (x * x).sum(dim=dim, keepdim=True)
    return x * torch.rsqrt(n2 + NORM_EPS ** 2)


class IrrepNorm(nn.Module):
    """gears_h LayerNorm, with the centring mean made local by default.

        l = 0: s_even <- s_even - mean;  each parity's scalars L2-normalised over features
        l > 0: each irrep normalised to unit length over m (per parity and feature)
        out = gamma_(p, l, f) * normalised,   gamma initialised to 1

    (norms floored at NORM_EPS, see `_safe_normalize`).

    `global_mean=False` (ours): mean over the features of the same row (atom or pair), so every
    output depends on that row only. `global_mean=True` (gears_h): mean over all rows of the same
    structure and all features, which makes every output depend on atoms beyond the cutoff.
    """

    def __init__(self, parity: int, lmax: int, features: int, global_mean: bool = False):
        super().__init__()
        self.global_mean = global_mean
        self.scale = nn.Parameter(torch.ones(parity, lmax + 1, features))
        self.register_buffer("l_idx", degree_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        s = x[..., 0:1, :]  # [R, P, 1, F]
        even = s[:, 0:1]
        if self.global_mean:
            if group is None:
                group = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            n_groups = int(group.max()) + 1 if group.numel() else 1
            tot = even.new_zeros(n_groups).index_add(0, group, even.sum(dim=(1, 2, 3)))
            cnt = even.new_zeros(n_groups).index_add(0, group, even.new_ones(group.shape[0])) * even.shape[-1]
            mean = (tot / cnt.clamp_min(1))[group][:, None, None, None]
        else:
            mean = even.mean(dim=-1, keepdim=True)
        s = torch.cat([even - mean, s[:, 1:]], dim=1)
        s = _safe_normalize(s, dim=-1)
        parts = [s]
        if x.shape[-2] > 1:
            parts.append(_safe_normalize_per_degree(x[..., 1:, :], self.l_idx[1:]))
        return self.scale[:, self.l_idx] * torch.cat(parts, dim=-2)


def _safe_normalize_per_degree(x: torch.Tensor, l_idx: torch.Tensor) -> torch.Tensor:
    """Normalise each degree's (2l+1) components (dim -2) separately."""
    out = []
    start = 0
    for l in torch.unique_consecutive(l_idx).tolist():
        out.append(_safe_normalize(x[..., start:start + 2 * l + 1, :], dim=-2))
        start += 2 * l + 1
    return torch.cat(out, dim=-2)


def _matrix_cg(lt: int, lmax: int) -> torch.Tensor:
    """[(2lt+1), (2lt+1), (lmax+1)^2]: M[a, b, (c, m)] with vec(X) = sum_c M[:, :, c] x_c, the
    coupling of lt x lt to c = 0..lmax (orthonormal columns)."""
    q = coupling_matrix(lt, lt)  # [(2lt+1)^2, (2lt+1)^2], columns c = 0..2lt
    d = 2 * lt + 1
    return torch.as_tensor(q[:, :n_components(lmax)].reshape(d, d, -1), dtype=torch.float64)


class FusedTensor(nn.Module):
    """e3x `FusedTensor`: a feature-wise tensor product through (2l~+1)x(2l~+1) matrices.

        X^(+-) = sum_a w1^(+-)_(a,f) M x1^(a,+-)          (vectors -> matrices, l~ = ceil(Lmax/2))
        Z^(pq) = X^(p) Y^(q)                               (ee, oo -> even;  eo, oe -> odd)
        z^(c, pq) = w3^(pq)_(c,f) M^T Z^(pq)               (matrices -> vectors, c = 0..L_out)
        out^(c,+) = z^(c,ee) + z^(c,oo),  out^(c,-) = z^(c,eo) + z^(c,oe)

    D X D^T D Y D^T = D (X Y) D^T, so the product is equivariant; parity is tracked by (p, q).
    Parameters: 2 (L1+1) F + 2 (L2+1) F + 4 (L_out+1) F (40 F for L = 4), all counted even where
    a P = 1 input makes some of them inert (as e3x does; those start at zero; the pseudoscalar
    output weights of two natural-parity inputs are also masked in forward, see __init__).
    """

    def __init__(self, parity1: int, lmax1: int, parity2: int, lmax2: int, lmax_out: int, features: int,
                 include_pseudotensors: bool = True):
        super().__init__()
        if lmax_out > lmax1 + lmax2:
            raise ConfigError(f"FusedTensor: output degree {lmax_out} exceeds {lmax1} + {lmax2}")
        self.p1, self.l1, self.p2, self.l2, self.l3 = parity1, lmax1, parity2, lmax2, lmax_out
        lm = max(lmax1, lmax2, lmax_out)
        lt = math.ceil(lm / 2)
        self.register_buffer("cg", _matrix_cg(lt, lm), persistent=False)
        # pseudotensor output as in e3x: dropped only for two P=1 inputs with a degree-0 side
        self.pseudo = include_pseudotensors and not (parity1 == parity2 == 1 and 0 in (lmax1, lmax2, lmax_out))
        self.out_parity = 2 if self.pseudo else 1
        deg = np.arange(lm + 1)
        even, odd = (deg % 2 == 0).astype(float), (deg % 2 == 1).astype(float)
        n_mat = 2 * lt + 1
        var_in = (1.0 / math.sqrt(n_mat)) * n_mat / min(lmax1 + 1, lmax2 + 1)
        if parity1 == parity2 == 2:
            var_out = np.full(lmax_out + 1, 0.5)
        elif parity1 == parity2 == 1 and 0 not in (lmax1, lmax2):
            var_out = np.full(lmax_out + 1, 2.0)
            var_out[0] = 1.0
        else:
            var_out = np.ones(lmax_out + 1)

        def kernel(n: int, var, mask) -> nn.Parameter:
            std = torch.tensor(np.sqrt(np.broadcast_to(var, (n,))), dtype=torch.float32)[:, None]
            m = torch.tensor(np.broadcast_to(mask, (n,)), dtype=torch.float32)[:, None]
            return nn.Parameter(std * m * torch.randn(n, features))

        one = np.ones(lm + 1)
        self.k_e1 = kernel(lmax1 + 1, var_in, one[:lmax1 + 1] if parity1 == 2 else even[:lmax1 + 1])
        self.k_o1 = kernel(lmax1 + 1, var_in, one[:lmax1 + 1] if parity1 == 2 else odd[:lmax1 + 1])
        self.k_e2 = kernel(lmax2 + 1, var_in, one[:lmax2 + 1] if parity2 == 2 else even[:lmax2 + 1])
        self.k_o2 = kernel(lmax2 + 1, var_in, one[:lmax2 + 1] if parity2 == 2 else odd[:lmax2 + 1])
        mask_o3 = one[:lmax_out + 1].copy()
        if parity1 == parity2 == 1:
            mask_o3[0] = 0.0  # two natural-parity inputs cannot make a pseudoscalar
        self.k_eee = kernel(lmax_out + 1, var_out, one[:lmax_out + 1])
        self.k_ooe = kernel(lmax_out + 1, var_out, one[:lmax_out + 1])
        self.k_eoo = kernel(lmax_out + 1, var_out, mask_o3)
        self.k_oeo = kernel(lmax_out + 1, var_out, mask_o3)
        # e3x only zero-initialises these; the output they weight is zero by symmetry but computes as
        # round-off, which a later normalisation would blow up, so they are masked in forward too
        self.register_buffer("mask_o3", torch.tensor(mask_o3, dtype=torch.float32)[:, None], persistent=False)
        self.register_buffer("l1_idx", degree_index(lmax1), persistent=False)
        self.register_buffer("l2_idx", degree_index(lmax2), persistent=False)
        self.register_buffer("l3_idx", degree_index(lmax_out), persistent=False)

    def _split(self, x: torch.Tensor, lmax: int, l_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-3] == 2:
            return x[..., 0, :, :], x[..., 1, :, :]
        x = x[..., 0, :, :]
        odd = (l_idx % 2 == 1)[:, None]
        zero = torch.zeros_like(x)
        return torch.where(odd, zero, x), torch.where(odd, x, zero)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        k3 = n_components(self.l3)
        d = self.cg.shape[0]
        cg = self.cg.to(x1.dtype).reshape(d * d, -1)  # [(ab), n]
        e1, o1 = self._split(x1, self.l1, self.l1_idx)
        e2, o2 = self._split(x2, self.l2, self.l2_idx)

        def to_matrix(x, k, l_idx):  # [..., n, F] -> [..., F, a, b]
            xw = (x * k[l_idx]).transpose(-1, -2)
            return (xw @ cg[:, :x.shape[-2]].T).reshape(*xw.shape[:-1], d, d)

        def to_vector(z, k):  # [..., F, a, b] -> [..., n, F]
            v = z.reshape(*z.shape[:-2], d * d) @ cg[:, :k3]
            return v.transpose(-1, -2) * k[self.l3_idx]

        E1, O1 = to_matrix(e1, self.k_e1, self.l1_idx), to_matrix(o1, self.k_o1, self.l1_idx)
        E2, O2 = to_matrix(e2, self.k_e2, self.l2_idx), to_matrix(o2, self.k_o2, self.l2_idx)
        even = to_vector(E1 @ E2, self.k_eee) + to_vector(O1 @ O2, self.k_ooe)
        m3 = self.mask_o3.to(x1.dtype)
        odd = to_vector(E1 @ O2, self.k_eoo * m3) + to_vector(O1 @ E2, self.k_oeo * m3)
        if self.pseudo:
            return torch.stack([even, odd], dim=-3)
        is_odd = (self.l3_idx % 2 == 1)[:, None]
        return torch.where(is_odd, odd, even).unsqueeze(-3)


class FullTensor(nn.Module):
    """e3x `Tensor` restricted to its valid paths: a feature-wise ('uuu') tensor product

        out^(l3, p1 p2)_f = sum_paths w_(l1 p1, l2 p2 -> l3), f  (x1^(l1,p1)_f (x) x2^(l2,p2)_f)_(l3)

    over every (l1, p1), (l2, p2), l3 with |l1 - l2| <= l3 <= l1 + l2 (and l3 <= L_out). e3x keeps
    a dense weight for all (P1 (L1+1)) (P2 (L2+1)) (P3 (L3+1)) combinations and zeroes the invalid
    ones; here only the valid paths are parameters (260 F for P = 2 inputs and L = 4).
    """

    def __init__(self, parity1: int, lmax1: int, parity2: int, lmax2: int, lmax_out: int, features: int,
                 include_pseudotensors: bool = True):
        super().__init__()
        self.p1, self.l1, self.p2, self.l2, self.l3 = parity1, lmax1, parity2, lmax2, lmax_out
        par1, par2 = parity_index(parity1, lmax1), parity_index(parity2, lmax2)
        scalar_side = parity1 == parity2 == 1 and 0 in (lmax1, lmax2, lmax_out)  # as in FusedTensor
        self.out_parity = 2 if include_pseudotensors and not scalar_side else 1
        n_paths = 0
        # per (l1, l2): output columns (l3, m) it feeds, and for each (channel1, channel2) the
        # output parity slot and the parameter row of every l3 (-1 for none)
        self.pairs: list[tuple[int, int]] = []
        self.pouts: list[list[list[int]]] = []
        for a in range(lmax1 + 1):
            for b in range(lmax2 + 1):
                cs = list(range(abs(a - b), min(a + b, lmax_out) + 1))
                if not cs:
                    continue
                k = len(self.pairs)
                self.pairs.append((a, b))
                rows = torch.full((parity1, parity2, len(cs)), -1, dtype=torch.long)
                pout = torch.zeros(parity1, parity2, dtype=torch.long)
                for ch1 in range(parity1):
                    for ch2 in range(parity2):
                        po = int(par1[ch1, a]) ^ int(par2[ch2, b])
                        pout[ch1, ch2] = po if self.out_parity == 2 else 0
                        for t, c in enumerate(cs):
                            if self.out_parity == 1 and po != c % 2:
                                continue
                            rows[ch1, ch2, t] = n_paths
                            n_paths += 1
                cols = torch.cat([torch.arange(c * c, (c + 1) ** 2) for c in cs])
                reps = torch.tensor([2 * c + 1 for c in cs])
                q = coupling_matrix(a, b)[:, cs[0] ** 2 - abs(a - b) ** 2:(cs[-1] + 1) ** 2 - abs(a - b) ** 2]
                self.register_buffer(f"q{k}", torch.as_tensor(q, dtype=torch.float64), persistent=False)
                self.register_buffer(f"cols{k}", cols, persistent=False)
                # parameter row of every (channel1, channel2, output column), -1 for none
                self.register_buffer(f"rows{k}", torch.repeat_interleave(rows, reps, dim=-1), persistent=False)
                self.pouts.append(pout.tolist())
        self.n_paths = n_paths
        self.weight = nn.Parameter(torch.randn(n_paths, features) / math.sqrt(max(1, len(self.pairs))))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        lead = x1.shape[:-3]
        f = x1.shape[-1]
        x1 = x1.reshape(-1, *x1.shape[-3:]).transpose(-1, -2)  # [R, P1, F, K1]
        x2 = x2.reshape(-1, *x2.shape[-3:]).transpose(-1, -2)  # [R, P2, F, K2]
        r, p1, p2 = x1.shape[0], x1.shape[1], x2.shape[1]
        # a zero row for paths that do not exist (masked parity combinations)
        w = torch.cat([self.weight, self.weight.new_zeros(1, f)]).to(x1.dtype).T  # [F, n_paths + 1]
        cols: list[list[torch.Tensor]] = [[] for _ in range(self.out_parity)]
        parts: list[list[torch.Tensor]] = [[] for _ in range(self.out_parity)]
        for k, (a, b) in enumerate(self.pairs):
            q = getattr(self, f"q{k}").to(x1.dtype)  # [(i, j), n]
            u = x1[..., a * a:(a + 1) ** 2]  # [R, P1, F, i]
            v = x2[..., b * b:(b + 1) ** 2]  # [R, P2, F, j]
            outer = u[:, :, None, :, :, None] * v[:, None, :, :, None, :]  # [R, P1, P2, F, i, j]
            o = outer.reshape(*outer.shape[:-2], -1) @ q  # [R, P1, P2, F, n]
            o = o * w[:, getattr(self, f"rows{k}")].permute(1, 2, 0, 3)  # weights [P1, P2, F, n]
            pout = self.pouts[k]
            for po in range(self.out_parity):
                terms = [o[:, c1, c2] for c1 in range(p1) for c2 in range(p2) if pout[c1][c2] == po]
                if terms:
                    parts[po].append(torch.stack(terms).sum(0) if len(terms) > 1 else terms[0])
                    cols[po].append(getattr(self, f"cols{k}"))
        k3 = n_components(self.l3)
        chans = []
        for po in range(self.out_parity):
            acc = x1.new_zeros(r, f, k3)
            if parts[po]:
                acc = acc.index_add(2, torch.cat(cols[po]), torch.cat(parts[po], dim=-1))
            chans.append(acc.transpose(1, 2))
        return torch.stack(chans, dim=1).reshape(*lead, self.out_parity, k3, f)


class TensorDense(nn.Module):
    """e3x `TensorDense`: (a, b) = split(Dense(2F)(x));  out = tensor(a, b) (fused or full)."""

    def __init__(self, parity: int, lmax_in: int, f_in: int, features: int, lmax_out: int, tensor: str = "fused"):
        super().__init__()
        if tensor not in ("fused", "full"):
            raise ConfigError(f"tensor={tensor!r} must be 'fused' or 'full'")
        self.features = features
        self.dense = EquiLinear(parity, lmax_in, f_in, 2 * features)
        cls = FusedTensor if tensor == "fused" else FullTensor
        self.tensor = cls(parity, lmax_in, parity, lmax_in, lmax_out, features)
        self.out_parity = self.tensor.out_parity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dense(x).split(self.features, dim=-1)
        return self.tensor(a, b)
