"""HamGNN building blocks on e3nn (seed 004, eqs. 19-25; v1 code HamGNN/models/HamGNN/net.py).

Conventions: node features are e3nn irreps in zoo's internal frame (spherical harmonics through
`zoo.physics.wigner.spherical_harmonics`, so every irrep of degree l rotates with zoo's D_l and
carries parity p). Edge e = (i, j, shift) has r_ij = r_j + shift . cell - r_i; messages flow from
j to the centre i (summed at edge_index row 0, as nequip does).

    radial        b_n(r) = sqrt(2/r_c) sin(n pi r / r_c) / r * f_c(r)            (eq. 19, n = 1..8)
                  code_compat: sin(n pi r / r_c) / r * f_c(r)^2                 (v1 code)
    convolution   x_i' = Gate( Linear_2( sum_j Linear_1(x_j) (x)_uvu^{MLP(b(r_ij))} Y(r_ij) )
                               + FCTP(x_i, onehot(Z_i)) )   (+ x_i when the irreps agree)
    gate          scalars 0e: ssp, 0o: tanh; gates 0e: ssp  (eqs. 24-25; ssp(x) = ln(0.5 e^x + 0.5))
    pair          omega_ij = Linear( (Linear_i(x_i) + Linear_j(x_j)) (x)_uvu^{MLP(b(r_ij))} Y(r_ij) )
    residual      x + Linear_2(NormActivation_ssp(Linear_1(x)))   (on/off-site layers, xi heads)
"""

from __future__ import annotations

import math
import re

import torch
from e3nn import nn as enn
from e3nn import o3

from zoo.physics.radial import bessel, cosine_cutoff


_W3J = re.compile(r"_w3j_(\d+)_(\d+)_(\d+)$")


def exact_wigner_3j(module: torch.nn.Module) -> None:
    """Recompute the 3j constants of every e3nn tensor product under `module` in float64.

    e3nn 0.6 builds them in torch's default dtype (float32), so a float64 model would rotate only
    to ~1e-8; zoo never changes the default dtype, so the buffers are rebuilt here in float64 and
    cast to each buffer's own dtype and device (call after every dtype change).
    """
    for mod in module.modules():
        for name, buf in list(mod._buffers.items()):
            match = _W3J.search(name) if buf is not None else None
            if match:
                exact = o3.wigner_3j(*(int(g) for g in match.groups()), dtype=torch.float64)
                mod._buffers[name] = exact.reshape(buf.shape).to(dtype=buf.dtype, device=buf.device)


def ssp(x: torch.Tensor) -> torch.Tensor:
    """Shifted softplus ln(0.5 e^x + 0.5) = softplus(x) - ln 2 (zero at 0)."""
    return torch.nn.functional.softplus(x) - math.log(2.0)


def feature_irreps(channels: int, lmax: int) -> o3.Irreps:
    """channels x (0e + 0o + 1e + 1o + ... + lmax e + lmax o), scalars first (the gate's output order)."""
    return o3.Irreps([(channels, (l, p)) for l in range(lmax + 1) for p in (1, -1)])


def radial_embedding(d: torch.Tensor, cutoff: float, n: int, code_compat: bool) -> torch.Tensor:
    """[E, n] Bessel radial basis times the cosine cutoff (eq. 19), or the v1 code's variant."""
    fc = cosine_cutoff(d, cutoff)[..., None]
    b = bessel(d, cutoff, n)
    if code_compat:  # v1 code: no sqrt(2/r_c) prefactor, and the cutoff applied twice (f_c^2)
        return b / math.sqrt(2.0 / cutoff) * fc * fc
    return b * fc


def _uvu(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, allowed: o3.Irreps) -> tuple[o3.Irreps, list]:
    """Irreps and instructions of a 'uvu' product x (x) Y keeping only outputs whose irrep is in `allowed`."""
    keep = {ir for _, ir in allowed}
    mid, instr = [], []
    for a, (mul, ir_a) in enumerate(irreps_in):
        for b, (_, ir_b) in enumerate(irreps_sh):
            for ir in ir_a * ir_b:
                if ir in keep:
                    instr.append((a, b, len(mid), "uvu", True))
                    mid.append((mul, ir))
    mid = o3.Irreps(mid)
    sorted_mid, perm, _ = mid.sort()
    instr = [(a, b, perm[k], mode, train) for a, b, k, mode, train in instr]
    return sorted_mid, instr


