"""The three estimators of the course: MMSE, equivariant MMSE and local-equivariant MMSE.

All three minimise ``E‖φ(B y) − x‖²`` over a class of functions under the empirical prior of a
training set (THEORY.md §2–§4) and all three are softmax averages computed by the one streaming
engine of :mod:`lemmse_lite.engine`:

* :func:`mmse`              — keys: whole training measurements; values: training images (§2);
* :func:`equivariant_mmse`  — keys: training measurements against every shift of the query; values:
  the shifted training images (§3);
* :func:`le_mmse`           — keys: patches of training measurements; values: their centre pixels (§4).

Conventions: ``y`` is the *raw* measurement ``A x + e`` of shape (B, C, H, W); the estimators apply
the pre-inverse ``B`` themselves (``B=None``: physics-agnostic). ``train`` is a tensor (N, C, H, W)
or an iterable of such tensors, streamed chunk by chunk to ``y``'s device (the only data moved).
``sigma`` is a float or a (B,) tensor. LE-MMSE computes in float32 (float64 if ``y`` is float64);
MMSE and E-MMSE score whole images in float64 (their distances cancel badly in float32 and they
are cheap) and return ``y``'s dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch

from .engine import SoftmaxState, augment_keys, augment_queries, stream_scores
from .operators import RANK_TOL, DenseOperator, Operator, as_operator, check_images
from .patches import centre_pixels, check_patch_size, extract_patches

DENSE_LIMIT = 4096  # largest n = C·H·W for which a general (non-structured) B is made dense
DEFAULT_MAX_MEMORY = 256 * 2**20  # bytes of working memory for one chunk of training keys


# ----------------------------------------------------------------------------- inputs

def _check_sigma(sigma, batch: int, device, dtype) -> torch.Tensor:
    """float or (B,) tensor, all positive and finite -> (B,) tensor."""
    if isinstance(sigma, bool):
        raise TypeError("sigma must be a float or a tensor of shape (B,), got bool")
    if isinstance(sigma, (int, float)):
        sigma = torch.full((batch,), float(sigma), dtype=torch.float64)
    elif isinstance(sigma, torch.Tensor):
        if not sigma.is_floating_point():
            raise TypeError(f"sigma must be a float or a floating-point tensor of shape (B,), got dtype {sigma.dtype}")
        if sigma.dim() == 0:
            sigma = sigma.reshape(1).expand(batch)
        elif sigma.shape != (batch,):
            raise ValueError(f"sigma must be a float or a tensor of shape ({batch},), got shape {tuple(sigma.shape)}")
    else:
        raise TypeError(f"sigma must be a float or a tensor of shape (B,), got {type(sigma).__name__}")
    sigma = sigma.to(device=device, dtype=dtype)
    if not torch.isfinite(sigma).all() or (sigma <= 0).any():
        raise ValueError(f"sigma must be positive and finite, got {sigma.tolist()}")
    return sigma


def _check_chunk(chunk, shape, name="train") -> torch.Tensor:
    if not isinstance(chunk, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (N, C, H, W) or an iterable of such tensors, "
                        f"got an element of type {type(chunk).__name__}")
    if chunk.dim() != 4:
        raise ValueError(f"{name} must have 4 dimensions (N, C, H, W), got shape {tuple(chunk.shape)}")
    if not chunk.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {chunk.dtype}")
    if tuple(chunk.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} images have shape {tuple(chunk.shape[1:])} but the measurements y "
                         f"have shape {tuple(shape)} (channels, height, width must match)")
    return chunk


def training_chunks(train, shape, chunk_size: int, device, dtype) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(index of first image, chunk)`` with chunks of at most ``chunk_size`` images, moved
    to ``device``/``dtype``. Raises if ``train`` is empty."""
    if isinstance(train, torch.Tensor):
        if train.dim() != 4:
            raise ValueError(f"train must have 4 dimensions (N, C, H, W), got shape {tuple(train.shape)}")
        source: Iterable = (train,)
    elif isinstance(train, Iterable) and not isinstance(train, (str, bytes)):
        source = train
    else:
        raise TypeError(f"train must be a tensor (N, C, H, W) or an iterable of such tensors, got {type(train).__name__}")
    start = 0
    for part in source:
        _check_chunk(part, shape)
        for c0 in range(0, len(part), chunk_size):
            chunk = part[c0 : c0 + chunk_size]
            # finiteness per chunk: a whole-tensor check would allocate ~2x the training set
            if not torch.isfinite(chunk).all():
                raise ValueError(f"train contains NaN or Inf values (images {start}..{start + len(chunk) - 1})")
            yield start, chunk.to(device=device, dtype=dtype)
            start += len(chunk)
    if start == 0:
        raise ValueError("train is empty: expected at least one training image")


