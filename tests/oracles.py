"""Float64 brute-force oracles for the estimators of the course (tests only).

A second, independent implementation of the definitions (course/01 eq-mmse, 03 eq-emmse,
04 eq-lemmse, 05 eq-le-general, 07 eq-sublattice, 08 eq-n-eff / eq-log-density) with explicit dense
matrices, in numpy float64. It deliberately shares no code with ``lemmse_lite``: every operator is
an explicit ``(n, n)`` matrix built by loops from the conventions of course/00_inverse_problems.md, every patch
extraction an explicit selection matrix ``Π_m``, and every pseudo-inverse, rank and determinant
comes from an SVD. It is slow and only meant for tiny images (8×8 to 16×16, N ≤ 6).

Conventions
-----------
* An image ``x`` has shape ``(C, H, W)`` and is flattened C-major, then H, then W
  (``x.reshape(-1)``): pixel ``(c, i, j)`` has flat index ``(c*H + i)*W + j``.
* A pixel *location* ``m`` is the flat spatial index ``m = i*W + j``.
* ``(T_g x)[c, i, j] = x[c, i - gi, j - gj]`` (circular), the ``torch.roll`` / ``np.roll``
  convention.
* ``Π_m`` has ``C*P*P`` rows in the order ``(c, di, dj)`` row-major with ``di, dj`` running over
  ``-P//2 .. P//2``; row ``(c, di, dj)`` selects pixel ``(c, (i+di) mod H, (j+dj) mod W)``.
* Every estimator takes the **raw** measurement ``y = A x + e`` (shape ``(C, H, W)``), a training
  set ``train`` of shape ``(N, C, H, W)``, dense ``A`` and ``B`` (``B=None`` means identity),
  and applies ``B`` itself.

Tolerances (course/05_closed_form.md, eq-le-general): a singular value counts when ``s_j > 1e-6 * s_max`` (this cut-off
also defines the pseudo-inverse), and ``v ∈ range(Q)`` when ``‖Q Q⁺ v − v‖ ≤ 1e-6 ‖v‖``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

RANK_RTOL = 1e-6  # singular value s_j counts when s_j > RANK_RTOL * s_max
RANGE_RTOL = 1e-6  # v in range(Q) when ||Q Q^+ v - v|| <= RANGE_RTOL * ||v||
NEFF_SLACK = 1e-6  # N_eff(tau): fewest weights summing to >= tau - NEFF_SLACK

__all__ = [
    "OracleDiagnostics",
    "adjoint_matrix",
    "apply",
    "as_f64",
    "blur_matrix",
    "center_box_mask_oracle",
    "eps_mask_matrix",
    "eps_mask_values",
    "flat_index",
    "identity_matrix",
    "mask_matrix",
    "mask_values",
    "n_eff_from_weights",
    "oracle_emmse",
    "oracle_le_mmse",
    "oracle_le_mmse_identity",
    "oracle_sublattice_le_mmse",
    "oracle_mmse",
    "patch_matrix",
    "pinv_matrix",
    "shift_matrix",
    "svd_pinv",
    "tikhonov_matrix",
]


# --------------------------------------------------------------------------------------------
# Single-threaded BLAS while an oracle runs: the matrices are tiny, and a multi-threaded
# OpenBLAS on a busy 2-core machine is tens of times slower. Restored afterwards; a no-op
# where the OpenBLAS library cannot be found.
# --------------------------------------------------------------------------------------------
def _find_openblas_threads():
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (
            ("scipy_openblas", "64_"),
            ("scipy_openblas", ""),
            ("openblas", "64_"),
            ("openblas", ""),
        ):
            get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype = ctypes.c_int
                put.argtypes = [ctypes.c_int]
                return get, put
    return None


_BLAS_THREADS = None
_PINV_CACHE: dict = {}


def _cached_pinv(B: np.ndarray) -> np.ndarray:
    key = (B.shape, hash(B.tobytes()))
    if key not in _PINV_CACHE:
        if len(_PINV_CACHE) > 8:
            _PINV_CACHE.clear()
        _PINV_CACHE[key] = svd_pinv(B)[0]
    return _PINV_CACHE[key]


def _single_thread_blas(fn):
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _BLAS_THREADS
        if _BLAS_THREADS is None:
            _BLAS_THREADS = _find_openblas_threads() or False
        if not _BLAS_THREADS:
            return fn(*args, **kwargs)
        get, put = _BLAS_THREADS
        old = get()
        put(1)
        try:
            return fn(*args, **kwargs)
        finally:
            put(old)

    return wrapper


# --------------------------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------------------------
def as_f64(x) -> np.ndarray:
    """A float64 numpy copy of a numpy array or torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.array(x, dtype=np.float64, copy=True)


