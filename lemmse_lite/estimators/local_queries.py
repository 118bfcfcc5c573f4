"""The query side of the LE-MMSE (`course/05_closed_form.md`, `eq-le-general`, `eq-whitened`;
`course/07_networks_vs_theory.md`, `eq-sublattice`), everything
:func:`~lemmse_lite.estimators.local_estimators.le_mmse` prepares before it streams the training set:

* the classes of output pixels of the sub-lattice form (:func:`pixel_classes`);
* the **patch groups**: the locations that share one patch likelihood under the pre-inverse ``B``,
  each with its whitening ``v ↦ Q_m⁺ v``, rank and log-determinant (:func:`patch_groups`), and
  the stratum rule that keeps, per query, the feasible groups of smallest rank (:func:`stratum`);
* one :class:`QueryPlan` per group: the whitened, centred, augmented queries and their log-weight
  offsets (:func:`plan_queries`), all of them gathered by :func:`plan_local_queries`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_positive_int
from ..operators import RANK_TOL, Denoising, DenseOperator, Diagonal, FourierMultiplier
from .diagnostics import log_density_constant
from .engine import augment_queries
from .estimator_inputs import RANGE_TOL, dense_operator
from .patches import _check_class_key, extract_patches, support_features

__all__ = ["DenseGroup", "DiagonalGroup", "IdentityGroup", "LocalQueries", "PatchGroup", "QueryPlan",
           "WhitenedGroup", "centre_on_own_queries", "log_weight_offset", "patch_groups", "pixel_classes",
           "plan_local_queries", "plan_queries", "stratum"]


# ----------------------------------------------------------------------------- patch groups

@dataclass
class PatchGroup:
    """Locations ``m`` sharing one patch likelihood (`course/05_closed_form.md`, `eq-le-general`):
    with ``Q_m = Π^R_m B`` (the patch at m, restricted to the window features ``features``; ``None``
    = all ``D = C·P²``), ``whiten(v)`` gives ``‖Q_m⁺(v − μ)‖ = ‖whiten(v) − whiten(μ)‖`` on
    range(Q_m), ``rank = r`` and ``logdet = Σ_j log s_j(Q_m) = ½ log pdet(Q_m Q_mᵀ)``.
    ``feasible(v)``: (Q, D) -> (Q,) bool, ``v ∈ range(Q_m)``. Subclasses: the four §4.2 cases."""

    locations: torch.Tensor  # (L,) flat pixel indices
    rank: int
    logdet: float
    features: torch.Tensor | None  # (D_R,) window feature indices, None = the full patch

    def restrict(self, v: torch.Tensor) -> torch.Tensor:
        """(…, D) -> (…, D_R): the features of the window ``R``."""
        return v if self.features is None else v[..., self.features]

    def whiten(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def feasible(self, v: torch.Tensor) -> torch.Tensor:
        """Default: every query is feasible."""
        return torch.ones(len(v), dtype=torch.bool, device=v.device)


@dataclass
class IdentityGroup(PatchGroup):
    """``B = I`` (`eq-lemmse`): ``Q_m Q_mᵀ = I``, Euclidean distance on the window features, rank
    ``D_R``, ``logdet = 0``; every location is feasible."""

    def whiten(self, v):
        return self.restrict(v)


@dataclass
class DiagonalGroup(PatchGroup):
    """``B = diag(b)`` (masks, the ε-mask): the locations whose patch of ``b`` (in the window) has one
    pattern. ``support``: (r,) feature indices where ``b ≠ 0``, ``scale = 1/b`` there; the distance
    runs over the support, each difference divided by ``b``; ``logdet = Σ log|b|`` over the support.
    Feasible: ``v`` is exactly zero on the window features outside the support (masks have exact
    zeros, no tolerance). ``outside``: (D,) bool, window features not in the support."""

    support: torch.Tensor = None
    scale: torch.Tensor = None
    outside: torch.Tensor = None

    def whiten(self, v):
        return v[..., self.support] * self.scale.to(v.dtype)

    def feasible(self, v):
        return ~((v != 0) & self.outside).any(1)


@dataclass
class WhitenedGroup(PatchGroup):
    """Translation-equivariant ``B`` (identity-like, blur, Tikhonov): ``S = Π^R B Bᵀ Π^Rᵀ`` is the same
    for every m; ``L = Λ_+^{−½} Uᵀ`` (r, D_R) from its eigenvalues above the RANK_TOL cut-off, so
    ``‖Q⁺u‖ = ‖L u‖`` (`eq-whitened`). One group: every location of the class, always feasible
    (the query ``Π^R_n B y`` lies in ``range(Π^R_n B)`` exactly)."""

    L: torch.Tensor = None

    def whiten(self, v):
        return (self.restrict(v).to(self.L.dtype) @ self.L.T).to(v.dtype)


@dataclass
class DenseGroup(PatchGroup):
    """Any other ``B`` (small images): one location, the SVD ``Q_m = U S Vᵀ`` of the explicit matrix,
    ``L = S_r⁻¹ U_rᵀ`` (r, D_R); feasible when ``‖U_r U_rᵀ v − v‖ ≤ RANGE_TOL·‖v‖``."""

    L: torch.Tensor = None
    basis: torch.Tensor = None  # (D_R, r) orthonormal basis of range(Q_m)

    def whiten(self, v):
        return (self.restrict(v).to(self.L.dtype) @ self.L.T).to(v.dtype)

    def feasible(self, v):
        vr = self.restrict(v).to(self.basis.dtype)
        resid = vr - (vr @ self.basis) @ self.basis.T
        return resid.norm(dim=1) <= RANGE_TOL * vr.norm(dim=1)


def _groups_whitened(B, c, h, w, P, support, locations, features):
    S = B.patch_covariance(h, w, P)  # (P², P²) float64, one channel
    if support is not None:
        spatial = torch.nonzero(support.reshape(-1)).squeeze(1)
        S = S[spatial][:, spatial]
    lam, U = torch.linalg.eigh(S)
    keep = lam > (RANK_TOL**2) * lam.max()  # s_j = sqrt(λ_j) > RANK_TOL s_max
    L1 = (U[:, keep] / lam[keep].sqrt()).T  # (r1, P²)
    L = torch.block_diag(*([L1] * c))  # channels are independent: I_C ⊗ L1
    logdet = c * 0.5 * torch.log(lam[keep]).sum().item()
    return [WhitenedGroup(locations, L.shape[0], logdet, features, L=L.to(locations.device, torch.float64))]


def _groups_diagonal(B, c, h, w, P, locations, features, dtype):
    d = c * P * P
    b = B.diagonal((c, h, w)).to(device=locations.device, dtype=torch.float64)
    bp = extract_patches(b[None], P)[0][locations]  # (L, D): b over the patch at every location
    window = torch.zeros(d, dtype=torch.bool, device=locations.device)
    window[features if features is not None else slice(None)] = True
    bp = torch.where(window, bp, torch.zeros_like(bp))  # outside the window b plays no part
    patterns, inverse = torch.unique(bp, dim=0, return_inverse=True)
    groups = []
    for p, row in enumerate(patterns):
        support = torch.nonzero(row != 0).squeeze(1)
        groups.append(DiagonalGroup(
            locations[inverse == p], len(support), torch.log(row[support].abs()).sum().item(), features,
            support=support, scale=(1.0 / row[support]).to(dtype), outside=window & (row == 0),
        ))
    return groups


def _groups_dense(Bd, c, h, w, P, locations, features, dtype):
    index = extract_patches(torch.arange(c * h * w, dtype=torch.float64).reshape(1, c, h, w), P)[0].long()
    groups = []
    for m in locations.tolist():
        rows = index[m] if features is None else index[m][features.cpu()]
        U, s, _ = torch.linalg.svd(Bd.M[rows], full_matrices=False)
        keep = s > RANK_TOL * s.max() if s.max() > 0 else torch.zeros_like(s, dtype=torch.bool)
        Ur, sr = U[:, keep], s[keep]
        groups.append(DenseGroup(
            torch.tensor([m], device=locations.device), int(keep.sum()), torch.log(sr).sum().item(), features,
            L=(Ur / sr).T.to(locations.device, torch.float64), basis=Ur.to(locations.device, torch.float64),
        ))
    return groups


def patch_groups(B, shape, patch_size, device, dtype=torch.float32, support: torch.Tensor | None = None,
                 locations: torch.Tensor | None = None) -> list[PatchGroup]:
    """Group the pixel ``locations`` (default all) by patch likelihood for pre-inverse ``B``
    (`eq-le-general`), on the window ``support`` (P, P) bool (default the full patch):
    identity → one :class:`IdentityGroup`; equivariant ``B`` → one :class:`WhitenedGroup`;
    diagonal ``B`` → one :class:`DiagonalGroup` per pattern of ``b`` in the window; any other ``B``
    → one :class:`DenseGroup` per location (small images)."""
    c, h, w = shape
    if locations is None:
        locations = torch.arange(h * w, device=device)
    features = None if support is None else support_features(support, c).to(device)
    if B is None or isinstance(B, Denoising):
        rank = c * patch_size**2 if features is None else len(features)
        return [IdentityGroup(locations, rank, 0.0, features)]
    if isinstance(B, FourierMultiplier):
        return _groups_whitened(B, c, h, w, patch_size, support, locations, features)
    if isinstance(B, Diagonal):
        return _groups_diagonal(B, c, h, w, patch_size, locations, features, dtype)
    Bd = B if isinstance(B, DenseOperator) else dense_operator(B, shape)
    return _groups_dense(Bd, c, h, w, patch_size, locations, features, dtype)


def stratum(groups: list[PatchGroup], v: torch.Tensor) -> torch.Tensor:
    """(Q, D) query patches -> (Q, G) bool: the feasible groups of smallest rank per query
    (`eq-le-general`, steps 1–2). A query with no feasible group (round-off) keeps every group of
    smallest rank."""
    feas = torch.stack([g.feasible(v) for g in groups], 1)
    feas[~feas.any(1)] = True
    ranks = torch.tensor([g.rank for g in groups], device=v.device)
    big = torch.iinfo(ranks.dtype).max
    min_rank = torch.where(feas, ranks[None], torch.full_like(ranks[None], big)).amin(1)
    return feas & (ranks[None] == min_rank[:, None])


# ----------------------------------------------------------------------------- the centring rule

def centre_on_own_queries(q: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """LE-MMSE centring of one patch group: (Q, r) whitened queries, (Q,) bool -> (r,) mean of the
    queries located in the group itself (all queries if none is).

    Scores are ``‖q‖² + ‖k‖² − 2 q·k`` in float32; subtracting one vector from both sides changes no
    distance but keeps both norms small. The queries of the group's own locations are the ones near
    its keys; all queries would be pulled away by far, irrelevant ones (the ε-mask, where every query
    visits every group)."""
    return (q[own] if own.any() else q).mean(0)


# ----------------------------------------------------------------------------- LE-MMSE: planning

def log_weight_offset(q: torch.Tensor, inv_var: torch.Tensor, group: PatchGroup) -> torch.Tensor:
    """The per-query part of the log-weight (`eq-le-general`, step 3) of the (centred, whitened)
    queries ``q`` (Q, r) in ``group``: ``−‖q‖²/(2σ²) − Σ_j log s_j(Q_m)``; with the per-key part
    ``(q·k − ‖k‖²/2)/σ²`` of the engine it makes ``−‖q − k‖²/(2σ²) − Σ_j log s_j``."""
    return -0.5 * (q * q).sum(1) * inv_var - group.logdet


def _score_dtype(group: PatchGroup, dtype) -> torch.dtype:
    """The dtype of the score dot products of ``group``: float64 for a dense whitening, else ``dtype``."""
    return torch.float64 if isinstance(group, (WhitenedGroup, DenseGroup)) else dtype


@dataclass
class QueryPlan:
    """One group's queries, ready for the engine: ``rows`` (slice or (q,) long) into the (B·H·W)
    query pixels, the augmented queries ``q_aug`` (q, r + 2) and the centre subtracted from both
    sides (:func:`centre_on_own_queries`)."""

    group: PatchGroup
    rows: torch.Tensor | slice
    q_aug: torch.Tensor
    centre: torch.Tensor


def plan_queries(groups, v, rows_all, sig_q, dtype, hw: int):
    """Plans of one class of output pixels: (Q_c, D) patches ``v`` at the query pixels ``rows_all``
    (Q_c,) with noise levels ``sig_q`` (Q_c,). Returns ``(plans, kept_rank (Q_c,))``.

    The offset holds the log-weight term (:func:`log_weight_offset`) and the log-density constant
    (:func:`lemmse_lite.estimators.diagnostics.log_density_constant`), equal over the kept stratum, so the
    engine's log-normaliser is the log-density up to ``log(N·L)``."""
    keep = stratum(groups, v)
    ranks = torch.tensor([g.rank for g in groups], device=v.device)
    kept_rank = torch.where(keep, ranks[None], torch.zeros_like(ranks[None])).amax(1)
    group_of = torch.full((hw,), -1, dtype=torch.long, device=v.device)
    for p, g in enumerate(groups):
        group_of[g.locations] = p
    inv_var = 1.0 / sig_q**2
    plans = []
    for p, g in enumerate(groups):
        local = torch.nonzero(keep[:, p]).squeeze(1)
        if len(local) == 0:
            continue
        # a dense whitening (`eq-whitened`) keeps float64 dot products: the float32 rounding of
        # (q·k − ‖k‖²/2)/σ² grows as ‖q − centre‖²/σ² (measured 2.5e-4 on MRI at σ = 0.01)
        q = g.whiten(v[local]).to(_score_dtype(g, dtype))
        centre = centre_on_own_queries(q, group_of[rows_all[local] % hw] == p)
        q = q - centre
        offset = log_weight_offset(q, inv_var[local], g) + log_density_constant(g.rank, sig_q[local])
        rows = rows_all[local]
        if int(rows[-1] - rows[0]) + 1 == len(rows):  # sorted and unique: contiguous, a slice view
            rows = slice(int(rows[0]), int(rows[-1]) + 1)
        plans.append(QueryPlan(g, rows, augment_queries(q, inv_var[local], offset), centre))
    return plans, kept_rank


