"""The image-level estimators: the ideal MMSE (`course/01_ideal_mmse.md`, `eq-mmse`, `eq-mmse-b`)
and the equivariant MMSE (`course/03_equivariance.md`, `eq-emmse`, `eq-emmse-b`).

Keys are whole training measurements (against every shift of the query for the E-MMSE), values the
training images. Whole-image distances cancel badly in float32, so every pair is screened with
float32 scores and the log-weights of the keys that a rigorous bound of the float32 rounding
(:func:`rounding_slack`) cannot rule out are computed in float64 (:class:`_ImageSoftmax`), merged
by the engine's one online softmax (:class:`~lemmse_lite.estimators.engine.SoftmaxState`).
"""

from __future__ import annotations

import math
import warnings

import torch

from ..checks import all_finite
from ..operators import Denoising, Diagonal, FourierMultiplier
from .engine import EngineConfig, ScoreBlock, SoftmaxState, check_engine
from .estimator_inputs import RANGE_TOL, check_inputs, dense_operator, is_structured
from .streaming import (
    DEFAULT_MAX_MEMORY,
    ScoreStream,
    check_chunk_size,
    default_chunk_size,
    non_finite_error,
)

__all__ = ["PAIR_COST", "RESCORE_MARGIN", "centre_on_first_key", "equivariant_mmse", "mmse", "rounding_slack"]


# ----------------------------------------------------------------------------- the centring rule

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
    :class:`~lemmse_lite.estimators.engine.SoftmaxState` (Q queries, n values)."""

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
    y, dtype, A, B, sig = check_inputs(y, sigma, A, B)
    engine = check_engine(engine, y.device)
    bsz, c, h, w = y.shape
    n = c * h * w
    Bop = B if is_structured(B) else dense_operator(B, (c, h, w))
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
