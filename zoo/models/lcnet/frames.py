"""LC-Net's complete local coordinates: neighbour tables, frame selection (Algorithm 1), pairs.

Frames come from `zoo.physics.frames.local_frame(v1, v2)` (rows x' = v1/|v1|,
y' = v1 x v2/|v1 x v2|, z' = x' x y'; r_local = R r). This module decides WHICH v1 and v2.

Neighbours of atom a are the senders of its incoming edges (edge_index[1] == a), as vectors
a -> neighbour; that is the side the one-way partition halo completes (message flow
source_to_target). Distances within `tol` (Angstrom) are "equal".

On-site (eq. 13 + Algorithm 1): v1 = bond to the nearest neighbour; if several lie within tol of
the nearest distance, the one with the largest GLOBAL x (then y, then z; within tol). v2 = bond
to the nearest neighbour not collinear with v1 (sine of the angle > COLLINEAR_SIN); if several
lie within tol of that distance, `find_v2`.

find_v2(candidates, v1): rotate v1 onto (1, 0, 0) with the minimal (Rodrigues) rotation about
v1 x e_x (a rotation by pi about z when v1 = -e_x; the paper does not fix this rotation) and keep
the candidate whose rotated direction makes the smallest angle with v_a = (3.4, 4.5, 5.6).

Off-site pair {i, j} (eqs. 14-15 + Algorithm 1): for each possible anchor a in {i, j}, v1 = a ->
other atom and the v2 candidates are a's neighbours nearest among those not collinear with v1
(so never the other atom itself: eq. 15's "n_i1" is read as n_j1). The anchor is, in order:
  1. both candidate lists unique: the atom with the smaller d_min (distance to its nearest
     neighbour); on a d_min tie (always the case for mutual nearest neighbours) the atom whose
     v2 neighbour is nearer (our covariant extension: the paper's Algorithm 1 would take i,
     which depends on the atom order);
  2. exactly one list unique: that atom (Algorithm 1);
  3. otherwise (or ties in 1.): find_v2 for both anchors, the smaller angle to v_a wins; on an
     angle tie (|delta| < 1e-9 rad), the anchor whose v1 is lexicographically larger in global
     (x, y, z).
Rules 1-2 use only distances, so the frame rotates with the structure; find_v2, the global-x
rule and rule 3 use global coordinates ("global information": `global_info` flags them) and are
deterministic but not rotation-covariant. h_ij and h_ji share the frame of their pair.
An atom without a usable v2 (fewer than two non-collinear neighbours) gets local_frame's
fallback frame and is flagged `degenerate` (not covariant; isolated dimers, linear molecules).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zoo.models.contract import reverse_edges
from zoo.physics.frames import local_frame

#: the auxiliary direction of find_v2 (paper, Algorithm 1)
V_A = (3.4, 4.5, 5.6)
#: a candidate v2 whose sine with v1 is below this is collinear (gives no frame)
COLLINEAR_SIN = 1e-3
#: find_v2 angles closer than this (rad) are a tie
ANGLE_TIE = 1e-9
_INF = float("inf")


@dataclass
class NeighbourTable:
    """Incoming neighbours of every atom sorted by distance (padded to the largest count K).

    edge [N, K] edge id (-1: padding), vec [N, K, 3] bond a -> neighbour (zero padding,
    differentiable), dist [N, K] float64 detached (+inf padding), count [N].
    """

    edge: torch.Tensor
    vec: torch.Tensor
    dist: torch.Tensor
    count: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.edge >= 0


def neighbour_table(edge_index: torch.Tensor, vec_ij: torch.Tensor, n_nodes: int) -> NeighbourTable:
    """Table of incoming neighbours (edge_index[1] == a; bond a -> edge_index[0]'s image = -r_ij)."""
    recv = edge_index[1]
    w = -vec_ij
    d = w.detach().to(torch.float64).norm(dim=1)
    order = torch.argsort(d, stable=True)
    order = order[torch.argsort(recv[order], stable=True)]
    count = torch.bincount(recv, minlength=n_nodes)
    k = int(count.max()) if recv.numel() else 0
    ptr = torch.cumsum(count, 0) - count
    r_sorted = recv[order]
    slot = torch.arange(order.numel(), device=recv.device) - ptr[r_sorted]
    edge = torch.full((n_nodes, max(k, 1)), -1, dtype=torch.long, device=recv.device)
    edge[r_sorted, slot] = order
    valid = edge >= 0
    safe = edge.clamp(min=0)
    vec = w[safe] * valid[..., None].to(w.dtype)
    dist = d[safe].masked_fill(~valid, _INF)
    return NeighbourTable(edge, vec, dist, count)


def rotation_to_x(u: torch.Tensor) -> torch.Tensor:
    """[M, 3, 3] minimal rotations taking unit vectors u [M, 3] to e_x (Rodrigues, axis u x e_x).

    R = I + [k]x + [k]x^2 / (1 + c) with k = u x e_x, c = u . e_x; for u = -e_x (c = -1) the
    rotation by pi about z.
    """
    ex = torch.zeros_like(u)
    ex[:, 0] = 1.0
    k = torch.linalg.cross(u, ex, dim=-1)
    c = u[:, 0]
    zero = torch.zeros_like(c)
    kx = torch.stack([torch.stack([zero, -k[:, 2], k[:, 1]], -1),
                      torch.stack([k[:, 2], zero, -k[:, 0]], -1),
                      torch.stack([-k[:, 1], k[:, 0], zero], -1)], -2)
    eye = torch.eye(3, dtype=u.dtype, device=u.device).expand_as(kx)
    anti = c < -1 + 1e-12
    denom = torch.where(anti, torch.ones_like(c), 1 + c)
    R = eye + kx + kx @ kx / denom[:, None, None]
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=u.dtype, device=u.device)).expand_as(R)
    return torch.where(anti[:, None, None], flip, R)


