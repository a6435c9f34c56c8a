"""`hamgnn` and `hamgnn-soc`: E(3)-equivariant HamGNN (seed 004, Zhong et al.) on e3nn; see README.md.

    x^0_i    = Linear(onehot(Z_i))                                  (N_fea x 0e)
    x^t_i    = OrbitalConvolution_t(x^(t-1))        t = 1..num_layers (nequip block + gate, residual)
    h_i      = Linear(x^T_i)
    omega_ij = PairInteraction(h_i, h_j, r_ij)
    H_ii     = sym( WE( Linear(Residual_on(h_i)) ) ),     sym(B) = (B + B^T) / 2
    H_ij(R)  = ( WE(Linear(Residual_off(omega_ij))) + WE(Linear(Residual_off(omega_ji)))^T ) / 2

WE is the shared Wigner-Eckart head (eq. 12). With `onsite_prior: true` (not in the paper) H_ii also gets
the per-element mean of the training set's invariant (L = 0) on-site blocks, fitted in `prepare`
(`zoo.models.mean.invariant`, the `mean` baseline's fit; kron(I2, .) of it on spinful data), so the network
learns the residual rather than core levels of thousands of Hartree. The off-site line is eq. 23 with the reverse edge's
raw output computed from the same two endpoint features (omega_ji = PairInteraction(h_j, h_i, -r_ij),
exactly what the edge (j, i, -R) computes), so H_ji(-R) = H_ij(R)^T holds by construction, also
for a partition's one-way halo edges whose reverse is not in the sub-graph.

Spin-orbit coupling (`hamgnn-soc`, eqs. 14-15, spin-major layout of docs/adr/0006):

    H_ij = kron(I2, H0_ij) + 1/2 sum_a kron(sigma_a, (xi_ij o L)_a),
    (xi o L)_a = sum over slot pairs (s, t) with l_s = l_t > 0 of xi_st L^(l)_a placed at (s, t)

L^(l)_a is the analytic one-centre angular momentum (`zoo.physics.spin`), on site and, as a
documented deviation, off site too (the two-centre <phi_i|L|phi_j> of the paper is not in our
data); xi_st is an invariant (0e) per shell pair from node (on site) or pair (off site) scalars,
symmetrised like H so the block is hermitian. sum_a sigma_a (x) L_a is invariant under
kron(U(R), D_l(R)) on both sides and time-reversal even, so the output is SU(2)-equivariant,
parity-even and T-symmetric.

`soc_head: su2` (HamGNN v2.1 / DeepH-E3 style, su2.py) replaces the xi o L term by

    H_ij = kron(I2, H0_ij) + i sum_a kron(sigma_a, X_a,ij),   X from irreps of 1e (x) l_i (x) l_j,

X_ii antisymmetric and X_ij = (X(omega_ij) - X(omega_ji)^T) / 2: the general time-reversal-even,
hermitian, SU(2)-covariant block (the spin part of (l_i x 1/2) x (l_j x 1/2)), with no L matrices.
"""

from __future__ import annotations

import torch
from e3nn import o3

from zoo.data.graph import species_index
from zoo.data.torch_data import DatasetInfo, block_masks, edge_vectors
from zoo.errors import ConfigError
from zoo.models.contract import Backbone, Prediction
from zoo.models.hamgnn.layers import (Linear, OrbitalConvolution, PairInteraction, ResidualBlock, exact_wigner_3j,
                                      feature_irreps, radial_embedding)
from zoo.models.hamgnn.su2 import SpinCoupling, pauli_expand
from zoo.models.mean.invariant import InvariantOnsitePrior
from zoo.models.registry import register_model
from zoo.physics.coupling import WignerEckart
from zoo.physics.spin import complex_dtype, orbital_angular_momentum, pauli, spin_identity
from zoo.physics.wigner import spherical_harmonics


def _sym(blocks: torch.Tensor) -> torch.Tensor:
    return 0.5 * (blocks + blocks.transpose(-1, -2))


