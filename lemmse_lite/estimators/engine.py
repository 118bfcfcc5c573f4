"""The one streaming softmax engine shared by the three estimators (`course/05_closed_form.md`,
`eq-attention`).

Every estimator of the package is a softmax-weighted average of values over keys::

    out[q] = Σ_k exp(s[q, k]) v[k] / Σ_k exp(s[q, k]),      s[q, k] = q_aug[q] · k_aug[k]

with *augmented* vectors that fold the per-key bias ``−‖k‖²/2``, the noise temperature ``1/σ²``
and any per-query constant into one matrix product (the attention view, `eq-attention`)::

    q_aug = [q/σ², 1/σ², c_q],   k_aug = [k, −‖k‖²/2, 1],   so  s = (q·k − ‖k‖²/2)/σ² + c_q.

Keys arrive in chunks (the training set is streamed), so the softmax is computed online: a running
maximum ``m``, denominator ``d = Σ exp(s − m)`` and numerator ``Σ exp(s − m) v`` per query, rescaled
when ``m`` grows. Memory is set by the block sizes, never by the number of keys.

How the scores are blocked is an explicit :class:`EngineConfig` passed down by the caller (no
module state): :func:`default_engine` picks the CPU or CUDA defaults from the device. Optional
trackers give the diagnostics of `course/08_generalisation.md` (`eq-n-eff`): the arg-max key and the
running top-k scores; any other :class:`ScoreConsumer` (the N_eff passes of
:mod:`lemmse_lite.estimators.diagnostics`) can be fed the same :class:`ScoreBlock` s.

:class:`SoftmaxState` is the package's one online softmax: the estimators' passes, the rescored
MMSE / E-MMSE, a fused kernel's result and the distributed ranks' results all go through its
:meth:`~SoftmaxState.running_max` and :meth:`~SoftmaxState.accumulate`. The engine's worker threads
run single-threaded ops inside :func:`single_threaded`, which restores the caller's thread count.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F

from ..checks import check_positive_int


@dataclass(frozen=True)
class EngineConfig:
    """How :func:`stream_scores` blocks the score matrix.

    ``query_block × key_block`` scores are computed and consumed at a time. On CPU, cache-sized
    blocks keep ``exp`` fast (it runs several times faster on a block that stays in cache than on a
    large freshly allocated array); on a GPU small blocks make the run launch-bound. ``fused``
    (CUDA, float32, plain softmax without top-k): use PyTorch's fused memory-efficient attention
    kernel (never the float16 flash kernel); a failure falls back to the blocked path for that
    block, with a warning, and changes nothing else.

    ``workers`` (CPU): the query slices of ``query_block`` rows are handed out to this many threads
    (``None``: ``torch.get_num_threads()``), each running its operations single-threaded. Every op
    of the online softmax on one block is otherwise its own parallel region, whose barrier waits
    for a descheduled thread when the cores are shared: up to ~10x slower under load. The result
    does not depend on ``workers`` (each query is processed by one thread, keys in order)."""

    query_block: int = 256
    key_block: int = 4096
    fused: bool = False
    workers: int | None = None

    def __post_init__(self):
        check_positive_int(self.query_block, "query_block")
        check_positive_int(self.key_block, "key_block")
        check_positive_int(self.workers, "workers", allow_none=True)
        if not isinstance(self.fused, bool):
            raise TypeError(f"fused must be a bool, got {type(self.fused).__name__}")


# The defaults, in one place (the only tuning knobs of the engine).
CPU_ENGINE = EngineConfig(query_block=256, key_block=4096, fused=False)
CUDA_ENGINE = EngineConfig(query_block=16384, key_block=16384, fused=False)


def default_engine(device) -> EngineConfig:
    """The default :class:`EngineConfig` for ``device`` (a ``torch.device`` or string):
    :data:`CPU_ENGINE`, or on CUDA :data:`CUDA_ENGINE` with ``fused`` switched on when the
    environment variable ``LEMMSE_FUSED=1`` is set (read here, each time a default is built; off by
    default until the fused kernel is measured on a GPU against the float64 reference —
    ``benchmarks/gpu.py`` checks it)."""
    if torch.device(device).type != "cuda":
        return CPU_ENGINE
    fused = os.environ.get("LEMMSE_FUSED", "0") == "1"
    return EngineConfig(CUDA_ENGINE.query_block, CUDA_ENGINE.key_block, fused)


def check_engine(engine, device) -> EngineConfig:
    """``None`` -> :func:`default_engine`; an :class:`EngineConfig` as is; anything else refused."""
    if engine is None:
        return default_engine(device)
    if not isinstance(engine, EngineConfig):
        raise TypeError(f"engine must be an EngineConfig or None, got {type(engine).__name__}")
    return engine


def augment_queries(q: torch.Tensor, inv_var: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(Q, D), (Q,), (Q,) -> (Q, D + 2): ``[q/σ², 1/σ², c_q]``."""
    return torch.cat([q * inv_var[:, None], inv_var[:, None], offset[:, None]], dim=1)


