"""Patch groups of the LE-MMSE (`course/05_closed_form.md`, `eq-le-general`, `eq-whitened`): the
pixel locations that share one patch likelihood under the pre-inverse ``B``, each with its
whitening ``v ↦ Q_m⁺ v``, rank and log-determinant, and the stratum rule that picks, per query,
the feasible groups of smallest rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .estimator_inputs import RANGE_TOL, dense_operator
from .operators import RANK_TOL, Denoising, DenseOperator, Diagonal, FourierMultiplier
from .patches import extract_patches, support_features

__all__ = ["DenseGroup", "DiagonalGroup", "IdentityGroup", "PatchGroup", "WhitenedGroup", "patch_groups", "stratum"]


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