def _is_reiterable(train) -> bool:
    return isinstance(train, torch.Tensor) or iter(train) is not train


def _default_chunk(n_pixels: int, key_dim: int, max_memory: int) -> int:
    per_image = n_pixels * (key_dim + 2) * 4 * 4  # patches, transformed, augmented, values
    return max(1, max_memory // per_image)


def _check_chunk_size(chunk_size):
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0):
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")


def _setup(y, sigma, A, B):
    y = check_images(y, "y")
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    A = as_operator(A, "A")
    B = None if B is None else as_operator(B, "B")
    if B is not None and B.kind == "identity":
        B = None
    for op, name in ((A, "A"), (B, "B")):
        if op is not None:  # one cheap application names the operator in any shape error
            try:
                op(y[:1])
            except ValueError as err:
                raise ValueError(f"{name} does not fit the measurements y: {err}") from None
    sig = _check_sigma(sigma, y.shape[0], y.device, dtype)
    return y.to(dtype), dtype, A, B, sig


def _dense(B: Operator, shape) -> DenseOperator:
    n = math.prod(shape)
    if n > DENSE_LIMIT:
        raise ValueError(
            f"B of kind '{B.kind}' needs the dense explicit-matrix path, which is limited to images with "
            f"C·H·W ≤ {DENSE_LIMIT} (got {n}); use a diagonal (mask) or Fourier (equivariant) pre-inverse"
        )
    M = B.matrix(shape)
    if not torch.isfinite(M).all():
        raise ValueError("B produced non-finite values")
    probe = torch.randn(2, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    lhs = B(probe[:1] + 2.0 * probe[1:])
    rhs = B(probe[:1]) + 2.0 * B(probe[1:])
    if not torch.allclose(lhs.double(), rhs.double(), rtol=1e-4, atol=1e-6):
        raise ValueError("B must be linear: B(u + 2v) differs from B(u) + 2 B(v)")
    return DenseOperator(M, shape)


# ----------------------------------------------------------------------------- MMSE and E-MMSE

def _shift_index(h: int, w: int, device) -> torch.Tensor:
    """(H·W, H·W) long: row g holds, for each pixel n, the flat index of ``n − g`` (so that
    ``(T_g u)[n] = u[idx[g, n]]``)."""
    i = torch.arange(h, device=device)
    j = torch.arange(w, device=device)
    gi, gj = i.repeat_interleave(w), j.repeat(h)  # g in flat order
    rows = (i[None, :, None] - gi[:, None, None]) % h  # (G, H, 1)
    cols = (j[None, None, :] - gj[:, None, None]) % w  # (G, 1, W)
    return (rows * w + cols).reshape(h * w, h * w)


def _feasible_images(u: torch.Tensor, B: Operator | None, Bd: DenseOperator | None) -> torch.Tensor:
    """(Q, C, H, W) candidates -> (Q,) bool: ``u ∈ range(B)`` (THEORY.md §3, §4.2 tolerance)."""
    if B is None or B.kind == "fourier":
        return torch.ones(len(u), dtype=torch.bool, device=u.device)
    if B.kind == "diagonal":  # exact zeros: the support of u must lie in the support of b
        b = B.diagonal(u.shape[1:]).to(u.device)
        return ~((u != 0) & (b == 0)).flatten(1).any(1)
    P = Bd.M @ Bd.pinv().M  # projector on range(B)
    flat = u.reshape(len(u), -1).double()
    resid = flat - flat @ P.T.to(flat.device)
    return resid.norm(dim=1) <= 1e-6 * flat.norm(dim=1)


def _image_estimator(y, train, sigma, A, B, use_shifts: bool, chunk_size):
    """Shared body of :func:`mmse` (``use_shifts=False``) and :func:`equivariant_mmse`.

    With ``z = B y`` and ``W = B⁺`` the log-weight of pair (i, g) is
    ``−‖W T_g⁻¹ z − W B A x_i‖² / (2σ²)`` over feasible g (THEORY.md §2–§3; ``‖B⁺u‖² = uᵀ(BBᵀ)⁺u``).
    Queries are the (measurement, shift) pairs, values the training images; the per-shift
    softmaxes are merged at the end, each numerator shifted back by ``T_g``."""
    _check_chunk_size(chunk_size)
    y, dtype, A, B, sig = _setup(y, sigma, A, B)
    bsz, c, h, w = y.shape
    n = c * h * w
    Bd = _dense(B, (c, h, w)) if B is not None and B.kind == "general" else None
    Bop = Bd if Bd is not None else B
    W = None if Bop is None else Bop.pinv()
    z = y if Bop is None else Bop(y)

    g_count = h * w if use_shifts else 1
    idx = _shift_index(h, w, y.device)  # (T_g u)[n] = u[idx[g, n]]
    g = torch.arange(g_count, device=y.device)
    minus_g = ((-(g // w)) % h) * w + (-(g % w)) % w
    # queries T_g⁻¹ z for every (measurement, shift): (T_g⁻¹ u)[n] = u[idx[−g, n]]
    zs = z.flatten(2)[:, :, idx[minus_g]].permute(0, 2, 1, 3).reshape(bsz * g_count, c, h, w)
    idx = idx[:g_count]
    feasible = _feasible_images(zs, B if Bd is None else Bd, Bd)
    q = zs if W is None else W(zs)
    # Whole-image distances cancel badly in float32 (norms of hundreds with an ε-mask, where B⁺
    # scales the holes by 1/ε), and these estimators are cheap next to LE-MMSE: score in float64.
    work = torch.float64
    q = q.reshape(bsz * g_count, n).to(work)
    inv_var = (1.0 / sig.to(work) ** 2).repeat_interleave(g_count)
    rows = torch.nonzero(feasible).squeeze(1)

    if chunk_size is None:
        chunk_size = max(1, DEFAULT_MAX_MEMORY // (n * 4 * 4))
    state = SoftmaxState(bsz * g_count, n, y.device, work)
    q_aug = centre = None
    for _, chunk in training_chunks(train, (c, h, w), chunk_size, y.device, dtype):
        meas = A(chunk) if Bop is None else Bop(A(chunk))
        keys = (meas if W is None else W(meas)).reshape(len(chunk), n).to(work)
        if q_aug is None:
            # centre on the first training key: the queries that matter lie near the keys, while
            # the query mean can sit far away (ε-mask: misaligned shifts carry z/ε); fixed by the
            # first image alone, so the rounding does not depend on the chunking
            centre = keys[0].clone()
            qc = q[rows] - centre
            q_aug = augment_queries(qc, inv_var[rows], -0.5 * (qc * qc).sum(1) * inv_var[rows])
        stream_scores(state, rows, q_aug, augment_keys(keys - centre), chunk.reshape(len(chunk), n).to(work))

    # merge the per-shift softmaxes: weight of shift g ∝ exp(m_g) d_g
    log_mass = (state.m + torch.log(state.d)).reshape(bsz, g_count)
    log_mass = torch.where(feasible.reshape(bsz, g_count), log_mass, torch.full_like(log_mass, float("-inf")))
    if torch.isneginf(log_mass.amax(1)).any():
        raise ValueError("no shift of the measurement is feasible (in the range of B)")
    pi = torch.softmax(log_mass, dim=1)  # (B, G)
    means = (state.num / state.d.clamp_min(torch.finfo(work).tiny)[:, None]).reshape(bsz, g_count, c, h * w)
    means = torch.nan_to_num(means)
    # T_g applied to each mean: (T_g u)[n] = u[n − g] = u[idx[g, n]]
    shifted = torch.gather(means, 3, idx[None, :, None, :].expand(bsz, g_count, c, h * w))
    out = (pi[:, :, None, None] * shifted).sum(1)
    return out.reshape(bsz, c, h, w).to(dtype)


def mmse(y, train, sigma, A=None, B=None, chunk_size=None) -> torch.Tensor:
    """Ideal MMSE under the empirical prior (THEORY.md §2): ``Σ_i w_i x_i`` with
    ``w = softmax_i(−‖B⁺(B y − B A x_i)‖² / 2σ²)`` (``B=None``: ``−‖y − A x_i‖²/2σ²``).

    y: (B, C, H, W) raw measurements; train: (N, C, H, W) or iterable; returns (B, C, H, W)."""
    return _image_estimator(y, train, sigma, A, B, False, chunk_size)


def equivariant_mmse(y, train, sigma, A=None, B=None, chunk_size=None) -> torch.Tensor:
    """Equivariant MMSE (THEORY.md §3): ``Σ_{i,g} w_{i,g} T_g x_i`` with
    ``w = softmax_{i,g}(−‖B⁺(T_g⁻¹ B y − B A x_i)‖² / 2σ²)`` over shifts g with ``T_g⁻¹ B y ∈ range(B)``.

    y: (B, C, H, W); train: (N, C, H, W) or iterable; returns (B, C, H, W)."""
    return _image_estimator(y, train, sigma, A, B, True, chunk_size)


# ----------------------------------------------------------------------------- LE-MMSE: patch groups

@dataclass
class PatchGroup:
    """Locations ``m`` sharing one patch likelihood (THEORY.md §4.2): whitening ``L`` (r, D) with
    ``‖Q_m⁺ u‖ = ‖L u‖`` on range(Q_m) (``None`` = identity), rank r and ``Σ log s_j(Q_m)``."""

    locations: torch.Tensor  # (L,) flat pixel indices
    rank: int
    logdet: float  # Σ_j log s_j(Q_m) = ½ log pdet(Q_m Q_mᵀ)
    L: torch.Tensor | None = None  # (r, D) dense whitening, or None
    select: torch.Tensor | None = None  # (r,) feature indices (diagonal B), with scale below
    scale: torch.Tensor | None = None  # (r,) 1 / b on the support
    basis: torch.Tensor | None = None  # (D, r) orthonormal basis of range(Q_m), for feasibility

    def whiten(self, v: torch.Tensor) -> torch.Tensor:
        """(…, D) -> (…, r)."""
        if self.select is not None:
            return v[..., self.select] * self.scale
        if self.L is not None:
            return (v.to(self.L.dtype) @ self.L.T).to(v.dtype)
        return v


def _groups_identity(h, w, d, device):
    return [PatchGroup(torch.arange(h * w, device=device), d, 0.0)]


def _groups_fourier(B, c, h, w, P, device, dtype):
    S = B.patch_covariance(h, w, P)  # (P², P²) float64, one channel
    lam, U = torch.linalg.eigh(S)
    keep = lam > (RANK_TOL**2) * lam.max()  # s_j = sqrt(λ_j) > 1e-6 s_max
    L1 = (U[:, keep] / lam[keep].sqrt()).T  # (r1, P²)
    L = torch.block_diag(*([L1] * c))  # channels are independent: I_C ⊗ L1
    logdet = c * 0.5 * torch.log(lam[keep]).sum().item()
    return [PatchGroup(torch.arange(h * w, device=device), L.shape[0], logdet, L=L.to(device, torch.float64))]


def _groups_diagonal(B, c, h, w, P, device, dtype):
    b = B.diagonal((c, h, w)).to(device=device, dtype=torch.float64)
    bp = extract_patches(b[None], P)[0]  # (H·W, D): b over the patch at every location
    patterns, inverse = torch.unique(bp, dim=0, return_inverse=True)
    groups = []
    for p, row in enumerate(patterns):
        support = torch.nonzero(row != 0).squeeze(1)
        groups.append(PatchGroup(
            torch.nonzero(inverse == p).squeeze(1), len(support),
            torch.log(row[support].abs()).sum().item(),
            select=support, scale=(1.0 / row[support]).to(dtype),
        ))
    return groups


def _groups_dense(Bd, c, h, w, P, device, dtype):
    """One group per location: SVD of ``Q_m = Π_m B`` (D × n) on small images."""
    index = extract_patches(torch.arange(c * h * w, dtype=torch.float64).reshape(1, c, h, w), P)[0].long()
    groups = []
    for m in range(h * w):
        U, s, _ = torch.linalg.svd(Bd.M[index[m]], full_matrices=False)
        keep = s > RANK_TOL * s.max() if s.max() > 0 else torch.zeros_like(s, dtype=torch.bool)
        Ur, sr = U[:, keep], s[keep]
        groups.append(PatchGroup(
            torch.tensor([m], device=device), int(keep.sum()), torch.log(sr).sum().item(),
            L=(Ur / sr).T.to(device, torch.float64), basis=Ur.to(device, dtype),
        ))
    return groups


def patch_groups(B, shape, patch_size, device, dtype=torch.float32) -> list[PatchGroup]:
    """Group pixel locations by patch likelihood for pre-inverse ``B`` (THEORY.md §4.2):
    identity/equivariant ``B`` → one group and one whitening; diagonal ``B`` → one group per
    pattern of ``b`` in the patch; any other ``B`` → a dense SVD per location (small images)."""
    c, h, w = shape
    if B is None:
        return _groups_identity(h, w, c * patch_size**2, device)
    if B.kind == "fourier":
        return _groups_fourier(B, c, h, w, patch_size, device, dtype)
    if B.kind == "diagonal":
        return _groups_diagonal(B, c, h, w, patch_size, device, dtype)
    return _groups_dense(B if isinstance(B, DenseOperator) else _dense(B, shape), c, h, w, patch_size, device, dtype)


def _stratum(groups: list[PatchGroup], v: torch.Tensor) -> torch.Tensor:
    """(Q, D) query patches -> (Q, G) bool: the feasible groups of smallest rank per query
    (THEORY.md §4.2 steps 1–2). A query with no feasible group (round-off) keeps every group of
    smallest rank."""
    feas = torch.ones(len(v), len(groups), dtype=torch.bool, device=v.device)
    for p, g in enumerate(groups):
        if g.select is not None:
            outside = torch.ones(v.shape[1], dtype=torch.bool, device=v.device)
            outside[g.select] = False
            feas[:, p] = ~((v != 0) & outside).any(1)
        elif g.basis is not None:
            resid = v - (v @ g.basis) @ g.basis.T
            feas[:, p] = resid.norm(dim=1) <= 1e-6 * v.norm(dim=1)
    none = ~feas.any(1)
    feas[none] = True
    ranks = torch.tensor([g.rank for g in groups], device=v.device)
    big = torch.iinfo(ranks.dtype).max
    min_rank = torch.where(feas, ranks[None], torch.full_like(ranks[None], big)).amin(1)
    return feas & (ranks[None] == min_rank[:, None])


# ----------------------------------------------------------------------------- LE-MMSE

@dataclass
class Diagnostics:
    """THEORY.md §6 diagnostics of one :func:`le_mmse` call; per-pixel maps have shape (B, H, W).

    ``log_density``: log of the patch-mixture density at the query, nats (kept pairs only);
    ``source_image``/``source_location``: training image and flat location of the largest weight;
    ``top_weights``/``top_images``/``top_locations``: (B, H, W, k) for the k largest weights;
    ``rank``: rank of the kept stratum. :meth:`effective_patches` runs a second pass."""

    log_density: torch.Tensor
    source_image: torch.Tensor
    source_location: torch.Tensor
    top_weights: torch.Tensor
    top_images: torch.Tensor
    top_locations: torch.Tensor
    rank: torch.Tensor
    n_train: int
    _second_pass: Callable | None = field(default=None, repr=False)

    def effective_patches(self, tau: float = 0.99) -> torch.Tensor:
        """``N_eff(τ)`` per output pixel (B, H, W): the fewest (i, m) whose largest weights sum to at
        least ``τ − 1e-6``; ``τ = 1``: the number of non-zero weights (THEORY.md §6)."""
        if not isinstance(tau, (int, float)) or not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {tau!r}")
        if self._second_pass is None:
            raise ValueError("effective_patches needs a re-iterable training set (a tensor or a list), "
                             "not a one-shot iterator")
        return self._second_pass(float(tau))


def _check_positive_int(value, name):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_return_diagnostics(flag):
    if not isinstance(flag, bool):
        raise TypeError(f"return_diagnostics must be a bool, got {type(flag).__name__}")


def le_mmse(y, train, sigma, patch_size, A=None, B=None, chunk_size=None, return_diagnostics=False,
            top_k: int = 4, max_memory: int = DEFAULT_MAX_MEMORY):
    """Local-equivariant MMSE (THEORY.md §4): the optimum over translation-equivariant functions
    whose output pixel n depends only on the patch ``Π_n B y``::

        x̂(y)[n] = Σ_{i,m} w_{i,m} x_i[m],
        log w_{i,m} = −‖Q_m⁺(v − Q_m A x_i)‖² / 2σ² − Σ_j log s_j(Q_m) + const,   v = Π_n B y,

    over the feasible locations m of smallest rank (``Q_m = Π_m B``). With ``B=None`` this is the
    Euclidean softmax of §4.1 over noiseless training-measurement patches.

    Args:
        y: (B, C, H, W) raw measurements ``A x + e``.
        train: (N, C, H, W) tensor or an iterable of such tensors (streamed).
        sigma: float or (B,) tensor, noise standard deviation.
        patch_size: odd P ≤ min(H, W), the receptive field.
        A, B: forward operator and pre-inverse (``None``: identity).
        chunk_size: training images per streamed chunk (default from ``max_memory`` bytes).
        return_diagnostics: also return a :class:`Diagnostics`.
        top_k: number of largest weights kept in the diagnostics.
    Returns:
        (B, C, H, W) estimate, or ``(estimate, Diagnostics)``.
    """
    _check_chunk_size(chunk_size)
    _check_return_diagnostics(return_diagnostics)
    _check_positive_int(top_k, "top_k")
    _check_positive_int(max_memory, "max_memory")
    y, dtype, A, B, sig = _setup(y, sigma, A, B)
    bsz, c, h, w = y.shape
    check_patch_size(patch_size, h, w)
    d = c * patch_size**2
    if chunk_size is None:
        chunk_size = _default_chunk(h * w, d, max_memory)

    groups = patch_groups(B, (c, h, w), patch_size, y.device, dtype)
    # A dense whitening (equivariant or general B) can amplify float32 rounding of B y by
    # 1/s_min (e.g. B = Aᵀ of a blur): apply B and whiten in float64, then score in float32.
    precise = any(g.L is not None for g in groups)
    if precise:
        y = y.double()
    z = y if B is None else B(y)
    v = extract_patches(z, patch_size).reshape(bsz * h * w, d)
    stratum = _stratum(groups, v)
    inv_var = (1.0 / sig**2).repeat_interleave(h * w)  # (Q,)
    log_2pi_var = torch.log(2 * math.pi * sig**2).repeat_interleave(h * w)

    group_of = torch.empty(h * w, dtype=torch.long, device=y.device)
    for p, g in enumerate(groups):
        group_of[g.locations] = p
    plans = []  # per group: (rows, q_aug, centre) or None
    for p, g in enumerate(groups):
        rows = torch.nonzero(stratum[:, p]).squeeze(1)
        if len(rows) == 0:
            plans.append(None)
            continue
        q = g.whiten(v[rows]).to(dtype)
        # Centre on the queries located in the group itself: they are the ones near the group's
        # keys, so both sides keep small norms and ‖q‖² + ‖k‖² − 2 q·k keeps float32 accuracy.
        # (All rows would be pulled away by far, irrelevant queries, e.g. with the ε-mask where
        # every query visits every group.)
        own = group_of[rows % (h * w)] == p
        centre = (q[own] if own.any() else q).mean(0)
        q = q - centre
        offset = -0.5 * (q * q).sum(1) * inv_var[rows] - g.logdet - 0.5 * g.rank * log_2pi_var[rows]
        rows = slice(0, len(v)) if len(rows) == len(v) else rows
        plans.append((rows, augment_queries(q, inv_var[rows], offset), centre))

    def run(consumer):
        n_seen = 0
        for start, chunk in training_chunks(train, (c, h, w), chunk_size, y.device, dtype):
            meas = A(chunk) if B is None else B(A(chunk.double() if precise else chunk))
            keys_all = extract_patches(meas, patch_size)  # (Nc, H·W, D)
            values_all = centre_pixels(chunk)  # (Nc, H·W, C)
            image_ids = torch.arange(start, start + len(chunk), device=y.device)
            for g, plan in zip(groups, plans):
                if plan is None:
                    continue
                rows, q_aug, centre = plan
                k = g.whiten(keys_all[:, g.locations]).reshape(len(chunk) * len(g.locations), g.rank).to(dtype)
                vals = values_all[:, g.locations].reshape(-1, c)
                ids = (image_ids[:, None] * (h * w) + g.locations[None]).reshape(-1)
                stream_scores(consumer, rows, q_aug, augment_keys(k - centre), vals, ids)
            n_seen = start + len(chunk)
        return n_seen

    state = SoftmaxState(len(v), c, y.device, dtype, top_k=top_k if return_diagnostics else 0)
    n_train = run(state)
    out = state.result().reshape(bsz, h, w, c).permute(0, 3, 1, 2).contiguous()
    if not return_diagnostics:
        return out

    log_norm = state.log_normaliser()
    ranks = torch.tensor([g.rank for g in groups], device=y.device)
    kept_rank = torch.where(stratum, ranks[None], torch.zeros_like(ranks[None])).amax(1)
    top_w = torch.exp(state.top_scores - log_norm[:, None])
    ids = state.top_ids
    shape = (bsz, h, w)
    second = None
    if _is_reiterable(train):
        from .metrics import effective_patches_pass

        def second(tau):
            return effective_patches_pass(run, log_norm, state.top_scores[:, 0], tau, dtype).reshape(shape)

    return out, Diagnostics(
        log_density=(log_norm - math.log(n_train * h * w)).reshape(shape),
        source_image=(ids[:, 0] // (h * w)).reshape(shape),
        source_location=(ids[:, 0] % (h * w)).reshape(shape),
        top_weights=top_w.reshape(*shape, -1),
        top_images=torch.where(ids >= 0, ids // (h * w), -1).reshape(*shape, -1),
        top_locations=torch.where(ids >= 0, ids % (h * w), -1).reshape(*shape, -1),
        rank=kept_rank.reshape(shape),
        n_train=n_train,
        _second_pass=second,
    )