def augment_keys(k: torch.Tensor) -> torch.Tensor:
    """(K, D) -> (K, D + 2): ``[k, −‖k‖²/2, 1]``."""
    ones = torch.ones(len(k), 1, dtype=k.dtype, device=k.device)
    return torch.cat([k, -0.5 * (k * k).sum(1, keepdim=True), ones], dim=1)


class ScoreBlock(NamedTuple):
    """One block of work for :func:`stream_scores`, as every block source yields it:
    ``rows`` (slice or (q,) long) maps the local queries to the consumer's query indices;
    ``q_aug`` (q, E) and ``k_aug`` (K, E) the augmented queries and keys (`eq-attention`);
    ``values`` (K, V); ``key_ids`` (K,) long or ``None``; ``key_bias`` (K,) or ``None``, a per-key
    bias added to every row of the product."""

    rows: torch.Tensor | slice
    q_aug: torch.Tensor
    k_aug: torch.Tensor
    values: torch.Tensor
    key_ids: torch.Tensor | None = None
    key_bias: torch.Tensor | None = None


class ScoreConsumer(Protocol):
    """What :func:`stream_scores` feeds: ``update(rows, scores (q, k), values_t (V, k), key_ids
    (k,) or None)`` once per score block (``scores`` may be overwritten). ``row_parallel``: True
    when ``update`` writes only its ``rows``, so disjoint row slices may run in several threads."""

    row_parallel: bool

    def update(self, rows, scores: torch.Tensor, values_t: torch.Tensor, key_ids: torch.Tensor | None) -> None:
        ...