# ----------------------------------------------------------------------------- LE-MMSE: sub-lattice classes

def pixel_classes(h: int, w: int, stride: int, supports: dict | None, patch_size: int, device):
    """The classes of output pixels (`eq-sublattice`): ``[(locations (L,), support (P, P) bool or
    None)]``, one per class ``(a, b) = (i mod s, j mod s)`` in absolute coordinates (s = stride);
    ``stride = 1`` without supports is the single class of `eq-lemmse`."""
    check_positive_int(stride, "stride")
    if h % stride or w % stride:
        raise ValueError(f"stride must divide the image height and width, got stride={stride} for {h}x{w} images")
    classes = [(a, b) for a in range(stride) for b in range(stride)]
    if supports is not None:
        _check_supports(supports, classes, stride, patch_size)
    flat = torch.arange(h * w, device=device)
    out = []
    for a, b in classes:
        locations = flat[((flat // w) % stride == a) & ((flat % w) % stride == b)]
        support = None if supports is None else supports[(a, b)].to(device).bool()
        out.append((locations, support))
    return out


def _check_supports(supports, classes, stride: int, patch_size: int):
    if not isinstance(supports, dict):
        raise TypeError(f"supports must be a dict {{(a, b): (P, P) bool tensor}} or None, got {type(supports).__name__}")
    for key in supports:
        _check_class_key(key, stride)
    missing = [k for k in classes if k not in supports]
    if missing:
        raise ValueError(f"supports must give a window for every class (a, b) with a, b < stride={stride}; "
                         f"missing {missing}")
    for key in classes:
        window = supports[key]
        if not isinstance(window, torch.Tensor) or tuple(window.shape) != (patch_size, patch_size):
            shape = tuple(window.shape) if isinstance(window, torch.Tensor) else type(window).__name__
            raise ValueError(f"supports[{key}] must be a ({patch_size}, {patch_size}) bool tensor, got {shape}")
        if window.dtype != torch.bool:
            raise TypeError(f"supports[{key}] must be a bool tensor, got dtype {window.dtype}")
        if not window.any():
            raise ValueError(f"supports[{key}] is empty: a window needs at least one pixel")


@dataclass
class LocalQueries:
    """Every query of one :func:`~lemmse_lite.estimators.local_estimators.le_mmse` call, planned:
    ``plans`` (one :class:`QueryPlan` per (class, group) with queries), ``kept_rank`` (B·H·W,) the
    rank of each query's kept stratum, ``n_locations`` (B·H·W,) the locations L its class averages over, and
    ``precise``: a dense whitening, so the keys' ``B`` is applied in float64 too."""

    plans: list
    kept_rank: torch.Tensor
    n_locations: torch.Tensor
    precise: bool


def plan_local_queries(y, B, sig, patch_size: int, stride: int, supports, dtype) -> LocalQueries:
    """The query side of the LE-MMSE (`eq-le-general`, `eq-sublattice`): the output pixels' classes
    (:func:`pixel_classes`), each class's patch groups (:func:`patch_groups`) and the plans of the
    query patches ``Π_n B y`` of every pixel n. y: (B, C, H, W) checked measurements in ``dtype``;
    sig: (B,) noise levels."""
    bsz, c, h, w = y.shape
    classes = pixel_classes(h, w, stride, supports, patch_size, y.device)
    groups = [patch_groups(B, (c, h, w), patch_size, y.device, dtype, sup, locs) for locs, sup in classes]
    # A dense whitening (equivariant or general B) can amplify float32 rounding of B y by
    # 1/s_min (e.g. B = Aᵀ of a blur): apply B and whiten in float64, then score in float32.
    precise = any(isinstance(g, (WhitenedGroup, DenseGroup)) for gs in groups for g in gs)
    yp = y.double() if precise else y
    v = extract_patches(yp if B is None else B(yp), patch_size).reshape(bsz * h * w, -1)
    sig_q = sig.repeat_interleave(h * w)  # (Q,)
    plans, kept_rank, n_locations = [], torch.zeros(len(v), dtype=torch.long, device=y.device), torch.zeros_like(sig_q)
    for (locs, _), gs in zip(classes, groups):
        rows = (torch.arange(bsz, device=y.device)[:, None] * (h * w) + locs[None]).reshape(-1)
        class_plans, kept_rank[rows] = plan_queries(gs, v[rows], rows, sig_q[rows], dtype, h * w)
        plans += class_plans
        n_locations[rows] = len(locs)
    return LocalQueries(plans, kept_rank, n_locations, precise)