@register_model("hamgnn")
class HamGNN(Backbone):
    """HamGNN: orbital convolutions, pair interaction, on/off-site residual layers, Wigner-Eckart output.

    Hyper-parameters:
        num_features   N_fea, channels of every irrep 0e, 0o, ..., lmax e, lmax o (repo preset 32)
        lmax           largest feature degree, at least the largest coupled L = 2 l_max of the basis (4 for
                       d shells), or 'auto': exactly that (resolved from the dataset's basis; `self.lmax`)
        sh_lmax        degree of the edge spherical harmonics (4)
        num_layers     orbital convolutions (5 in the paper); also the partition halo depth
        num_radial     Bessel functions (8)
        radial_hidden  width of the two-layer radial MLP (64)
        radial_layers  hidden layers of the radial MLP (2)
        cutoff         radial cutoff r_c (default: the dataset cutoff; graph edges are the dataset's blocks)
        code_compat    v1-code radial basis: no sqrt(2/r_c) prefactor and f_c^2 (default: eq. 19)
        num_types      one-hot width (default: the dataset's element count; the repo uses 60)
        l1_loss        train on the mean |H_pred - H| over labelled real entries (the paper's loss)
        onsite_prior   add the per-element invariant on-site means fitted in `prepare` (default false)
    """

    message_passing_layers = 5
    message_flow = "target_to_source"  # messages from edge_index row 1 (j) summed at row 0 (i)
    spinful = False
    hermitian = True

    def __init__(self, info: DatasetInfo, *, num_features: int = 4, lmax: int | str = 4, sh_lmax: int = 4,
                 num_layers: int = 2, num_radial: int = 8, radial_hidden: int = 16, radial_layers: int = 2,
                 cutoff: float | None = None, code_compat: bool = False, num_types: int | None = None,
                 l1_loss: bool = False, onsite_prior: bool = False):
        name = type(self).model_name
        if bool(info.spinful) != self.spinful:
            if info.spinful:
                raise ConfigError(f"{name} predicts real spinless blocks and cannot be trained on the spinful "
                                  f"dataset {info.name!r}; use hamgnn-soc there")
            raise ConfigError(f"{name} predicts spinful (2n x 2n complex) blocks and cannot be trained on the "
                              f"spinless dataset {info.name!r}; use hamgnn there")
        super().__init__(info)
        for key, v in [("num_features", num_features), ("num_layers", num_layers), ("num_radial", num_radial),
                       ("radial_hidden", radial_hidden), ("radial_layers", radial_layers)]:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: {key} must be a positive integer, got {v!r}")
        if not isinstance(onsite_prior, bool):
            raise ConfigError(f"{name}: onsite_prior must be true or false, got {onsite_prior!r}")
        if lmax == "auto":
            lmax = self.auto_lmax(info)
        for key, v in [("lmax", lmax), ("sh_lmax", sh_lmax)]:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name}: {key} must be a non-negative integer"
                                  f"{' or auto' if key == 'lmax' else ''}, got {v!r}")
        rc = float(info.cutoff if cutoff is None else cutoff)
        if not rc > 0:
            raise ConfigError(f"{name}: cutoff must be positive, got {rc}")
        n_el = len(info.elements)
        n_types = n_el if num_types is None else int(num_types)
        if n_types < n_el:
            raise ConfigError(f"{name}: num_types={n_types} is smaller than the dataset's {n_el} elements")
        self.message_passing_layers = num_layers
        self.cutoff, self.num_radial, self.code_compat, self.l1_loss = rc, num_radial, bool(code_compat), bool(l1_loss)
        self.n_types, self.lmax = n_types, lmax
        self.register_buffer("z_index", torch.as_tensor(species_index(info.elements)), persistent=False)

        self.we = WignerEckart(info.layout)
        need = max(ir.l for _, ir in self.we.irreps)
        if lmax < need:
            raise ConfigError(f"{name}: lmax={lmax} cannot express the basis's coupled blocks up to L={need} "
                              f"(dataset {info.name!r}); use lmax >= {need}, or lmax: auto")
        feats = feature_irreps(num_features, lmax)
        self.irreps_sh = o3.Irreps.spherical_harmonics(sh_lmax, p=-1)
        self.sh_ls = list(range(sh_lmax + 1))
        self.embedding = Linear(o3.Irreps(f"{n_types}x0e"), o3.Irreps(f"{num_features}x0e"))
        layers, irreps = [], self.embedding.irreps_out
        for _ in range(num_layers):
            conv = OrbitalConvolution(irreps, feats, self.irreps_sh, n_types, num_radial, radial_hidden, radial_layers)
            layers.append(conv)
            irreps = conv.irreps_out
        self.convolutions = torch.nn.ModuleList(layers)
        self.to_output = Linear(irreps, feats)
        self.pair = PairInteraction(feats, self.irreps_sh, num_radial, radial_hidden, radial_layers)
        self.onsite = torch.nn.Sequential(ResidualBlock(feats), Linear(feats, self.we.irreps))
        self.offsite = torch.nn.Sequential(ResidualBlock(feats), Linear(feats, self.we.irreps))
        self.features = feats
        self.prior = InvariantOnsitePrior(self.we, n_el) if onsite_prior else None
        exact_wigner_3j(self)

    @staticmethod
    def auto_lmax(info: DatasetInfo, soc_head: str | None = None) -> int:
        """`lmax: auto`: the smallest lmax the basis needs, 2 l_max (coupled L of two l_max shells; 4 for d,
        6 for f shells), + 1 for the su2 head (the spin vector couples to L = 2 l_max)."""
        need = 2 * max(info.layout.slot_ls)
        return need + 1 if soc_head == "su2" else need

    def _apply(self, fn, *args, **kwargs):
        # .double() / .to() cast e3nn's float32-built 3j constants; rebuild them exactly in the new dtype
        out = super()._apply(fn, *args, **kwargs)
        exact_wigner_3j(self)
        return out

    # -- the spinless network --------------------------------------------------------------------------
    def _encode(self, batch):
        """Node features h [N, F] and pair features [2E, F]: omega_ij (rows :E), then omega_ji (rows E:)."""
        i, j = batch.edge_index
        vec = edge_vectors(batch)
        rbf = radial_embedding(vec.norm(dim=-1), self.cutoff, self.num_radial, self.code_compat)
        sh = spherical_harmonics(self.sh_ls, vec)
        sh_rev = spherical_harmonics(self.sh_ls, -vec)
        zi = self.z_index[batch.z]
        onehot = torch.nn.functional.one_hot(zi, self.n_types).to(vec.dtype)
        x = self.embedding(onehot)
        for conv in self.convolutions:
            x = conv(x, onehot, sh, rbf, i, j)
        h = self.to_output(x)
        # both directions in one call: omega_ij from (h_i, h_j, r_ij), omega_ji from (h_j, h_i, -r_ij)
        # (kept whole: slicing it in two would cost a zero fill of [2E, F] per half in the backward)
        omega = self.pair(h, torch.cat([sh, sh_rev]), torch.cat([rbf, rbf]), torch.cat([i, j]), torch.cat([j, i]))
        return h, omega

    @torch.no_grad()
    def prepare(self, train_graphs) -> None:
        """Fit the on-site prior (onsite_prior: true) on the labelled training blocks; else nothing."""
        if self.prior is not None:
            self.prior.fit(train_graphs, self.z_index, f"{type(self).model_name} onsite prior")

    def _spinless(self, batch, h, omega) -> tuple[torch.Tensor, torch.Tensor]:
        node = _sym(self.we.to_blocks(self.onsite(h)))
        if self.prior is not None:
            node = node + self.prior(self.z_index[batch.z], node.dtype)
        off_f, off_r = self.we.to_blocks(self.offsite(omega)).chunk(2)
        edge = 0.5 * (off_f + off_r.transpose(-1, -2))  # eq. 23 with the reverse edge's raw block
        return node, edge

    def forward(self, batch) -> Prediction:
        h, omega = self._encode(batch)
        return Prediction(*self._spinless(batch, h, omega))

    # -- the paper's loss --------------------------------------------------------------------------------
    def loss_terms(self, pred: Prediction, batch) -> tuple[torch.Tensor, torch.Tensor] | None:
        """With `l1_loss`: (sum |H_pred - H|, count) over labelled real-orbital entries (|.| the modulus).

        HamGNN's code averages its L1 over the padded nao_max^2 arrays (padding zeros included);
        here padding and virtual (halo) outputs never count.
        """
        if not self.l1_loss:
            return None
        nm, em = block_masks(batch)
        nm = nm & batch.node_label_mask[:, None, None]
        em = em & batch.edge_label_mask[:, None, None]
        # masked sums, not boolean indexing (a host sync and a gather / scatter of every labelled entry)
        node = torch.where(nm, (pred.node_blocks - batch.y_node).abs(), 0.0).sum()
        edge = torch.where(em, (pred.edge_blocks - batch.y_edge).abs(), 0.0).sum()
        total = node + edge
        return total, (nm.sum() + em.sum()).to(total.dtype)