class SoftmaxState:
    """The one online softmax of the package (`eq-attention`) over a stream of keys, for
    ``n_queries`` queries with ``value_dim`` values: per query the running maximum ``m`` (Q,),
    denominator ``d = Σ exp(s − m)`` (Q,) and numerator ``num = Σ exp(s − m) v`` (Q, V), in
    ``dtype`` (float64 for the rescored image estimators).

    Three ways in, one merge (:meth:`running_max` then :meth:`accumulate`): :meth:`update` a block
    of raw scores; :meth:`merge` a finished softmax (a fused kernel's, another shard's); a caller
    that computes its own block weights (the rescored MMSE / E-MMSE) calls the two steps itself.
    ``top_k > 0`` keeps the ``top_k`` largest scores and their key ids per query (source map,
    top-k diagnostics). Every method touches only the given rows (``row_parallel``)."""

    row_parallel = True

    def __init__(self, n_queries: int, value_dim: int, device, dtype=torch.float32, top_k: int = 0):
        self.m = torch.full((n_queries,), float("-inf"), device=device, dtype=dtype)
        self.d = torch.zeros(n_queries, device=device, dtype=dtype)
        self.num = torch.zeros(n_queries, value_dim, device=device, dtype=dtype)
        self.top_k = top_k
        if top_k:
            self.top_scores = torch.full((n_queries, top_k), float("-inf"), device=device, dtype=dtype)
            self.top_ids = torch.full((n_queries, top_k), -1, device=device, dtype=torch.long)

    def running_max(self, rows, m_blk: torch.Tensor, fresh: bool = False):
        """The new running maximum of ``rows`` with a block's maximum ``m_blk`` (q,), and ``alpha =
        exp(m_old − m_new)`` (q,) that rescales their running sums: 0 for a row with no key yet
        (also when the block has none: −inf − (−inf)); ``fresh`` (every row meets its first
        block): ``(m_blk, None)``."""
        if fresh:
            return m_blk, None
        m_old = self.m[rows]
        m_new = torch.maximum(m_old, m_blk)
        return m_new, torch.exp(m_old - m_new).nan_to_num_(0.0)

    def accumulate(self, rows, m_new, alpha, d_blk: torch.Tensor, num_blk: torch.Tensor):
        """The merge step: ``d = α d + d_blk``, ``num = α num + num_blk``, ``m = m_new`` on ``rows``,
        the block's sums ``d_blk`` (q,) and ``num_blk`` (q, V) taken relative to ``m_new``
        (``alpha=None``: a fresh block, nothing to rescale; the block sums may be overwritten)."""
        if alpha is not None:
            d_blk = d_blk.add_(self.d[rows] * alpha)
            num_blk = num_blk.add_(self.num[rows] * alpha[:, None])
        self.d[rows], self.num[rows], self.m[rows] = d_blk, num_blk, m_new

    def update(self, rows, scores: torch.Tensor, values_t: torch.Tensor, key_ids: torch.Tensor | None):
        """Merge one block. ``rows``: slice or (q,) long indices of the queries; ``scores`` (q, k)
        is consumed (overwritten in place); ``values_t`` (V, k), the values transposed;
        ``key_ids`` (k,) for top-k."""
        if self.top_k:
            self._update_top(rows, scores, key_ids)
        m_new, alpha = self.running_max(rows, scores.amax(dim=1))
        # clamp: exp of very negative scores returns subnormals, which run ~10x slower on x86;
        # weights below e^-80 relative to the maximum are irrelevant at any N we can stream
        scores.sub_(m_new[:, None]).clamp_(min=-80.0).exp_()
        # (V, k) @ (k, q): a skinny product that BLAS runs as fast as a matrix-vector product,
        # unlike (q, k) @ (k, V) with V = 2 or 3 (measured ~5x slower on CPU)
        self.accumulate(rows, m_new, alpha, scores.sum(dim=1), (values_t @ scores.T).T)

    def merge(self, rows, out: torch.Tensor, lse: torch.Tensor):
        """Merge a finished softmax over a group of keys: normalised averages ``out`` (q, V) and
        log-normalisers ``lse`` (q,), as returned by a fused attention kernel or another shard."""
        m_new, alpha = self.running_max(rows, lse)
        beta = torch.exp(lse - m_new).nan_to_num_(0.0)
        self.accumulate(rows, m_new, alpha, beta, out * beta[:, None])

    def _update_top(self, rows, scores, key_ids):
        k = min(self.top_k, scores.shape[1])
        s, idx = scores.topk(k, dim=1)
        all_s = torch.cat([self.top_scores[rows], s], dim=1)
        all_i = torch.cat([self.top_ids[rows], key_ids[idx]], dim=1)
        best, order = all_s.topk(self.top_k, dim=1)
        self.top_scores[rows] = best
        self.top_ids[rows] = all_i.gather(1, order)

    def log_normaliser(self) -> torch.Tensor:
        """``log Σ_k exp(s[q, k])`` per query, (Q,)."""
        return self.m + torch.log(self.d)

    def result(self) -> torch.Tensor:
        """The weighted averages, (Q, V)."""
        return self.num / self.d[:, None]