class Linear(o3.Linear):
    """`o3.Linear` (same instructions, path weights, parameters and state_dict keys) evaluated per irrep
    through one `torch.split` of the input.

    e3nn's generated code narrows its input once per irrep, and the backward of every narrow fills a
    zero tensor the size of the whole input: on the pair block's [2E, 6000] product output that was ten
    fills of 400 MB per training step. Split pieces go back through one concatenation. Internal shared
    weights and no biases only (what this model builds).
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__(irreps_in, irreps_out, biases=False)
        if not (self.internal_weights and self.shared_weights) or self.bias_numel:
            raise ValueError("hamgnn Linear: internal shared weights without biases only")
        self.in_dims = [mul * ir.dim for mul, ir in self.irreps_in]
        # (i_in, i_out, flat weight offset, path shape, path weight) of every non-empty instruction
        plan, flat = [], 0
        for ins in self.instructions:
            n = ins.path_shape[0] * ins.path_shape[1]
            if n:
                plan.append((ins.i_in, ins.i_out, flat, ins.path_shape, float(ins.path_weight)))
            flat += n
        self.plan = plan

    def forward(self, features: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        if weight is not None or bias is not None:
            raise ValueError("hamgnn Linear: uses its internal weights")
        lead = features.shape[:-1]
        x = features.reshape(-1, self.irreps_in.dim)
        b = x.shape[0]
        xs = x.split(self.in_dims, dim=-1)
        per_out: list[list[torch.Tensor]] = [[] for _ in self.irreps_out]
        for i_in, i_out, flat, shape, alpha in self.plan:
            d = self.irreps_in[i_in].ir.dim
            w = self.weight.narrow(0, flat, shape[0] * shape[1]).reshape(shape) * alpha
            y = torch.einsum("zui,uw->zwi", xs[i_in].reshape(b, shape[0], d), w)
            per_out[i_out].append(y.reshape(b, shape[1] * d))
        outs = [sum(ys[1:], ys[0]) if ys else x.new_zeros(b, mul_ir.dim)
                for ys, mul_ir in zip(per_out, self.irreps_out) if mul_ir.mul > 0]
        out = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        return out.reshape(*lead, self.irreps_out.dim)


class NormActivation(enn.NormActivation):
    """`e3nn.nn.NormActivation` (normalised, epsilon, no bias) evaluated per irrep through one `torch.split`.

    Same function: x_u -> f(|x_u|) x_u / |x_u| with |x_u|^2 floored at epsilon^2, per channel u of every
    irrep; e3nn's Norm and elementwise products narrow the input per irrep (a zero fill of the whole
    input in each narrow's backward). The module and its (empty) state are e3nn's.
    """

    def __init__(self, irreps: o3.Irreps, scalar_nonlinearity, epsilon: float):
        super().__init__(irreps, scalar_nonlinearity, normalize=True, epsilon=epsilon, bias=False)
        self.in_dims = [mul * ir.dim for mul, ir in self.irreps_in]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        lead = features.shape[:-1]
        x = features.reshape(-1, self.irreps_in.dim)
        b = x.shape[0]
        outs = []
        for xi, (mul, ir) in zip(x.split(self.in_dims, dim=-1), self.irreps_in):
            xi = xi.reshape(b, mul, ir.dim)
            norms = xi.pow(2).sum(-1).clamp(min=self._eps_squared).sqrt()
            outs.append((xi * (self.scalar_nonlinearity(norms) / norms)[..., None]).reshape(b, mul * ir.dim))
        return torch.cat(outs, dim=-1).reshape(*lead, self.irreps_in.dim)


class WeightedProduct(torch.nn.Module):
    """x (x)_uvu Y(r) with per-edge path weights from an MLP of the radial basis (nequip's convolution core).

    Every path has its own output slot, so the product splits exactly into one e3nn TensorProduct
    per input irrep (same paths, same path normalisation). Why split: e3nn slices its per-edge weight
    tensor once per path, and each slice's backward fills a zero tensor of the whole weight tensor,
    which made one big product's backward ~10x its forward on CPU; split inputs and weights go
    through torch.split, whose backward is one concatenation.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, allowed: o3.Irreps, n_radial: int,
                 radial_hidden: int, radial_layers: int):
        super().__init__()
        irreps_in = o3.Irreps(irreps_in)
        self.in_dims = [mul * ir.dim for mul, ir in irreps_in]
        tps, self.group_of_input, out = [], [], []
        for mul, ir in irreps_in:
            mid, instr = _uvu(o3.Irreps([(mul, ir)]), irreps_sh, allowed)
            if not instr:
                self.group_of_input.append(-1)
                continue
            self.group_of_input.append(len(tps))
            tps.append(o3.TensorProduct(o3.Irreps([(mul, ir)]), irreps_sh, mid, instr, shared_weights=False,
                                        internal_weights=False))
            out += list(mid)
        self.tps = torch.nn.ModuleList(tps)
        self.weight_numels = [tp.weight_numel for tp in tps]
        self.fc = enn.FullyConnectedNet([n_radial] + [radial_hidden] * radial_layers + [sum(self.weight_numels)], ssp)
        # the outputs sorted by irrep and merged (simplified), so the next Linear sees one block per irrep
        # type: every product's output is split into its irreps (views) and the pieces are concatenated in
        # sorted order, one copy whose backward is views (a gather by index would scatter into a zero
        # tensor of the whole output)
        self.out_dims = [[mul * ir.dim for mul, ir in tp.irreps_out] for tp in tps]
        irreps = o3.Irreps(out)
        sorted_irreps, _, inv = irreps.sort()
        self.piece_order = [int(k) for k in inv]
        self.irreps_out = sorted_irreps.simplify()

    def forward(self, x: torch.Tensor, sh: torch.Tensor, rbf: torch.Tensor) -> torch.Tensor:
        xs = x.split(self.in_dims, dim=-1)
        ws = self.fc(rbf).split(self.weight_numels, dim=-1)
        outs = [self.tps[g](xs[a], sh, ws[g]) for a, g in enumerate(self.group_of_input) if g >= 0]
        pieces = [p for o, dims in zip(outs, self.out_dims) for p in o.split(dims, dim=-1)]
        return torch.cat([pieces[k] for k in self.piece_order], dim=-1)