@dataclass
class _V2:
    chosen: torch.Tensor  # [M] column of the table row
    n_cand: torch.Tensor  # [M] candidates within tol of the nearest non-collinear distance
    angle: torch.Tensor  # [M] find_v2 angle of the best candidate (+inf without candidates)
    has: torch.Tensor  # [M] any non-collinear neighbour
    dist: torch.Tensor  # [M] distance of the v2 neighbour
    cand: torch.Tensor  # [M, K] the candidates (non-collinear, within tol of the nearest of those)


def _pick_v2(u: torch.Tensor, W: torch.Tensor, D: torch.Tensor, valid: torch.Tensor, tol: float) -> _V2:
    """v2 among table rows W [M, K, 3] (float64, detached) for unit v1 directions u [M, 3]."""
    wn = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    sin = torch.linalg.cross(u[:, None, :].expand_as(wn), wn, dim=-1).norm(dim=-1)
    ok = valid & (sin > COLLINEAR_SIN)
    dm = D.masked_fill(~ok, _INF)
    dstar, first = dm.min(dim=1)
    has = ok.any(dim=1)
    cand = ok & (dm - dstar[:, None] <= tol)
    n_cand = cand.sum(dim=1)
    va = torch.tensor(V_A, dtype=W.dtype, device=W.device)
    va = va / va.norm()
    rotated = torch.einsum("mab,mkb->mka", rotation_to_x(u), wn)
    ang = torch.arccos((rotated @ va).clamp(-1.0, 1.0)).masked_fill(~cand, _INF)
    best_ang, best = ang.min(dim=1)
    chosen = torch.where(n_cand > 1, best, first)
    return _V2(chosen, n_cand, best_ang, has, dstar, cand)


def _lex_max(W: torch.Tensor, cand: torch.Tensor, tol: float) -> torch.Tensor:
    """[M] column of the candidate with the largest global x, then y, then z (within tol)."""
    keep = cand.clone()
    for ax in range(3):
        x = W[..., ax].masked_fill(~keep, -_INF)
        top = x.max(dim=1).values
        keep = keep & (x >= top[:, None] - tol)
    return keep.to(torch.int8).argmax(dim=1)


def _lex_positive(v: torch.Tensor, tol: float) -> torch.Tensor:
    """[M] whether v is lexicographically positive in global (x, y, z) beyond tol."""
    out = torch.zeros(v.shape[0], dtype=torch.bool, device=v.device)
    undecided = torch.ones_like(out)
    for ax in range(3):
        pos, neg = v[:, ax] > tol, v[:, ax] < -tol
        out = out | (undecided & pos)
        undecided = undecided & ~pos & ~neg
    return out