class _ThreadBudget:
    """Torch's intra-op thread count lowered while at least one :func:`single_threaded` block runs,
    restored when the last one exits: counted under a lock, so two threads running estimators at
    once restore the count they found (a save/restore per call would leave the lower count when
    their blocks interleave)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.saved = None

    @contextmanager
    def single_threaded(self) -> Iterator[None]:
        with self.lock:
            if self.active == 0:
                self.saved = torch.get_num_threads()
                torch.set_num_threads(1)
            self.active += 1
        try:
            yield
        finally:
            with self.lock:
                self.active -= 1
                if self.active == 0:
                    torch.set_num_threads(self.saved)


_THREADS = _ThreadBudget()


def single_threaded():
    """Context manager: torch ops single-threaded inside (the engine's worker threads each run one
    query slice), the caller's thread count restored on exit, also on an error. The count is
    process-wide while the block runs; it is the only place the package changes it."""
    return _THREADS.single_threaded()


def fused_attention(q_aug: torch.Tensor, k_aug: torch.Tensor, values: torch.Tensor):
    """Softmax attention ``softmax(q_aug k_augᵀ) values`` and its log-normaliser with PyTorch's
    fused memory-efficient kernel in float32 (CUDA): (Q, E), (K, E), (K, V) -> (Q, V), (Q,).
    Feature dimensions are zero-padded to a multiple of 8 (the kernel's alignment)."""
    nq, e = q_aug.shape
    nv = values.shape[1]
    width = -(-max(e, nv) // 8) * 8
    q = F.pad(q_aug, (0, width - e))[None, None]
    k = F.pad(k_aug, (0, width - e))[None, None]
    v = F.pad(values, (0, width - nv))[None, None]
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, False, scale=1.0)[:2]
    return out[0, 0, :, :nv], lse[0, 0, :nq]


def _fused_ok(consumer, q_aug, values, engine: EngineConfig) -> bool:
    return (engine.fused and q_aug.is_cuda and isinstance(consumer, SoftmaxState) and not consumer.top_k
            and q_aug.dtype == torch.float32 and max(q_aug.shape[1], values.shape[1]) <= 128)


def stream_scores(consumer: ScoreConsumer, rows: torch.Tensor | slice, q_aug: torch.Tensor, k_aug: torch.Tensor,
                  values: torch.Tensor, key_ids: torch.Tensor | None = None,
                  key_bias: torch.Tensor | None = None, engine: EngineConfig | None = None):
    """Feed ``consumer.update`` every score block ``q_aug[qb] @ k_aug[kb].T`` (plus ``key_bias[kb]``
    (K,) on every row when given: a per-key bias folded into the product by ``addmm``, so that
    plain keys need no augmented copy).

    ``rows`` maps local query positions to the consumer's query indices (a slice ``start:stop`` or
    a long tensor); ``values`` is (K, V). Query slices are the outer loop: on CPU they are shared
    out to ``engine.workers`` threads running single-threaded ops when the consumer allows it
    (``row_parallel``), each worker reusing one score buffer (fresh large allocations are slow on
    CPU). ``engine``: block sizes, workers and the fused switch (default: :func:`default_engine`)."""
    engine = check_engine(engine, q_aug.device)
    if key_bias is None and _fused_ok(consumer, q_aug, values, engine):
        try:
            out, lse = fused_attention(q_aug, k_aug, values)
        except RuntimeError as err:  # kernel unavailable for this shape/GPU: blocked path, this call
            warnings.warn(f"fused attention unavailable ({err}); using the blocked engine for this block")
        else:
            consumer.merge(rows, out, lse)
            return
    slices = iter(range(0, q_aug.shape[0], engine.query_block))
    lock = threading.Lock()

    def next_slice():
        with lock:
            return next(slices, None)

    def work():
        _score_slices(consumer, rows, q_aug, k_aug, values, key_ids, key_bias, engine, next_slice)

    workers = min(engine.workers or torch.get_num_threads(), -(-q_aug.shape[0] // engine.query_block))
    if q_aug.is_cuda or workers == 1 or not consumer.row_parallel:
        work()
        return
    with single_threaded(), ThreadPoolExecutor(workers) as pool:
        for job in [pool.submit(work) for _ in range(workers)]:
            job.result()


def _score_slices(consumer, rows, q_aug, k_aug, values, key_ids, key_bias, engine: EngineConfig, next_slice):
    """One worker of :func:`stream_scores`: take query slices ``q0`` from ``next_slice()`` until it
    returns ``None``; score each against every key block in order into one reused buffer (scores
    in ``q_aug``'s dtype, rounded to ``values``' dtype when that is narrower)."""
    nq, nk = q_aug.shape[0], k_aug.shape[0]
    query_block, key_block = engine.query_block, engine.key_block
    size = min(query_block, nq) * min(key_block, nk)
    buf = torch.empty(size, dtype=q_aug.dtype, device=q_aug.device)
    # wider scores than values (float64 dot products for float32 LE-MMSE): rounded once, here
    wider = q_aug.dtype.itemsize > values.dtype.itemsize
    narrow = torch.empty(size, dtype=values.dtype, device=q_aug.device) if wider else None
    for q0 in iter(next_slice, None):
        q1 = min(q0 + query_block, nq)
        r = slice(rows.start + q0, rows.start + q1) if isinstance(rows, slice) else rows[q0:q1]
        qa = _part(q_aug, q0, q1)
        for k0 in range(0, nk, key_block):
            k1 = min(k0 + key_block, nk)
            ids = None if key_ids is None else _part(key_ids, k0, k1)
            out = buf[: (q1 - q0) * (k1 - k0)].view(q1 - q0, k1 - k0)
            if key_bias is None:
                scores = torch.mm(qa, _part(k_aug, k0, k1).T, out=out)
            else:
                scores = torch.addmm(_part(key_bias, k0, k1), qa, _part(k_aug, k0, k1).T, out=out)
            if narrow is not None:
                scores = narrow[: out.numel()].view_as(out).copy_(scores)
            consumer.update(r, scores, _part(values, k0, k1).T, ids)


def _part(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """``t[a:b]``, or ``t`` itself when that is all of it (one tensor op fewer per block: a call
    of a small problem is made of such ops)."""
    return t if a == 0 and b == t.shape[0] else t[a:b]
