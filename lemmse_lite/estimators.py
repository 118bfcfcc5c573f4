"""The three estimators of the course: MMSE, equivariant MMSE and local-equivariant MMSE.

All three minimise ``E‖φ(B y) − x‖²`` over a class of functions under the empirical prior of a
training set and all three are softmax averages computed by the one streaming engine of
:mod:`lemmse_lite.engine`, fed by the one driver :class:`lemmse_lite.streaming.ScoreStream`:

* :func:`mmse`              — keys: whole training measurements; values: training images
  (`course/01_ideal_mmse.md`, `eq-mmse`, `eq-mmse-b`);
* :func:`equivariant_mmse`  — keys: training measurements against every shift of the query; values:
  the shifted training images (`course/03_equivariance.md`, `eq-emmse`, `eq-emmse-b`);
* :func:`le_mmse`           — keys: patches of training measurements; values: their centre pixels
  (`course/04_locality.md`, `eq-lemmse`; `course/05_closed_form.md`, `eq-le-general`), and its
  sub-lattice form (`course/07_networks_vs_theory.md`, `eq-sublattice`).

Conventions: ``y`` is the *raw* measurement ``A x + e`` of shape (B, C, H, W); the estimators apply
the pre-inverse ``B`` themselves (``B=None``: physics-agnostic). ``train`` is a tensor (N, C, H, W)
or an iterable of such tensors, streamed chunk by chunk to ``y``'s device (the only data moved).
``sigma`` is a float or a (B,) tensor. LE-MMSE computes in float32 (float64 if ``y`` is float64),
the score dot products of a dense whitening (equivariant or general ``B``) in float64.
MMSE and E-MMSE screen every pair with float32 scores (whole-image distances cancel badly in
float32), then compute in float64 the log-weights of the keys that a rigorous bound of the float32
rounding (:func:`rounding_slack`) cannot rule out; they return ``y``'s dtype. ``engine``: an :class:`~lemmse_lite.engine.EngineConfig`
(default: :func:`~lemmse_lite.engine.default_engine` of ``y``'s device).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .checks import all_finite, check_positive_int, check_sigma
from .diagnostics import Diagnostics, build_diagnostics, log_density_constant
from .engine import EngineConfig, ScoreBlock, SoftmaxState, augment_keys, augment_queries, check_engine
from .operators import (
    RANK_TOL,
    Denoising,
    DenseOperator,
    Diagonal,
    FourierMultiplier,
    Operator,
    as_operator,
    check_images,
)
from .patches import (
    _check_class_key,
    centre_pixels,
    check_patch_size,
    extract_patches,
    support_features,
)
from .streaming import (
    DEFAULT_MAX_MEMORY,
    _is_reiterable,
    non_finite_error,
    check_chunk_size,
    default_chunk_size,
    ScoreStream,
    is_reiterable,
    training_chunks,
)

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "DENSE_LIMIT",
    "RANGE_TOL",
    "DenseGroup",
    "Diagnostics",
    "DiagonalGroup",
    "EngineConfig",
    "IdentityGroup",
    "PatchGroup",
    "WhitenedGroup",
    "_is_reiterable",
    "equivariant_mmse",
    "is_reiterable",
    "le_mmse",
    "mmse",
    "patch_groups",
    "rounding_slack",
    "training_chunks",
]

DENSE_LIMIT = 4096  # largest n = C·H·W for which a general (non-structured) B is made dense
RANGE_TOL = 1e-6  # v ∈ range(Q) when ‖Q Q⁺ v − v‖ ≤ RANGE_TOL·‖v‖ (`eq-le-general` tolerances)


# ----------------------------------------------------------------------------- inputs

def _check_flag(flag, name: str) -> bool:
    if not isinstance(flag, bool):
        raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    return flag


def _setup(y, sigma, A, B):
    """Checked ``(y in the working dtype, dtype, A, B or None for the identity, σ (B,))``."""
    y = check_images(y, "y")
    dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    A = as_operator(A, "A")
    B = None if B is None else as_operator(B, "B")
    if isinstance(B, Denoising):
        B = None
    for op, name in ((A, "A"), (B, "B")):
        if op is not None and not isinstance(op, Denoising):  # one cheap application names the operator in any shape error
            try:
                op(y[:1])
            except ValueError as err:
                raise ValueError(f"{name} does not fit the measurements y: {err}") from None
    sig = check_sigma(sigma, y.shape[0], y.device, dtype)
    return y.to(dtype), dtype, A, B, sig


def _is_structured(B) -> bool:
    """Identity, diagonal or translation-equivariant (Fourier) ``B``: no dense matrix needed."""
    return B is None or isinstance(B, (Denoising, Diagonal, FourierMultiplier))


def _dense(B: Operator, shape) -> DenseOperator:
    n = math.prod(shape)
    if n > DENSE_LIMIT:
        raise ValueError(
            f"B of type {type(B).__name__} needs the dense explicit-matrix path, which is limited to images "
            f"with C·H·W ≤ {DENSE_LIMIT} (got {n}); use a diagonal (mask) or Fourier (equivariant) pre-inverse"
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


# ----------------------------------------------------------------------------- the two centring rules

def centre_on_own_queries(q: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """LE-MMSE centring of one patch group: (Q, r) whitened queries, (Q,) bool -> (r,) mean of the
    queries located in the group itself (all queries if none is).

    Scores are ``‖q‖² + ‖k‖² − 2 q·k`` in float32; subtracting one vector from both sides changes no
    distance but keeps both norms small. The queries of the group's own locations are the ones near
    its keys; all queries would be pulled away by far, irrelevant ones (the ε-mask, where every query
    visits every group)."""
    return (q[own] if own.any() else q).mean(0)


def centre_on_first_key(keys: torch.Tensor) -> torch.Tensor:
    """MMSE / E-MMSE centring of the float32 screening scores: (K, n) whole-image keys of the first
    chunk -> (n,) the first key (smaller norms: a tighter :func:`rounding_slack`, fewer candidates).

    The queries that matter lie near the keys, while the query mean can sit far away (ε-mask:
    misaligned shifts carry z/ε). Fixed by the first training image alone, so the rounding does not
    depend on the chunking (the queries are not all known to be near one group, unlike LE-MMSE)."""
    return keys[0].clone()


# ----------------------------------------------------------------------------- MMSE and E-MMSE

# A key provably RESCORE_MARGIN[dtype] + log n nats below a query's best score, n the keys seen so
# far (this chunk included), is dropped: a chunk's dropped keys weigh at most e^−margin·len(chunk)/n
# ≤ e^−margin of the best together, whatever N — below the rounding of the returned mean
# (e⁻²⁰ = 2e-9 against float32's 6e-8; e⁻⁴⁰ = 4e-18 against float64's 1.1e-16).
RESCORE_MARGIN = {torch.float32: 20.0, torch.float64: 40.0}
# candidate pairs are rescored alone (sampled sparse product) when a dense product over every
# (query, candidate key) pair would cost more than PAIR_COST times their number (measured, 32×32)
PAIR_COST = 4
FLOAT32_UNIT = 2.0**-24  # unit round-off u of float32


def _shift_index(h: int, w: int, g_count: int, device) -> torch.Tensor:
    """(g_count, H·W) long: row g holds, for each pixel n, the flat index of ``n − g`` (so that
    ``(T_g u)[n] = u[idx[g, n]]``), for the first ``g_count`` shifts g in flat order."""
    if g_count == 1:  # MMSE: the identity only
        return torch.arange(h * w, device=device)[None]
    i = torch.arange(h, device=device)
    j = torch.arange(w, device=device)
    g = torch.arange(g_count, device=device)
    gi, gj = g // w, g % w
    rows = (i[None, :, None] - gi[:, None, None]) % h  # (G, H, 1)
    cols = (j[None, None, :] - gj[:, None, None]) % w  # (G, 1, W)
    return (rows * w + cols).reshape(g_count, h * w)


def _feasible_images(u: torch.Tensor, B) -> torch.Tensor:
    """(Q, C, H, W) candidates -> (Q,) bool: ``u ∈ range(B)`` (`eq-emmse-b`; tolerance RANGE_TOL).

    Identity and Fourier ``B``: always (the query itself is ``B y``, and shifts commute with ``B``);
    diagonal: exact zeros, the support of u inside the support of b; dense: the projector residual."""
    if B is None or isinstance(B, FourierMultiplier):
        return torch.ones(len(u), dtype=torch.bool, device=u.device)
    if isinstance(B, Diagonal):
        b = B.diagonal(u.shape[1:]).to(u.device)
        return ~((u != 0) & (b == 0)).flatten(1).any(1)
    proj = B.M @ B.pinv().M  # projector on range(B)
    flat = u.reshape(len(u), -1).double()
    resid = flat - flat @ proj.T.to(flat.device)
    return resid.norm(dim=1) <= RANGE_TOL * flat.norm(dim=1)


def _shifted_queries(z: torch.Tensor, g_count: int, idx: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B·G, C, H, W): ``T_g⁻¹ z`` for the first ``g_count`` shifts g (``idx``:
    :func:`_shift_index` of at least those shifts)."""
    bsz, c, h, w = z.shape
    if g_count == 1:
        return z
    g = torch.arange(g_count, device=z.device)
    minus_g = ((-(g // w)) % h) * w + (-(g % w)) % w  # (T_g⁻¹ u)[n] = u[idx[−g, n]]
    return z.flatten(2)[:, :, idx[minus_g]].permute(0, 2, 1, 3).reshape(bsz * g_count, c, h, w)


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    """``t.float()`` without a dispatch when ``t`` is float32 already (a call's small ops add up)."""
    return t if t.dtype == torch.float32 else t.float()


def rounding_slack(n: int, q_norm: torch.Tensor, k_norm_max: float, inv_var: torch.Tensor) -> torch.Tensor:
    """(Q,) float64 bound on the float32 rounding error of the scores ``(q·k − ‖k‖²/2)/σ²`` of
    whole-image queries of norm ``q_norm`` (Q,) against keys of norm at most ``k_norm_max``
    (both centred, or both not), dimension ``n`` (`eq-mmse-b`)::

        |ŝ − s| ≤ (2 γ_{n+2} + 16u) (‖q‖ + ‖k‖)² / (2σ²),   γ_m = m u / (1 − m u),  u = 2⁻²⁴,

    the worst-case bound of a float32 dot product ``q·k`` plus the bias ``−‖k‖²/2`` (any summation
    order) and of ``‖k‖²`` itself, plus a few ``u`` for the rounding of the centred inputs, of
    ``1/σ²``, of ``‖k‖`` squared and of the screening thresholds (`eq-attention`)."""
    m = (n + 2) * FLOAT32_UNIT
    factor = 2 * m / (1 - m) + 16 * FLOAT32_UNIT
    return factor * 0.5 * inv_var * (q_norm + k_norm_max) ** 2


class _ImageSoftmax:
    """Score blocks and consumer of one MMSE / E-MMSE call (`eq-mmse-b`, `eq-emmse-b`).

    As blocks (``__call__(start, chunk)``): the keys ``k_i = W B A x_i`` of the chunk (with a
    pre-inverse, centred on the first key: :func:`centre_on_first_key`; without, the training
    measurements as they are: no copy) are scored by the engine in float32 against the queries
    ``q = W T_g⁻¹ B y`` (Q, n) as ``q·k − ‖k‖²/2``, the bias added by the product itself. As
    consumer (``update``): scaled by ``1/σ²`` and with ``slack`` the bound of
    :func:`rounding_slack`, the float32 scores ``ŝ`` give a lower bound ``m_low = max ŝ − slack``
    of each query's best score; the candidates ``ŝ ≥ m_low − slack − margin`` are the only keys
    whose weight can exceed ``e^−margin`` of the best (``margin``: :data:`RESCORE_MARGIN` of the
    working dtype plus the log of the keys seen so far). Their exact log-weights
    ``−‖q − k‖²/(2σ²)`` are computed in float64 (direct differences; a block with many candidates
    by one float64 product) and merged by the engine's online softmax in float64: ``state``, a
    :class:`~lemmse_lite.engine.SoftmaxState` (Q queries, n values)."""

    row_parallel = True  # update touches only its rows

    def __init__(self, q, rows, inv_var, A, Bop, W, key_block: int):
        self.q, self.rows, self.inv_var, self.A, self.Bop, self.W = q, rows, inv_var, A, Bop, W
        self.key_block, self.fresh = key_block, False
        n_q, n = q.shape
        self.q64 = q.double()
        self.inv_var32 = inv_var.float()
        self.state = SoftmaxState(n_q, n, q.device, torch.float64)
        self.m_low = torch.full((n_q,), float("-inf"), dtype=torch.float32, device=q.device)
        self.q32 = self.centre = None
        # the keys are the chunk itself: their norms check its finiteness (one pass, not two)
        self.keys_are_chunk = isinstance(A, Denoising) and Bop is None

    def __call__(self, start, chunk):
        n = self.q.shape[1]
        if not self.keys_are_chunk and not all_finite(chunk):  # before A would name it "x"
            raise non_finite_error(start, chunk.shape[0])
        meas = chunk if isinstance(self.A, Denoising) else self.A(chunk)  # the identity: no copy, no re-check
        meas = meas if self.Bop is None else self.Bop(meas)
        self.keys = (meas if self.W is None else self.W(meas)).reshape(chunk.shape[0], n)
        if self.q32 is None:
            self._start(self.keys)
        k32 = _as_float32(self.keys if self.centre is None else self.keys - self.centre)
        norm = torch.linalg.vector_norm(k32, dim=1)
        k_norm_max = float(norm.max())  # NaN if a key holds NaN, Inf if one holds ±Inf or overflows
        if not math.isfinite(k_norm_max):
            self._refuse(start, chunk)
        self.slack = (self.q_norm + k_norm_max).square_().mul_(self.slack_factor).float()  # rounding_slack
        self.margin = RESCORE_MARGIN[chunk.dtype] + math.log(start + chunk.shape[0])
        # the first chunk in one key block: each query row meets its first block, nothing to merge
        self.fresh = start == 0 and chunk.shape[0] <= self.key_block
        ids = torch.arange(chunk.shape[0], device=chunk.device)
        values = self.keys if self.keys_are_chunk else chunk.reshape(chunk.shape[0], n)
        yield ScoreBlock(self.rows, self.q32, k32, values, ids, norm.square_().mul_(-0.5))

    @staticmethod
    def _refuse(start, chunk):
        """A chunk with a non-finite key norm: NaN/Inf images (when the keys are the chunk, its
        finiteness is read off their norms, one pass instead of two), or finite images too large
        for float32 scores."""
        if not all_finite(chunk):
            raise non_finite_error(start, chunk.shape[0])
        raise ValueError(f"train images {start}..{start + chunk.shape[0] - 1} are too large for the float32 "
                         "screening scores (their squared norms overflow float32)")

    def _start(self, keys):
        """At the first chunk: the centre (with a pre-inverse), the float32 queries in the keys'
        coordinates (no per-query offset: it cancels in the candidate test) and their norms."""
        self.centre = None if self.W is None else centre_on_first_key(keys)
        qc = _as_float32(self.q if self.centre is None else self.q - self.centre)
        self.q_norm = torch.linalg.vector_norm(qc, dim=1).double()
        # rounding_slack(n, q_norm, k, inv_var) = slack_factor · (q_norm + k)², per chunk
        self.slack_factor = rounding_slack(qc.shape[1], torch.zeros_like(self.q_norm), 1.0, self.inv_var)
        self.q32 = qc[self.rows]
        # float64 queries in the keys' coordinates and −‖q‖²/2 (Q,), for the exact log-weights
        self.q64c = self.q64 if self.centre is None else self.q64 - self.centre.double()
        self.q_bias = self.q64c.square().sum(1).mul_(-0.5)
        self.q_bias_col, self.inv_var_col = self.q_bias[:, None], self.inv_var[:, None]  # (Q, 1) views

    def update(self, rows, scores, values_t, key_ids):
        """One (q, k) block of float32 scores; ``values_t`` (n, k) the images, ``key_ids`` (k,)
        the keys' positions in the chunk."""
        slack, iv = self.slack[rows], self.inv_var32[rows]
        m_low = scores.amax(1).mul_(iv).sub_(slack)
        if not self.fresh:  # the first block: no earlier bound to improve on
            m_low = torch.maximum(self.m_low[rows], m_low)
        self.m_low[rows] = m_low
        cand = scores >= m_low.sub_(slack).sub_(self.margin).div_(iv)[:, None]  # the scores are ŝ σ²
        qi, kj = torch.nonzero(cand, as_tuple=True)
        if qi.shape[0] == 0:  # every key of the block is negligible for every query
            return
        used, pos = torch.unique(kj, return_inverse=True)  # the block's candidate keys; each pair's
        k64 = self.keys.index_select(0, key_ids[used]).double()  # index_select: ~3x faster than []
        images = k64 if self.keys_are_chunk else values_t.T.index_select(0, used).double()
        kc = k64 if self.centre is None else k64 - self.centre.double()
        k_bias = kc.square().sum(1).mul_(-0.5)  # −‖k‖²/2 (U,)
        if scores.is_cuda or scores.shape[0] * used.shape[0] <= PAIR_COST * qi.shape[0]:
            self._merge_dense(rows, self._dense_scores(rows, kc, k_bias), images)
        else:
            r = torch.arange(rows.start, rows.stop, device=scores.device) if isinstance(rows, slice) else rows
            self._merge_pairs(r, qi, self._pair_scores(r, qi, kc, k_bias, pos), pos, images)

    def _pair_scores(self, r, qi, kc, k_bias, pos) -> torch.Tensor:
        """Query rows ``r`` (q,), P candidate pairs (local query ``qi``, key ``pos``) among (U, n)
        float64 keys with ``−‖k‖²/2`` (U,) -> (P,) float64 ``(q·k − ‖k‖²/2 − ‖q‖²/2)/σ²``: the dot
        products of the pairs only, by one sampled sparse product (CPU; no gathered rows)."""
        crow = torch.zeros(r.shape[0] + 1, dtype=torch.long, device=qi.device)
        crow[1:] = torch.bincount(qi, minlength=r.shape[0]).cumsum(0)
        zeros = torch.zeros(qi.shape[0], dtype=torch.float64, device=qi.device)
        with warnings.catch_warnings():  # PyTorch calls CSR support "beta" (once per process)
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state", category=UserWarning)
            pattern = torch.sparse_csr_tensor(crow, pos, zeros,
                                              (r.shape[0], kc.shape[0]), check_invariants=False)
            dot = torch.sparse.sampled_addmm(pattern, self.q64c[r], kc.T).values()
        qg = r[qi]
        return dot.add_(k_bias[pos]).add_(self.q_bias[qg]).mul_(self.inv_var[qg])

    def _dense_scores(self, r, kc, k_bias) -> torch.Tensor:
        """Query rows ``r`` (slice or (q,)), (k, n) float64 keys and their ``−‖k‖²/2`` (k,) ->
        (q, k) float64 ``−‖q − k‖²/(2σ²) = (q·k − ‖k‖²/2 − ‖q‖²/2)/σ²`` (centred like the
        screening scores)."""
        s = torch.addmm(k_bias, self.q64c[r], kc.T)
        return s.add_(self.q_bias_col[r]).mul_(self.inv_var_col[r])

    def _merge_pairs(self, r, qi, s, pos, images):
        """Online-softmax merge of P candidate pairs: local query ``qi`` (P,), score ``s`` (P,),
        key ``pos`` (P,) among the block's candidate ``images`` (U, n); the weighted sum of each
        query's images is one sparse (q, U) @ (U, n) product (an ``index_add_`` of P image rows
        was ~50x slower)."""
        m_blk = torch.full((r.shape[0],), float("-inf"), dtype=torch.float64, device=s.device)
        m_blk.scatter_reduce_(0, qi, s, "amax")
        m_new, alpha = self.state.running_max(r, m_blk, self.fresh)
        w = torch.exp(s - m_new[qi])
        # (qi, pos) come from nonzero in row-major order, pos monotone in the key: coalesced
        weights = torch.sparse_coo_tensor(torch.stack([qi, pos]), w, (r.shape[0], images.shape[0]),
                                          is_coalesced=True, check_invariants=False)
        d_blk = torch.zeros_like(m_blk).index_add_(0, qi, w)
        self.state.accumulate(r, m_new, alpha, d_blk, torch.sparse.mm(weights, images))

    def _merge_dense(self, r, s, images):
        """Online-softmax merge of a dense (q, k) block of exact scores; ``images`` (k, n)."""
        m_new, alpha = self.state.running_max(r, s.amax(1), self.fresh)
        w = torch.exp(s.sub_(m_new[:, None]))
        self.state.accumulate(r, m_new, alpha, w.sum(1), w @ images)


def _image_estimator(y, train, sigma, A, B, use_shifts: bool, chunk_size, engine):
    """Shared body of :func:`mmse` (``use_shifts=False``) and :func:`equivariant_mmse`.

    With ``z = B y`` and ``W = B⁺`` the log-weight of pair (i, g) is
    ``−‖W T_g⁻¹ z − W B A x_i‖² / (2σ²)`` over feasible g (`eq-emmse-b`; ``‖B⁺u‖² = uᵀ(BBᵀ)⁺u``).
    Queries are the (measurement, shift) pairs, values the training images, scored by
    :class:`_ImageSoftmax` (float32 screening, float64 log-weights of the candidates); the
    per-shift softmaxes are merged at the end, each numerator shifted back by ``T_g``."""
    check_chunk_size(chunk_size)
    y, dtype, A, B, sig = _setup(y, sigma, A, B)
    engine = check_engine(engine, y.device)
    bsz, c, h, w = y.shape
    n = c * h * w
    Bop = B if _is_structured(B) else _dense(B, (c, h, w))
    W = None if Bop is None else Bop.pinv()
    z = y if Bop is None else Bop(y)
    g_count = h * w if use_shifts else 1
    idx = _shift_index(h, w, g_count, y.device) if use_shifts else None  # (T_g u)[n] = u[idx[g, n]]
    zs = _shifted_queries(z, g_count, idx)
    # identity and Fourier B: every (shifted) query is feasible (`_feasible_images`), no test needed
    feasible = None if Bop is None or isinstance(Bop, FourierMultiplier) else _feasible_images(zs, Bop)
    q = (zs if W is None else W(zs)).reshape(bsz * g_count, n)
    inv_var = sig.double().pow(-2)
    inv_var = inv_var if g_count == 1 else inv_var.repeat_interleave(g_count)
    rows = slice(0, q.shape[0])  # every query feasible: a slice (views, no gathers)
    if feasible is not None and not bool(feasible.all()):
        rows = torch.nonzero(feasible).squeeze(1)
    chunk_size = chunk_size or default_chunk_size(1, n, DEFAULT_MAX_MEMORY)
    state = _ImageSoftmax(q, rows, inv_var, A, Bop, W, engine.key_block)
    ScoreStream(train, (c, h, w), chunk_size, y.device, dtype, state, engine, check_finite=False).run(state)
    out = _merge_shifts(state.state, feasible, idx, (bsz, c, h, w))
    return out if out.dtype == dtype else out.to(dtype)


def _merge_shifts(state, feasible, idx, shape) -> torch.Tensor:
    """Merge the per-shift softmaxes: weight of shift g ∝ ``exp(m_g) d_g``; each mean is shifted
    back by ``T_g`` (``idx``: :func:`_shift_index`, ``None`` for the MMSE's identity alone;
    ``feasible`` (B·G,) bool, ``None`` when every query is). Returns (B, C, H, W)."""
    bsz, c, h, w = shape
    if idx is None:  # MMSE: one softmax per measurement, d ≥ 1 (the best key weighs 1)
        if feasible is not None and not bool(feasible.all()):
            raise ValueError("no shift of the measurement is feasible (in the range of B)")
        return state.result().reshape(shape)
    g_count = len(idx)
    log_mass = state.log_normaliser().reshape(bsz, g_count)
    if feasible is not None:
        log_mass = torch.where(feasible.reshape(bsz, g_count), log_mass, torch.full_like(log_mass, float("-inf")))
    if torch.isneginf(log_mass.amax(1)).any():
        raise ValueError("no shift of the measurement is feasible (in the range of B)")
    pi = torch.softmax(log_mass, dim=1)  # (B, G)
    work = state.num.dtype
    means = (state.num / state.d.clamp_min(torch.finfo(work).tiny)[:, None]).reshape(bsz, g_count, c, h * w)
    means = torch.nan_to_num(means)
    shifted = torch.gather(means, 3, idx[None, :, None, :].expand(bsz, g_count, c, h * w))
    return (pi[:, :, None, None] * shifted).sum(1).reshape(bsz, c, h, w)


def mmse(y, train, sigma, A=None, B=None, chunk_size=None, *, engine: EngineConfig | None = None) -> torch.Tensor:
    """Ideal MMSE under the empirical prior (`course/01_ideal_mmse.md`, `eq-mmse-b`): ``Σ_i w_i x_i``
    with ``w = softmax_i(−‖B⁺(B y − B A x_i)‖² / 2σ²)`` (``B=None``: ``−‖y − A x_i‖²/2σ²``).

    y: (B, C, H, W) raw measurements; train: (N, C, H, W) or iterable; returns (B, C, H, W)."""
    return _image_estimator(y, train, sigma, A, B, False, chunk_size, engine)


def equivariant_mmse(y, train, sigma, A=None, B=None, chunk_size=None, *,
                     engine: EngineConfig | None = None) -> torch.Tensor:
    """Equivariant MMSE (`course/03_equivariance.md`, `eq-emmse-b`): ``Σ_{i,g} w_{i,g} T_g x_i`` with
    ``w = softmax_{i,g}(−‖B⁺(T_g⁻¹ B y − B A x_i)‖² / 2σ²)`` over shifts g with ``T_g⁻¹ B y ∈ range(B)``.

    y: (B, C, H, W); train: (N, C, H, W) or iterable; returns (B, C, H, W)."""
    return _image_estimator(y, train, sigma, A, B, True, chunk_size, engine)


# ----------------------------------------------------------------------------- LE-MMSE: patch groups

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
    Bd = B if isinstance(B, DenseOperator) else _dense(B, shape)
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
    (:func:`lemmse_lite.diagnostics.log_density_constant`), equal over the kept stratum, so the
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


@dataclass(frozen=True)
class PatchBlocks:
    """The LE-MMSE's block source (:class:`~lemmse_lite.streaming.BlockSource`): for one chunk of
    training images ``x_i`` (Nc, C, H, W) from image ``start``, one :class:`ScoreBlock` per plan,
    keys ``whiten(Π_m B A x_i) − centre`` (Nc·L, r + 2 augmented) of the plan's group, values the
    centre pixels ``x_i[m]`` (Nc·L, C), key ids ``i·H·W + m`` (`eq-le-general`). ``precise``: apply
    ``B`` in float64 (a dense whitening)."""

    plans: list
    A: Operator
    B: Operator | None
    patch_size: int
    precise: bool
    hw: int

    def __call__(self, start: int, chunk: torch.Tensor):
        B = self.B
        meas = self.A(chunk) if B is None else B(self.A(chunk.double() if self.precise else chunk))
        keys_all = extract_patches(meas, self.patch_size)  # (Nc, H·W, D)
        values_all = centre_pixels(chunk)  # (Nc, H·W, C)
        image_ids = torch.arange(start, start + len(chunk), device=chunk.device)
        for plan in self.plans:
            g = plan.group
            k = g.whiten(keys_all[:, g.locations]).reshape(len(chunk) * len(g.locations), g.rank)
            k = k.to(plan.q_aug.dtype)
            vals = values_all[:, g.locations].reshape(-1, chunk.shape[1])
            ids = (image_ids[:, None] * self.hw + g.locations[None]).reshape(-1)
            yield ScoreBlock(plan.rows, plan.q_aug, augment_keys(k - plan.centre), vals, ids)


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


# ----------------------------------------------------------------------------- LE-MMSE

def _check_le_args(chunk_size, return_diagnostics, top_k, max_memory):
    check_chunk_size(chunk_size)
    _check_flag(return_diagnostics, "return_diagnostics")
    check_positive_int(top_k, "top_k")
    check_positive_int(max_memory, "max_memory")


def le_mmse(y, train, sigma, patch_size, A=None, B=None, chunk_size=None, return_diagnostics=False,
            top_k: int = 4, max_memory: int = DEFAULT_MAX_MEMORY, *, stride: int = 1,
            supports: dict | None = None, engine: EngineConfig | None = None):
    """Local-equivariant MMSE (`course/04_locality.md`, `eq-lemmse`; `course/05_closed_form.md`,
    `eq-le-general`): the optimum over translation-equivariant functions whose output pixel n
    depends only on the patch ``Π_n B y``::

        x̂(y)[n] = Σ_{i,m} w_{i,m} x_i[m],
        log w_{i,m} = −‖Q_m⁺(v − Q_m A x_i)‖² / 2σ² − Σ_j log s_j(Q_m) + const,   v = Π_n B y,

    over the feasible locations m of smallest rank (``Q_m = Π_m B``). With ``B=None`` this is the
    Euclidean softmax of `eq-lemmse` over noiseless training-measurement patches.

    Sub-lattice form (`course/07_networks_vs_theory.md`, `eq-sublattice`): with ``stride = s > 1``
    output pixel n of class ``c = (i mod s, j mod s)`` averages only over locations ``m ≡ n (mod s)``,
    and with ``supports = {(a, b): (P, P) bool}`` the patches are restricted to the class window
    ``R_c`` (``Π^{R_c}``, the weights above computed on the restricted patch). ``s`` must divide H and
    W; ``stride=1, supports=None`` is the estimator above exactly.

    Args:
        y: (B, C, H, W) raw measurements ``A x + e``.
        train: (N, C, H, W) tensor or an iterable of such tensors (streamed).
        sigma: float or (B,) tensor, noise standard deviation.
        patch_size: odd P ≤ min(H, W), the receptive field.
        A, B: forward operator and pre-inverse (``None``: identity).
        chunk_size: training images per streamed chunk (default from ``max_memory`` bytes).
        return_diagnostics: also return a :class:`~lemmse_lite.diagnostics.Diagnostics`.
        top_k: number of largest weights kept in the diagnostics.
        stride, supports: the sub-lattice form (see above).
        engine: block sizes of the engine (default from the device).
    Returns:
        (B, C, H, W) estimate, or ``(estimate, Diagnostics)``.
    """
    _check_le_args(chunk_size, return_diagnostics, top_k, max_memory)
    y, dtype, A, B, sig = _setup(y, sigma, A, B)
    engine = check_engine(engine, y.device)
    bsz, c, h, w = y.shape
    check_patch_size(patch_size, h, w)
    classes = pixel_classes(h, w, stride, supports, patch_size, y.device)
    chunk_size = chunk_size or default_chunk_size(h * w, c * patch_size**2, max_memory)
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

    blocks = PatchBlocks(plans, A, B, patch_size, precise, h * w)
    scores = ScoreStream(train, (c, h, w), chunk_size, y.device, dtype, blocks, engine)
    state = SoftmaxState(len(v), c, y.device, dtype, top_k=top_k if return_diagnostics else 0)
    n_train = scores.run(state)
    out = state.result().reshape(bsz, h, w, c).permute(0, 3, 1, 2).contiguous()
    if not return_diagnostics:
        return out
    second = scores if is_reiterable(train) else None
    return out, build_diagnostics(state, n_train, n_locations, kept_rank, (bsz, h, w), second)