@dataclass
class Candidates:
    """Every candidate frame of the tied blocks, for frame averaging (`degenerate_frames: average`).

    A tied block (several v1 and/or v2 candidates within tol, or an off-site anchor tie) gets one
    row per candidate frame: owner [C] its block (node or pair id), anchor, other [C] the frame's
    atoms (on-site: both the atom), R [C, 3, 3] the frame (differentiable like the blocks' own),
    same [C] whether the candidate is anchored at the atom the block's own frame is anchored at
    (else the pair block it predicts is the transpose). The set is defined by distances and
    collinearity only, so it rotates with the structure: the mean over it of any covariant
    per-frame quantity is covariant. count [B] candidates per block, tied [B] = count > 0.
    """

    owner: torch.Tensor
    anchor: torch.Tensor
    other: torch.Tensor
    R: torch.Tensor
    same: torch.Tensor
    count: torch.Tensor
    tied: torch.Tensor

    def mean(self, values: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Per block: the mean of `values` [C, ...] over its candidates where tied, else `base` [B, ...]."""
        total = base.new_zeros(base.shape).index_add(0, self.owner, values.to(base.dtype))
        shape = (-1,) + (1,) * (base.dim() - 1)
        avg = total / self.count.clamp(min=1).to(base.dtype).view(shape)
        return torch.where(self.tied.view(shape), avg, base)


def _candidates(owner, anchor, other, v1, v2, same, n_blocks) -> Candidates:
    R, _ = local_frame(v1, v2)
    count = torch.bincount(owner, minlength=n_blocks)
    return Candidates(owner, anchor, other, R, same, count, count > 0)


@dataclass
class NodeFrames:
    """R [N, 3, 3] (r_local = R r), global_info [N], degenerate [N]; cand: every candidate frame of
    the tied atoms (only when asked for)."""

    R: torch.Tensor
    global_info: torch.Tensor
    degenerate: torch.Tensor
    cand: Candidates | None = None


def node_frames(table: NeighbourTable, tol: float, candidates: bool = False) -> NodeFrames:
    """On-site frames (eq. 13 and Algorithm 1's on-site branch; see the module docstring).

    candidates: also list, for every atom with ties, all (v1, v2) pairs: v1 any neighbour within
    tol of the nearest, v2 any candidate of `_pick_v2` for that v1 (none for a v1 without a
    non-collinear neighbour).
    """
    n = table.edge.shape[0]
    ar = torch.arange(n, device=table.edge.device)
    W = table.vec.detach().to(torch.float64)
    D, valid = table.dist, table.valid
    c1 = valid & (D - D[:, :1] <= tol)
    i1 = _lex_max(W, c1, tol)
    u = W[ar, i1]
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    v2 = _pick_v2(u, W, D, valid, tol)
    R, deg = local_frame(table.vec[ar, i1], table.vec[ar, v2.chosen])
    lonely = table.count == 0
    deg = deg | ~v2.has | lonely
    eye = torch.eye(3, dtype=R.dtype, device=R.device).expand_as(R)
    R = torch.where(lonely[:, None, None], eye, R)
    tied = (c1.sum(1) > 1) | (v2.n_cand > 1)
    out = NodeFrames(R, tied, deg)
    if candidates:
        t_ids = torch.nonzero(tied & ~deg).flatten()
        rows, k1 = torch.nonzero(c1[t_ids], as_tuple=True)
        node = t_ids[rows]
        u1 = W[node, k1]
        u1 = u1 / u1.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        c2 = _pick_v2(u1, W[node], D[node], valid[node], tol)
        r2, k2 = torch.nonzero(c2.cand & c2.has[:, None], as_tuple=True)
        owner = node[r2]
        out.cand = _candidates(owner, owner, owner, table.vec[owner, k1[r2]], table.vec[owner, k2],
                               torch.ones_like(owner, dtype=torch.bool), n)
    return out


@dataclass
class PairFrames:
    """One frame per atom pair {i, j, +-shift} (P pairs) shared by h_ij and h_ji.

    canon [P] edge id of the pair's representative edge; pair_of [E] pair of every edge;
    forward [E] edge runs anchor -> other (its block is the pair's h; else h^T);
    anchor, other [P] atoms; vec [P, 3] bond anchor -> other; R [P, 3, 3]; global_info [P];
    degenerate [P].
    """

    canon: torch.Tensor
    pair_of: torch.Tensor
    forward: torch.Tensor
    anchor: torch.Tensor
    other: torch.Tensor
    vec: torch.Tensor
    R: torch.Tensor
    global_info: torch.Tensor
    degenerate: torch.Tensor
    cand: Candidates | None = None


def pairs(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(canon [P], pair_of [E]): an edge and its reverse (j, i, -shift) form one pair; the
    representative is the one with the smaller index (or the edge alone if its reverse is absent)."""
    e = edge_index.shape[1]
    rev = reverse_edges(edge_index, edge_shift)
    ar = torch.arange(e, device=edge_index.device)
    is_canon = (rev < 0) | (ar <= rev)
    canon = ar[is_canon]
    pid = torch.full((e,), -1, dtype=torch.long, device=edge_index.device)
    pid[canon] = torch.arange(canon.numel(), device=edge_index.device)
    pid = torch.where(is_canon, pid, pid[rev.clamp(min=0)])
    return canon, pid


def pair_frames(edge_index: torch.Tensor, edge_shift: torch.Tensor, vec_ij: torch.Tensor, table: NeighbourTable,
                tol: float, candidates: bool = False) -> PairFrames:
    """Off-site frames: the anchor rule and v2 of the module docstring, one per pair.

    candidates: also list, for every pair decided by rule 3 (the global-information rule), the
    frames anchored at each end that has a v2, with each of that end's v2 candidates.
    """
    canon, pair_of = pairs(edge_index, edge_shift)
    i, j = edge_index[0, canon], edge_index[1, canon]
    r = vec_ij[canon]
    r64 = r.detach().to(torch.float64)
    u = r64 / r64.norm(dim=-1, keepdim=True)
    W, D, valid = table.vec.detach().to(torch.float64), table.dist, table.valid
    pi = _pick_v2(u, W[i], D[i], valid[i], tol)
    pj = _pick_v2(-u, W[j], D[j], valid[j], tol)
    dmin_i, dmin_j = D[i, 0], D[j, 0]
    ui, uj = pi.has & (pi.n_cand == 1), pj.has & (pj.n_cand == 1)
    both = ui & uj
    dmin_differs = (dmin_i - dmin_j).abs() > tol
    dv2_differs = (pi.dist - pj.dist).abs() > tol
    rule1 = both & (dmin_differs | dv2_differs)
    rule1_i = torch.where(dmin_differs, dmin_i < dmin_j, pi.dist < pj.dist)
    rule2 = ui ^ uj
    # rule 3: find_v2 angles, then the sign of the bond in global coordinates
    ang_tie = (pi.angle - pj.angle).abs() < ANGLE_TIE
    ang_tie = ang_tie | (torch.isinf(pi.angle) & torch.isinf(pj.angle))
    rule3_i = torch.where(ang_tie, _lex_positive(r64, tol), pi.angle < pj.angle)
    # an anchor without any usable v2 loses to one that has it
    rule3_i = torch.where(pi.has & ~pj.has, torch.ones_like(rule3_i), rule3_i)
    rule3_i = torch.where(pj.has & ~pi.has, torch.zeros_like(rule3_i), rule3_i)
    anchor_i = torch.where(rule1, rule1_i, torch.where(rule2, ui, rule3_i))
    global_info = ~(rule1 | rule2)
    anchor = torch.where(anchor_i, i, j)
    other = torch.where(anchor_i, j, i)
    v1 = torch.where(anchor_i[:, None], r, -r)
    col = torch.where(anchor_i, pi.chosen, pj.chosen)
    v2 = table.vec[anchor, col]
    R, deg = local_frame(v1, v2)
    has = torch.where(anchor_i, pi.has, pj.has)
    n_cand = torch.where(anchor_i, pi.n_cand, pj.n_cand)
    global_info = global_info | (n_cand > 1)
    e = edge_index.shape[1]
    is_canon = torch.zeros(e, dtype=torch.bool, device=canon.device)
    is_canon[canon] = True
    forward = is_canon == anchor_i[pair_of]
    out = PairFrames(canon, pair_of, forward, anchor, other, v1, R, global_info, deg | ~has)
    if candidates:
        t_ids = torch.nonzero(global_info).flatten()
        parts = []
        for side, a, o, sign, own in ((pi, i, j, 1.0, anchor_i), (pj, j, i, -1.0, ~anchor_i)):
            rows, col = torch.nonzero(side.cand[t_ids] & side.has[t_ids, None], as_tuple=True)
            p = t_ids[rows]
            parts.append((p, a[p], o[p], sign * r[p], table.vec[a[p], col], own[p]))
        cat = [torch.cat(x) for x in zip(*parts)]
        out.cand = _candidates(*cat, canon.numel())
    return out