def flat_index(c: int, i: int, j: int, H: int, W: int) -> int:
    """Flat index of pixel (c, i, j) in an image of shape (C, H, W)."""
    return (c * H + i) * W + j


def apply(M: np.ndarray, x) -> np.ndarray:
    """Apply a dense (n, n) matrix to an image (C, H, W); returns (C, H, W)."""
    x = as_f64(x)
    return (M @ x.reshape(-1)).reshape(x.shape)


def _logsumexp(a: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    finite = np.isfinite(a)
    if not finite.any():
        return -np.inf
    m = a[finite].max()
    return float(m + np.log(np.exp(a[finite] - m).sum()))


def _softmax(logw: np.ndarray) -> np.ndarray:
    """Softmax over all entries; -inf entries (infeasible / not kept) get weight exactly 0."""
    out = np.zeros_like(logw, dtype=np.float64)
    finite = np.isfinite(logw)
    if not finite.any():
        raise ValueError("no feasible (image, location) pair")
    m = logw[finite].max()
    e = np.exp(logw[finite] - m)
    out[finite] = e / e.sum()
    return out


# --------------------------------------------------------------------------------------------
# Forward matrices and pre-inverses (course/00_inverse_problems.md, eq-forward, eq-pre-inverse)
# --------------------------------------------------------------------------------------------
def identity_matrix(shape) -> np.ndarray:
    C, H, W = shape
    return np.eye(C * H * W)


def mask_values(mask, shape) -> np.ndarray:
    """Mask broadcast to (C, H, W): an (H, W) mask (possibly with leading 1s) is shared by all
    channels; a (C, H, W) (or (1, C, H, W)) mask is per channel."""
    C, H, W = shape
    m = as_f64(mask)
    while m.ndim > 3:
        if m.shape[0] != 1:
            raise ValueError(f"mask of shape {m.shape} is not a single mask")
        m = m[0]
    if m.ndim == 2:
        m = m[None]
    if m.shape[0] == 1 and C != 1:
        m = np.repeat(m, C, axis=0)
    if m.shape != (C, H, W):
        raise ValueError(f"mask of shape {m.shape} does not fit image shape {(C, H, W)}")
    return m


def mask_matrix(mask, shape) -> np.ndarray:
    """A = diag(mask) (1 = observed), mask shared over channels unless given per channel."""
    return np.diag(mask_values(mask, shape).reshape(-1))


def eps_mask_values(mask, eps: float) -> np.ndarray:
    """The ε-mask: the mask with ``eps`` instead of 0 on the holes."""
    m = as_f64(mask)
    return np.where(m == 0, eps, m)


def eps_mask_matrix(mask, eps: float, shape) -> np.ndarray:
    return mask_matrix(eps_mask_values(mask, eps), shape)


def center_box_mask_oracle(H: int, W: int, size: int) -> np.ndarray:
    """(H, W) 0/1 mask with the missing square starting at (H//2 - size//2, W//2 - size//2)."""
    m = np.ones((H, W))
    i0, j0 = H // 2 - size // 2, W // 2 - size // 2
    for i in range(i0, i0 + size):
        for j in range(j0, j0 + size):
            m[i, j] = 0.0
    return m


@_single_thread_blas
def blur_matrix(kernel, shape) -> np.ndarray:
    """Dense circular **convolution** ``(A x)[n] = Σ_j k[j] x[n − j]``.

    The kernel entry ``k[a, b]`` sits at offset ``(a − kh//2, b − kw//2)``; one 2-D kernel is
    shared by all channels. Built by explicit loops over output pixels and kernel taps.
    """
    C, H, W = shape
    k = as_f64(kernel)
    if k.ndim != 2:
        raise ValueError("kernel must be 2-D")
    kh, kw = k.shape
    if kh > H or kw > W:
        raise ValueError("kernel larger than the image")
    ch, cw = kh // 2, kw // 2
    n = C * H * W
    A = np.zeros((n, n))
    for c in range(C):
        for i in range(H):
            for j in range(W):
                row = flat_index(c, i, j, H, W)
                for a in range(kh):
                    for b in range(kw):
                        oi, oj = a - ch, b - cw  # offset of this tap
                        col = flat_index(c, (i - oi) % H, (j - oj) % W, H, W)
                        A[row, col] += k[a, b]
    return A


def adjoint_matrix(A: np.ndarray) -> np.ndarray:
    return np.array(A.T, copy=True)


@_single_thread_blas
def svd_pinv(M: np.ndarray, rtol: float = RANK_RTOL):
    """Pseudo-inverse by SVD with the §4.2 cut-off. Returns (M⁺, rank, kept singular values)."""
    M = np.asarray(M, dtype=np.float64)
    U, s, Vt = np.linalg.svd(M, full_matrices=False)
    if s.size == 0 or s[0] <= 0.0:
        r = 0
    else:
        r = int(np.sum(s > rtol * s[0]))
    pinv = (Vt[:r].T / s[:r]) @ U[:, :r].T
    return pinv, r, s[:r].copy()


def pinv_matrix(A: np.ndarray) -> np.ndarray:
    """Exact pseudo-inverse A⁺ (SVD, singular values > 1e-6 s_max)."""
    return svd_pinv(A)[0]


@_single_thread_blas
def tikhonov_matrix(A: np.ndarray, eps: float) -> np.ndarray:
    """(AᵀA + εI)⁻¹ Aᵀ by a dense solve."""
    n = A.shape[1]
    return np.linalg.solve(A.T @ A + eps * np.eye(n), A.T)


# --------------------------------------------------------------------------------------------
# Shifts and patches
# --------------------------------------------------------------------------------------------
def shift_matrix(g, shape) -> np.ndarray:
    """Permutation matrix of the circular shift ``(T_g x)[c, i, j] = x[c, i − gi, j − gj]``."""
    C, H, W = shape
    gi, gj = g
    n = C * H * W
    T = np.zeros((n, n))
    for c in range(C):
        for i in range(H):
            for j in range(W):
                T[flat_index(c, i, j, H, W), flat_index(c, (i - gi) % H, (j - gj) % W, H, W)] = 1.0
    return T


def patch_offsets(P: int):
    r = P // 2
    return [(di, dj) for di in range(-r, r + 1) for dj in range(-r, r + 1)]


def patch_matrix(loc, P: int, shape) -> np.ndarray:
    """Selection matrix ``Π_m`` (C·P·P × C·H·W) of the patch centred on location ``loc``
    (flat ``i*W + j`` or a pair ``(i, j)``), feature order (c, di, dj), circular wrap."""
    C, H, W = shape
    if P % 2 != 1:
        raise ValueError("patch size must be odd")
    i, j = divmod(int(loc), W) if np.isscalar(loc) else loc
    offs = patch_offsets(P)
    Pi = np.zeros((C * len(offs), C * H * W))
    row = 0
    for c in range(C):
        for di, dj in offs:
            Pi[row, flat_index(c, (i + di) % H, (j + dj) % W, H, W)] = 1.0
            row += 1
    return Pi


@lru_cache(maxsize=4)
def _all_shift_matrices(shape):
    """Stack (H, W, n, n) of the shift matrices T_g, g = (gi, gj)."""
    C, H, W = shape
    n = C * H * W
    T = np.empty((H, W, n, n))
    for gi in range(H):
        for gj in range(W):
            T[gi, gj] = shift_matrix((gi, gj), shape)
    return T


@lru_cache(maxsize=16)
def _all_patch_matrices(P, shape):
    _C, H, W = shape
    return np.stack([patch_matrix(m, P, shape) for m in range(H * W)])  # (HW, k, n)


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------
def _prep(y, train, A, B):
    y = as_f64(y)
    if y.ndim != 3:
        raise ValueError("oracles take one measurement (C, H, W)")
    X = as_f64(train)
    if X.ndim != 4 or X.shape[1:] != y.shape:
        raise ValueError("train must be (N, C, H, W) with the measurement's (C, H, W)")
    n = y.size
    A = np.eye(n) if A is None else np.asarray(A, dtype=np.float64)
    B = np.eye(n) if B is None else np.asarray(B, dtype=np.float64)
    if A.shape != (n, n) or B.shape != (n, n):
        raise ValueError("A and B must be dense (n, n) matrices")
    return y, X, A, B


def _in_range(proj: np.ndarray, v: np.ndarray) -> bool:
    """v ∈ range(Q) with proj = Q Q⁺ (§4.2 tolerance)."""
    return bool(np.linalg.norm(proj @ v - v) <= RANGE_RTOL * np.linalg.norm(v))


# --------------------------------------------------------------------------------------------
# §2 MMSE
# --------------------------------------------------------------------------------------------
@_single_thread_blas
def oracle_mmse(y, train, sigma, A=None, B=None, return_weights: bool = False):
    """Ideal MMSE under the empirical prior: z = B y ~ N(B A x_i, σ² B Bᵀ),
    log w_i = −‖B⁺(z − B A x_i)‖² / (2σ²) (the determinant is the same for every i)."""
    y, X, A, B = _prep(y, train, A, B)
    sigma = float(sigma)
    N = X.shape[0]
    Xf = X.reshape(N, -1)
    z = B @ y.reshape(-1)
    Bp = _cached_pinv(B)
    mu = Xf @ (B @ A).T  # (N, n): B A x_i
    r = (z[None, :] - mu) @ Bp.T  # B⁺ (z − B A x_i)
    logw = -np.sum(r * r, axis=1) / (2 * sigma**2)
    w = _softmax(logw)
    xhat = (w @ Xf).reshape(y.shape)
    return (xhat, w) if return_weights else xhat


# --------------------------------------------------------------------------------------------
# §3 Equivariant MMSE
# --------------------------------------------------------------------------------------------
@_single_thread_blas
def oracle_emmse(y, train, sigma, A=None, B=None, return_weights: bool = False):
    """E-MMSE: MMSE for the pairs (T_g x_i, T_g z). For every (i, g): T_g⁻¹ z must lie in
    range(B); log w = −‖B⁺(T_g⁻¹ z − B A x_i)‖² / (2σ²); estimate Σ w T_g x_i.

    Weights are returned with shape (N, H, W), entry [i, gi, gj] for the shift g = (gi, gj).
    """
    y, X, A, B = _prep(y, train, A, B)
    sigma = float(sigma)
    C, H, W = y.shape
    N = X.shape[0]
    n = C * H * W
    Xf = X.reshape(N, -1)
    z = B @ y.reshape(-1)
    Bp = _cached_pinv(B)
    proj = B @ Bp
    mu = Xf @ (B @ A).T  # (N, n): B A x_i
    T = _all_shift_matrices((C, H, W)).reshape(H * W, n, n)  # T_g, g = (gi, gj) flattened
    Zg = np.matmul(z, T)  # row g: (T_gᵀ z)ᵀ = T_g⁻¹ z (T_g is a permutation): (HW, n)
    resid = np.linalg.norm(Zg @ proj.T - Zg, axis=1)
    feasible = resid <= RANGE_RTOL * np.linalg.norm(Zg, axis=1)
    diff = (Zg @ Bp.T)[None, :, :] - (mu @ Bp.T)[:, None, :]  # B⁺(T_g⁻¹ z − B A x_i): (N, HW, n)
    logw = -np.sum(diff * diff, axis=2) / (2 * sigma**2)
    logw = np.where(feasible[None, :], logw, -np.inf)
    w = _softmax(logw)  # (N, HW)
    shifted = (T.reshape(H * W * n, n) @ Xf.T).reshape(H * W, n, N)  # [g, :, i] = T_g x_i
    xhat = np.einsum("ig,gni->n", w, shifted).reshape(C, H, W)
    w = w.reshape(N, H, W)
    return (xhat, w) if return_weights else xhat


# --------------------------------------------------------------------------------------------
# §4 LE-MMSE and §6 diagnostics
# --------------------------------------------------------------------------------------------
def n_eff_from_weights(w, tau: float) -> int:
    """Fewest weights whose largest values sum to ≥ τ − 1e-6; τ ≥ 1: number of non-zero weights."""
    w = np.asarray(w, dtype=np.float64).ravel()
    if tau >= 1:
        return int(np.count_nonzero(w))
    s = np.sort(w)[::-1]
    cs = np.cumsum(s)
    hit = np.nonzero(cs >= tau - NEFF_SLACK)[0]
    return int(hit[0] + 1) if hit.size else int(s.size)


@dataclass
class OracleDiagnostics:
    """Per-output-pixel diagnostics of one measurement (course/08_generalisation.md, eq-n-eff, eq-log-density).

    weights: (HW, N, HW) — weights[n, i, m] of training image i, location m for output pixel n
             (exactly 0 for pairs not kept by feasibility / stratification).
    log_density: (H, W) — log((1/(N·HW)) Σ_kept p_{i,m}(v)) in nats.
    rank: (H, W) — the rank r of the kept stratum at each output pixel.
    """

    weights: np.ndarray
    log_density: np.ndarray
    rank: np.ndarray
    H: int
    W: int

    @property
    def source_image(self) -> np.ndarray:
        n, _N, M = self.weights.shape
        flat = self.weights.reshape(n, -1).argmax(axis=1)
        return (flat // M).reshape(self.H, self.W)

    @property
    def source_location(self) -> np.ndarray:
        n, _N, M = self.weights.shape
        flat = self.weights.reshape(n, -1).argmax(axis=1)
        return (flat % M).reshape(self.H, self.W)

    def top_log_gap(self) -> np.ndarray:
        """log(w_top1 / w_top2) per pixel (inf when only one non-zero weight): ties have ~0."""
        n = self.weights.shape[0]
        w = np.sort(self.weights.reshape(n, -1), axis=1)
        top1, top2 = w[:, -1], w[:, -2]
        with np.errstate(divide="ignore"):
            gap = np.where(top2 > 0, np.log(top1) - np.log(np.maximum(top2, 1e-300)), np.inf)
        return gap.reshape(self.H, self.W)

    def _cumsums(self) -> np.ndarray:
        n = self.weights.shape[0]
        return np.cumsum(-np.sort(-self.weights.reshape(n, -1), axis=1), axis=1)

    def effective_patches(self, tau: float) -> np.ndarray:
        """N_eff(τ) per pixel (fewest largest weights summing to ≥ τ − 1e-6; τ = 1: non-zeros)."""
        n = self.weights.shape[0]
        if tau >= 1:
            out = np.count_nonzero(self.weights.reshape(n, -1), axis=1)
        else:
            out = np.argmax(self._cumsums() >= tau - NEFF_SLACK, axis=1) + 1
        return out.reshape(self.H, self.W)

    def cumsum_margin(self, tau: float) -> np.ndarray:
        """Distance of the sorted cumulative weight sums to the threshold τ − 1e-6 (the smallest
        over all prefixes): a small value means N_eff(τ) is numerically ambiguous."""
        return np.min(np.abs(self._cumsums() - (tau - NEFF_SLACK)), axis=1).reshape(self.H, self.W)


_Q_CACHE: dict = {}


def _q_factors(B: np.ndarray, P: int, shape):
    """For every location m: Q_m = Π_m B, its pseudo-inverse, projector Q_m Q_m⁺, rank and
    Σ_j log s_j (the −½ log pdet(Q_m Q_mᵀ) term is minus this). Cached per (B, P, shape)."""
    key = (B.shape, hash(B.tobytes()), P, tuple(shape))
    if key in _Q_CACHE:
        return _Q_CACHE[key]
    Pis = _all_patch_matrices(P, tuple(shape))
    HW = Pis.shape[0]
    Qs, Qps, projs, ranks, logdets = [], [], [], [], []
    for m in range(HW):
        Q = Pis[m] @ B
        Qp, r, s = svd_pinv(Q)
        Qs.append(Q)
        Qps.append(Qp)
        projs.append(Q @ Qp)
        ranks.append(r)
        logdets.append(float(np.sum(np.log(s))))
    out = (np.stack(Qs), np.stack(Qps), np.stack(projs), np.array(ranks), np.array(logdets))
    if len(_Q_CACHE) > 8:
        _Q_CACHE.clear()
    _Q_CACHE[key] = out
    return out


@_single_thread_blas
def oracle_le_mmse(y, train, sigma, P: int, A=None, B=None, return_diagnostics: bool = False):
    """LE-MMSE in full generality (course/05_closed_form.md, eq-le-general), explicit matrices.

    For each output location n: v = Π_n B y. For each location m: Q_m = Π_m B (SVD, rank r_m with
    the 1e-6 cut-off, pseudo-inverse). Feasible m: ‖Q_m Q_m⁺ v − v‖ ≤ 1e-6 ‖v‖. Kept: feasible m
    of the smallest rank. log p_{i,m} = −‖Q_m⁺(v − μ_{i,m})‖²/(2σ²) − Σ_j log s_j(Q_m)
    − (r/2) log(2πσ²), μ_{i,m} = Q_m A x_i. Estimate Σ w x_i[m] / Σ w.
    """
    y, X, A, B = _prep(y, train, A, B)
    sigma = float(sigma)
    C, H, W = y.shape
    if P % 2 != 1 or P > min(H, W):
        raise ValueError("P must be odd and <= min(H, W)")
    N = X.shape[0]
    HW = H * W
    Xf = X.reshape(N, -1)
    Pis = _all_patch_matrices(P, (C, H, W))
    Qs, Qps, projs, ranks, logdets = _q_factors(B, P, (C, H, W))
    z = B @ y.reshape(-1)
    V = np.einsum("nkl,l->nk", Pis, z)  # queries v_n = Π_n B y : (HW, k)
    vnorm = np.linalg.norm(V, axis=1)
    AX = Xf @ A.T  # rows A x_i
    values = X.reshape(N, C, HW)  # x_i[m] = values[i, :, m]
    log2pis2 = np.log(2 * np.pi * sigma**2)

    # log p[n, i, m] for every query n, image i, location m; feasibility per (n, m)
    logp = np.empty((HW, N, HW))
    feasible = np.empty((HW, HW), dtype=bool)
    for m in range(HW):
        resid = np.linalg.norm(V @ projs[m].T - V, axis=1)  # ‖Q_m Q_m⁺ v_n − v_n‖
        feasible[:, m] = resid <= RANGE_RTOL * vnorm
        mu = AX @ Qs[m].T  # μ_{i,m} = Q_m A x_i : (N, k)
        diff = (V @ Qps[m].T)[:, None, :] - (mu @ Qps[m].T)[None, :, :]  # Q_m⁺(v − μ)
        d = np.sum(diff * diff, axis=2)  # (HW_n, N)
        logp[:, :, m] = -d / (2 * sigma**2) - logdets[m] - 0.5 * ranks[m] * log2pis2

    xhat = np.zeros((C, HW))
    weights = np.zeros((HW, N, HW))
    logdens = np.zeros(HW)
    rank_kept = np.zeros(HW, dtype=int)
    for n in range(HW):
        rmin = ranks[feasible[n]].min()
        kept = feasible[n] & (ranks == rmin)  # stratification: smallest rank among feasible
        lp = np.where(kept[None, :], logp[n], -np.inf)
        w = _softmax(lp)
        weights[n] = w
        xhat[:, n] = np.einsum("im,icm->c", w, values)
        logdens[n] = _logsumexp(lp) - np.log(N * HW)
        rank_kept[n] = rmin
    xhat = xhat.reshape(C, H, W)
    if not return_diagnostics:
        return xhat
    return xhat, OracleDiagnostics(
        weights=weights, log_density=logdens.reshape(H, W), rank=rank_kept.reshape(H, W), H=H, W=W
    )


def _patches_by_rolls(img: np.ndarray, P: int) -> np.ndarray:
    """(HW, C·P·P) patches of a (C, H, W) image by circular rolls (no selection matrices)."""
    C, _H, _W = img.shape
    feats = []
    for c in range(C):
        for di, dj in patch_offsets(P):
            # np.roll(a, (-di, -dj))[i, j] = a[i + di, j + dj]
            feats.append(np.roll(img[c], (-di, -dj), axis=(0, 1)).reshape(-1))
    return np.stack(feats, axis=1)


@_single_thread_blas
def oracle_le_mmse_identity(y, train, sigma, P: int, A=None, return_diagnostics: bool = False):
    """Physics-agnostic LE-MMSE by the direct formula of course/04_locality.md, eq-lemmse (B = I):
    w_{i,m} = softmax_{i,m}(−‖Π_n y − Π_m A x_i‖²/(2σ²)), x̂[n] = Σ w x_i[m].
    Patches come from circular rolls, not from the selection matrices."""
    y, X, A, _ = _prep(y, train, A, None)
    sigma = float(sigma)
    C, H, W = y.shape
    N = X.shape[0]
    HW = H * W
    k = C * P * P
    keys = np.stack([_patches_by_rolls(apply(A, X[i]), P) for i in range(N)])  # (N, HW, k)
    queries = _patches_by_rolls(y, P)  # (HW, k)
    values = X.reshape(N, C, HW)
    xhat = np.zeros((C, HW))
    weights = np.zeros((HW, N, HW))
    logdens = np.zeros(HW)
    for n in range(HW):
        d = np.sum((keys - queries[n][None, None, :]) ** 2, axis=2)
        logp = -d / (2 * sigma**2) - 0.5 * k * np.log(2 * np.pi * sigma**2)
        w = _softmax(logp)
        weights[n] = w
        xhat[:, n] = np.einsum("im,icm->c", w, values)
        logdens[n] = _logsumexp(logp) - np.log(N * HW)
    xhat = xhat.reshape(C, H, W)
    if not return_diagnostics:
        return xhat
    return xhat, OracleDiagnostics(
        weights=weights,
        log_density=logdens.reshape(H, W),
        rank=np.full((H, W), k),
        H=H,
        W=W,
    )


# --------------------------------------------------------------------------------------------
# §7.1 sub-lattice LE-MMSE (course/07_networks_vs_theory.md, eq-sublattice)
# --------------------------------------------------------------------------------------------
def restricted_patch_matrix(loc, P: int, window, shape) -> np.ndarray:
    """``Π^R_m``: the rows of ``Π_m`` (feature order (c, di, dj)) whose offset (di, dj) lies in the
    window R, given as a (P, P) boolean array indexed ``[P//2 + di, P//2 + dj]`` (None = all)."""
    C, _H, _W = shape
    full = patch_matrix(loc, P, shape)
    if window is None:
        return full
    window = np.asarray(window, dtype=bool)
    r = P // 2
    keep = [c * P * P + k for c in range(C) for k, (di, dj) in enumerate(patch_offsets(P))
            if window[r + di, r + dj]]
    return full[keep]


@_single_thread_blas
def oracle_sublattice_le_mmse(y, train, sigma, P: int, stride: int, windows=None, A=None, B=None):
    """LE-MMSE restricted to a sub-lattice (course/07_networks_vs_theory.md, eq-sublattice), by explicit loops over (i, m).

    For output pixel n = (i, j) of class c = (i mod s, j mod s): v = Π^{R_c}_n B y; for every
    location m ≡ n (mod s) (same class, absolute coordinates): Q_m = Π^{R_c}_m B (SVD with the
    1e-6 cut-off), feasible when ‖Q_m Q_m⁺ v − v‖ ≤ 1e-6 ‖v‖, kept: feasible m of smallest rank;
    log w_{i,m} = −‖Q_m⁺(v − Q_m A x_i)‖²/(2σ²) − Σ_j log s_j(Q_m); x̂[n] = Σ w x_i[m] / Σ w.
    ``windows``: {(a, b): (P, P) bool} or None (full windows). Returns (C, H, W)."""
    y, X, A, B = _prep(y, train, A, B)
    sigma = float(sigma)
    C, H, W = y.shape
    if H % stride or W % stride:
        raise ValueError("stride must divide H and W")
    N = X.shape[0]
    z = B @ y.reshape(-1)
    BAX = X.reshape(N, -1) @ (B @ A).T  # rows B A x_i
    xhat = np.zeros((C, H, W))
    for i in range(H):
        for j in range(W):
            cls = (i % stride, j % stride)
            R = None if windows is None else windows[cls]
            v = restricted_patch_matrix((i, j), P, R, (C, H, W)) @ z
            cands = []  # (rank, log w over images, values over images)
            for mi in range(cls[0], H, stride):
                for mj in range(cls[1], W, stride):
                    Pi = restricted_patch_matrix((mi, mj), P, R, (C, H, W))
                    Q = Pi @ B  # Q_m = Π^R_m B
                    Qp, r, svals = svd_pinv(Q)
                    if np.linalg.norm(Q @ Qp @ v - v) > RANGE_RTOL * np.linalg.norm(v):
                        continue
                    mu = BAX @ Pi.T  # μ_{i,m} = Π^R_m B A x_i, (N, k)
                    d = np.sum(((v[None] - mu) @ Qp.T) ** 2, axis=1)
                    logw = -d / (2 * sigma**2) - np.sum(np.log(svals))
                    cands.append((r, logw, X[:, :, mi, mj]))
            rmin = min(c[0] for c in cands)
            kept = [c for c in cands if c[0] == rmin]
            logw = np.concatenate([c[1] for c in kept])
            vals = np.concatenate([c[2] for c in kept])  # (N·M, C)
            w = _softmax(logw)
            xhat[:, i, j] = w @ vals
    return xhat


# --------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------
def smooth_images(n: int, C: int, H: int, W: int, seed: int, smoothness: float = 1.2):
    """``n`` smooth random images in [0, 1] as a float32 torch tensor (n, C, H, W).

    White noise from a fixed ``torch.Generator``, circularly low-passed by a Gaussian in Fourier
    (std ``smoothness`` pixels), then min-max scaled per image to [0.05, 0.95].
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, C, H, W, generator=g, dtype=torch.float64)
    fi = torch.fft.fftfreq(H, dtype=torch.float64)[:, None]
    fj = torch.fft.fftfreq(W, dtype=torch.float64)[None, :]
    filt = torch.exp(-2 * (torch.pi * smoothness) ** 2 * (fi**2 + fj**2))
    x = torch.fft.ifft2(torch.fft.fft2(e) * filt).real
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = 0.05 + 0.9 * (x - lo) / (hi - lo)
    return x.float()


# --------------------------------------------------------------------------------------------
# §9 Accelerated MRI: k-space sampling as an explicit matrix (course/09_mri.md, eq-kspace)
# --------------------------------------------------------------------------------------------
def unitary_dft_matrix(n: int) -> np.ndarray:
    """The unitary 1-D DFT ``F[k, j] = exp(−2πi k j / n) / √n`` built entry by entry."""
    F = np.empty((n, n), dtype=np.complex128)
    for k in range(n):
        for j in range(n):
            F[k, j] = np.exp(-2j * np.pi * k * j / n) / np.sqrt(n)
    return F


def kspace_matrix(mask, shape) -> np.ndarray:
    """``K = F^H diag(M) F`` on (C, H, W) images, one channel at a time (block diagonal), with the
    unitary 2-D DFT ``F = F_H ⊗ F_W`` acting on the flat index ``i*W + j``. ``mask``: (H, W) 0/1
    in numpy-FFT layout (frequency 0 at index 0). The imaginary part must vanish (a
    conjugate-symmetric mask); it is checked, then dropped."""
    C, H, W = shape
    M = as_f64(mask).reshape(H, W)
    F = np.kron(unitary_dft_matrix(H), unitary_dft_matrix(W))
    K1 = F.conj().T @ np.diag(M.reshape(-1).astype(np.complex128)) @ F
    if np.abs(K1.imag).max() > 1e-12:
        raise ValueError("the k-space mask is not conjugate-symmetric: K is not real")
    return np.kron(np.eye(C), K1.real)