class OrbitalConvolution(torch.nn.Module):
    """One HamGNN orbital convolution: nequip InteractionBlock + Gate, residual when the irreps agree."""

    def __init__(self, irreps_in: o3.Irreps, features: o3.Irreps, irreps_sh: o3.Irreps, n_types: int,
                 n_radial: int, radial_hidden: int, radial_layers: int):
        super().__init__()
        scalars = o3.Irreps([(m, ir) for m, ir in features if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in features if ir.l > 0])
        gates = o3.Irreps([(gated.num_irreps, (0, 1))]) if gated.num_irreps else o3.Irreps("")
        self.gate = enn.Gate(scalars, [ssp if ir.p == 1 else torch.tanh for _, ir in scalars],
                             gates, [ssp] * len(gates), gated)
        pre = self.gate.irreps_in  # what the convolution must produce before the gate
        self.linear_1 = Linear(irreps_in, irreps_in)
        self.product = WeightedProduct(irreps_in, irreps_sh, pre, n_radial, radial_hidden, radial_layers)
        self.linear_2 = Linear(self.product.irreps_out, pre)
        self.self_connection = o3.FullyConnectedTensorProduct(irreps_in, o3.Irreps(f"{n_types}x0e"), pre)
        self.residual = o3.Irreps(irreps_in) == o3.Irreps(self.gate.irreps_out)
        self.irreps_out = self.gate.irreps_out

    def forward(self, x: torch.Tensor, onehot: torch.Tensor, sh: torch.Tensor, rbf: torch.Tensor,
                center: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        msg = self.product(self.linear_1(x)[neighbour], sh, rbf)
        # plain sum over neighbours (v1: avg_num_neighbors None, no degree normalisation)
        agg = msg.new_zeros(x.shape[0], msg.shape[1]).index_add_(0, center, msg)
        out = self.gate(self.linear_2(agg) + self.self_connection(x, onehot))
        return x + out if self.residual else out


class PairInteraction(torch.nn.Module):
    """Pair features omega_ij from both endpoints and the edge (v1 Edge_builder; eq. 22)."""

    def __init__(self, features: o3.Irreps, irreps_sh: o3.Irreps, n_radial: int, radial_hidden: int,
                 radial_layers: int):
        super().__init__()
        self.linear_i = Linear(features, features)
        self.linear_j = Linear(features, features)
        self.product = WeightedProduct(features, irreps_sh, features, n_radial, radial_hidden, radial_layers)
        self.linear_out = Linear(self.product.irreps_out, features)

    def forward(self, x: torch.Tensor, sh: torch.Tensor, rbf: torch.Tensor, i: torch.Tensor,
                j: torch.Tensor) -> torch.Tensor:
        xij = self.linear_i(x)[i] + self.linear_j(x)[j]
        return self.linear_out(self.product(xij, sh, rbf))


class ResidualBlock(torch.nn.Module):
    """x + Linear_2(NormActivation(ssp, normalised, no bias)(Linear_1(x))) (v1 residual_block, 'norm')."""

    def __init__(self, irreps: o3.Irreps):
        super().__init__()
        self.linear_1 = Linear(irreps, irreps)
        # epsilon keeps the norm's gradient finite where a feature vanishes (e.g. unfed parities)
        self.act = NormActivation(irreps, ssp, epsilon=1e-8)
        self.linear_2 = Linear(irreps, irreps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear_2(self.act(self.linear_1(x)))