@register_model("hamgnn-soc")
class HamGNNSOC(HamGNN):
    """HamGNN with spin-orbit coupling: kron(I2, H0) + 1/2 sum_a kron(sigma_a, xi o L_a) (eqs. 14-15).

    Same hyper-parameters as `hamgnn`, plus
        soc_head   'so3' (default): the paper's xi o L head; xi has one invariant per same-l shell
                   pair, on site from node scalars and off site from pair scalars, each through its
                   own residual block (v1 code: nao^2 scalars averaged within shells).
                   'su2' (HamGNN v2.1 / DeepH-E3 style, `su2.py`): H = kron(I2, H0) +
                   i sum_a kron(sigma_a, X_a) with X from irreps of 1e (x) l_i (x) l_j (the spin part
                   of (l_i x 1/2) x (l_j x 1/2)), on site from node and off site from pair features,
                   each through its own residual block; no L matrices; needs lmax >= 2 l_max + 1
                   (what `lmax: auto` resolves to with this head).
    """

    spinful = True
    hermitian = True

    def __init__(self, info: DatasetInfo, *, num_features: int = 4, lmax: int | str = 4, sh_lmax: int = 4,
                 num_layers: int = 2, num_radial: int = 8, radial_hidden: int = 16, radial_layers: int = 2,
                 cutoff: float | None = None, code_compat: bool = False, num_types: int | None = None,
                 l1_loss: bool = False, onsite_prior: bool = False, soc_head: str = "so3"):
        if soc_head not in ("so3", "su2"):
            raise ConfigError(f"hamgnn-soc: soc_head must be 'so3' (xi o L, eqs. 14-15) or 'su2' (irreps of "
                              f"(l_i x 1/2) x (l_j x 1/2)), got {soc_head!r}")
        # su2 couples the spin vector (1e) to orbital blocks up to L = 2 l_max: irreps up to K = 2 l_max + 1
        need = self.auto_lmax(info, "su2")
        if lmax == "auto" and info.spinful:
            lmax = self.auto_lmax(info, soc_head)
        if soc_head == "su2" and info.spinful and isinstance(lmax, int) and lmax < need:
            raise ConfigError(f"hamgnn-soc: soc_head 'su2' couples the spin vector to blocks up to L={need - 1}, "
                              f"so it needs irreps up to K={need}, but lmax={lmax} (dataset {info.name!r}); "
                              f"use lmax >= {need}, or lmax: auto")
        super().__init__(info, num_features=num_features, lmax=lmax, sh_lmax=sh_lmax, num_layers=num_layers,
                         num_radial=num_radial, radial_hidden=radial_hidden, radial_layers=radial_layers,
                         cutoff=cutoff, code_compat=code_compat, num_types=num_types, l1_loss=l1_loss,
                         onsite_prior=onsite_prior)
        self.soc_head = soc_head
        if soc_head == "su2":
            self.spin = SpinCoupling(info.layout)
            feats, out = self.features, self.spin.irreps
            self.spin_onsite = torch.nn.Sequential(ResidualBlock(feats), Linear(feats, out))
            self.spin_offsite = torch.nn.Sequential(ResidualBlock(feats), Linear(feats, out))
            exact_wigner_3j(self)  # the new residual blocks' 3j constants, exact in float64 too
            return
        layout = info.layout
        slot_ls = list(layout.slot_ls)
        pairs = [(s, t) for s, ls in enumerate(slot_ls) for t, lt in enumerate(slot_ls) if ls == lt and ls > 0]
        if not pairs:
            raise ConfigError(f"hamgnn-soc: the basis of dataset {info.name!r} has no l > 0 shell, so L.sigma "
                              "vanishes and there is no spin-orbit coupling to predict")
        n = layout.n_max
        # X[p, a] = Im L^(l)_a placed at slot pair p (L = i X, X real antisymmetric)
        x = torch.zeros(len(pairs), 3, n, n, dtype=torch.float64)
        for p, (s, t) in enumerate(pairs):
            l, os_, ot = slot_ls[s], layout.slot_offsets[s], layout.slot_offsets[t]
            x[p, :, os_:os_ + 2 * l + 1, ot:ot + 2 * l + 1] = orbital_angular_momentum(l).imag
        self.register_buffer("l_gen", x, persistent=False)
        index = {st: p for p, st in enumerate(pairs)}
        self.register_buffer("pair_transpose", torch.as_tensor([index[(t, s)] for s, t in pairs]), persistent=False)
        scalars = o3.Irreps(f"{num_features}x0e")
        self.xi_onsite = torch.nn.Sequential(ResidualBlock(scalars), Linear(scalars, o3.Irreps(f"{len(pairs)}x0e")))
        self.xi_offsite = torch.nn.Sequential(ResidualBlock(scalars), Linear(scalars, o3.Irreps(f"{len(pairs)}x0e")))
        self.n_scalars = num_features  # the 0e channels lead the feature irreps

    def _soc(self, xi: torch.Tensor) -> torch.Tensor:
        """1/2 sum_a kron(sigma_a, sum_p xi_p L_a[p]) for xi [B, P] -> complex [B, 2n, 2n]."""
        cdt = complex_dtype(xi.dtype)
        m = torch.einsum("bp,paij->abij", xi, self.l_gen.to(xi.dtype))  # real; (xi o L)_a = i m_a
        sig = pauli(cdt, device=xi.device)
        n = m.shape[-1]
        return (0.5j * torch.einsum("ast,abij->bsitj", sig, m.to(cdt))).reshape(-1, 2 * n, 2 * n)

    def _su2(self, h, omega) -> tuple[torch.Tensor, torch.Tensor]:
        """The `su2` head's spin terms i sum_a kron(sigma_a, X_a): X_ii antisymmetric, X_ji(-R) = -X_ij(R)^T."""
        x_on = self.spin(self.spin_onsite(h))
        x_on = 0.5 * (x_on - x_on.transpose(-1, -2))
        g_f, g_r = self.spin(self.spin_offsite(omega)).chunk(2)
        x_off = 0.5 * (g_f - g_r.transpose(-1, -2))  # eq. 23 for the antisymmetric (imaginary) part
        return pauli_expand(x_on), pauli_expand(x_off)

    def forward(self, batch) -> Prediction:
        h, omega = self._encode(batch)
        node0, edge0 = self._spinless(batch, h, omega)
        if self.soc_head == "su2":
            cdt = complex_dtype(node0.dtype)
            s_on, s_off = self._su2(h, omega)
            return Prediction(spin_identity(node0.to(cdt)) + s_on, spin_identity(edge0.to(cdt)) + s_off)
        k = self.n_scalars
        g_on = self.xi_onsite(h[:, :k])
        xi_on = 0.5 * (g_on + g_on[:, self.pair_transpose])  # xi_st = xi_ts: hermitian on site
        g_f, g_r = self.xi_offsite(omega[:, :k]).chunk(2)
        xi_off = 0.5 * (g_f + g_r[:, self.pair_transpose])  # xi_ij[s,t] = xi_ji[t,s]
        cdt = complex_dtype(node0.dtype)
        return Prediction(spin_identity(node0.to(cdt)) + self._soc(xi_on),
                          spin_identity(edge0.to(cdt)) + self._soc(xi_off))
