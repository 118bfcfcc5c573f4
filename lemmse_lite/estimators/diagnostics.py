"""Diagnostics of one LE-MMSE call (`course/08_generalisation.md`, `eq-log-density`, `eq-n-eff`).

* **log-density** of the patch mixture at the query, in nats (`eq-log-density`)::

      log( (1/(N·L)) Σ_{kept (i, m)} p_{i,m}(v) ),
      log p_{i,m}(v) = −‖Q_m⁺(v − μ_{i,m})‖²/(2σ²) − Σ_j log s_j(Q_m) − (r/2) log(2πσ²),

  with L the number of locations m (H·W, or the class size of the sub-lattice form);
* **source map**: the training image and location of the largest weight;
* **effective number of patches** ``N_eff(τ)`` (`eq-n-eff`): the fewest (i, m) whose largest
  weights sum to at least ``τ − 1e-6``; ``τ = 1`` counts the non-zero float weights.

The first two come from the estimate's own softmax pass; N_eff needs the final normaliser, so
:meth:`Diagnostics.effective_patches` streams the training set again, through the same engine and
the same score blocks (so every score is bit-identical across passes). Only the weights above a
floor can matter (below), so every pass first keeps those and works on them alone:

1. a histogram pass: per query, the kept scores fall into ``N_BINS`` arithmetic bins
   ``⌊(ref − s)·scale⌋`` below the largest one (no search), accumulating the mass (float32 per
   block, float64 across blocks) and the count per bin; the bin where the sorted cumulative mass
   first reaches the target is the *critical bin* (the mass and count above it are then known).
   The same pass also gathers the kept scores of every query that has at most a collection budget
   of them: those queries are counted exactly by sorting, with no further pass;
2. for the other queries, a collection pass: the scores of each query's critical bin are gathered
   and their weights sorted exactly, which gives the count. A critical bin holding too many weights
   to gather (near-ties) is split by one more histogram pass inside it; after ``MAX_LEVELS`` levels
   its weights agree to about 1e-9 relative and the count is the gap divided by their mean weight.

One pass when the weights are concentrated (few above the floor), two in the usual spread case.

The floor: the K-th largest weight is at least ``(1 − target)/n_keys`` (the weights below it sum
to more than ``1 − target`` and are at most ``n_keys``), so the critical bin always lies above
``log((1 − target)/n_keys)``; the weights below it (one nat lower, for round-off) are never counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .engine import ScoreConsumer, SoftmaxState

NEFF_SLACK = 1e-6  # N_eff(τ): fewest weights summing to ≥ τ − NEFF_SLACK (`eq-n-eff`)
N_BINS = 256  # arithmetic log-weight bins per histogram level
MAX_LEVELS = 3  # histogram levels before a full critical bin is treated as ties
COLLECT_BUDGET = 2**23  # log-weights gathered by one collection pass, at most (about)
MIN_COLLECT = 256  # ... but always up to this many per query
PROGRESS_DELAY = 3.0  # seconds before a pass shows a progress bar


class ScoreSource(Protocol):
    """Something that streams every score block of an estimate again to a consumer (the
    estimate's :class:`~lemmse_lite.estimators.streaming.ScoreStream`): ``run(consumer, progress)`` returns
    the number of training images."""

    def run(self, consumer: ScoreConsumer, progress: Callable[[int], None] | None = None) -> int:
        ...


def log_density_constant(rank: int, sigma: torch.Tensor) -> torch.Tensor:
    """The Gaussian normalisation of a rank-``r`` patch law (`eq-log-density`): ``−(r/2) log(2πσ²)``
    per query; σ: (Q,) -> (Q,). Equal over a kept stratum, so it leaves the weights unchanged."""
    return -0.5 * rank * torch.log(2 * math.pi * sigma**2)


def log_density(log_norm: torch.Tensor, n_train: int, n_locations: torch.Tensor) -> torch.Tensor:
    """``log((1/(N·L)) Σ p)`` from the engine's log-normaliser ``log Σ p`` (Q,) (the offsets hold
    every term of ``log p``) and the number L (Q,) of locations each query averages over."""
    return log_norm - torch.log(n_train * n_locations.to(log_norm.dtype))


@dataclass
class Diagnostics:
    """Diagnostics of one :func:`lemmse_lite.estimators.le_mmse` call; maps have shape (B, H, W).

    ``log_density``: log of the patch-mixture density at the query, nats (`eq-log-density`);
    ``source_image``/``source_location``: training image and flat location of the largest weight;
    ``top_weights``/``top_images``/``top_locations``: (B, H, W, k) for the k largest weights;
    ``rank``: rank of the kept stratum. :meth:`effective_patches` streams the training set again."""

    log_density: torch.Tensor
    source_image: torch.Tensor
    source_location: torch.Tensor
    top_weights: torch.Tensor
    top_images: torch.Tensor
    top_locations: torch.Tensor
    rank: torch.Tensor
    n_train: int
    _scores: ScoreSource | None = field(default=None, repr=False)
    _log_norm: torch.Tensor | None = field(default=None, repr=False)
    _top_log_weight: torch.Tensor | None = field(default=None, repr=False)
    _n_keys: torch.Tensor | None = field(default=None, repr=False)

    def effective_patches(self, tau: float = 0.99) -> torch.Tensor:
        """``N_eff(τ)`` per output pixel (B, H, W), long: the fewest (i, m) whose largest weights sum
        to at least ``τ − 1e-6``; ``τ = 1``: the number of non-zero weights (`eq-n-eff`)."""
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {tau!r}")
        if self._scores is None:
            raise ValueError("effective_patches needs a re-iterable training set (a tensor or a list), "
                             "not a one-shot iterator")
        n_eff = effective_patches_pass(self._scores.run, self._log_norm, self._top_log_weight, self._n_keys, float(tau),
                                       self.n_train)
        return n_eff.reshape(self.rank.shape)


def build_diagnostics(state: SoftmaxState, n_train: int, n_locations: torch.Tensor, kept_rank: torch.Tensor,
                      shape, scores: ScoreSource | None) -> Diagnostics:
    """:class:`Diagnostics` from a finished :class:`~lemmse_lite.estimators.engine.SoftmaxState`
    with top-k tracking (Q = B·H·W queries).

    ``n_locations`` (Q,): locations per query's class; ``kept_rank`` (Q,); ``shape`` = (B, H, W);
    ``scores``: the estimate's :class:`~lemmse_lite.estimators.streaming.ScoreStream`, streamed again by
    :meth:`Diagnostics.effective_patches` (``None``: a one-shot training set)."""
    hw = shape[1] * shape[2]
    log_norm = state.log_normaliser()
    ids = state.top_ids
    return Diagnostics(
        log_density=log_density(log_norm, n_train, n_locations).reshape(shape),
        source_image=(ids[:, 0] // hw).reshape(shape),
        source_location=(ids[:, 0] % hw).reshape(shape),
        top_weights=torch.exp(state.top_scores - log_norm[:, None]).reshape(*shape, -1),
        top_images=torch.where(ids >= 0, ids // hw, -1).reshape(*shape, -1),
        top_locations=torch.where(ids >= 0, ids % hw, -1).reshape(*shape, -1),
        rank=kept_rank.reshape(shape),
        n_train=n_train,
        _scores=scores,
        _log_norm=log_norm,
        _top_log_weight=state.top_scores[:, 0] - log_norm,
        _n_keys=n_train * n_locations.double(),
    )


# ----------------------------------------------------------------------------- N_eff passes

class _Progress:
    """``progress(n)`` for one pass over ``total`` training images: a tqdm bar that appears only
    when the pass lasts more than :data:`PROGRESS_DELAY` seconds."""

    def __init__(self, total: int, desc: str):
        self.bar = tqdm(total=total, desc=desc, unit="img", delay=PROGRESS_DELAY, leave=False)

    def __call__(self, n_seen: int):
        self.bar.update(n_seen - self.bar.n)

    def close(self):
        self.bar.close()


def _run_pass(run, consumer, total: int, desc: str):
    progress = _Progress(total, desc)
    try:
        run(consumer, progress)
    finally:
        progress.close()
    return consumer


class NonZeroCount:
    """Consumer counting, per query, the weights ``exp(s − log Σ exp s)`` that are non-zero floats.
    ``update`` touches only its rows, so the engine may feed disjoint row slices from several threads."""

    row_parallel = True

    def __init__(self, log_norm: torch.Tensor):
        self.log_norm = log_norm
        self.count = torch.zeros(len(log_norm), dtype=torch.long, device=log_norm.device)

    def update(self, rows, scores, values=None, key_ids=None):
        x = scores.sub_(self.log_norm[rows, None])
        # exp(x) is a normal float above log(tiny) and 0 below log(smallest subnormal) − 1: only the
        # band in between is evaluated (subnormal results are ~10x slower on x86)
        info = torch.finfo(x.dtype)
        normal, zero = math.log(info.tiny), math.log(info.tiny * info.eps) - 1.0
        count = (x > normal).sum(1)
        band = (x <= normal) & (x > zero)
        if band.any():
            count += (torch.where(band, x, torch.full_like(x, 2 * zero)).exp_() > 0).sum(1)
        self.count[rows] += count


HIST, COLLECT, DONE = 0, 1, 2  # what the next pass does for a query


@dataclass
class _Bracket:
    """Per query (Q): the nested bins chosen so far, in score space. Level ℓ puts score ``s`` in bin
    ``⌊clamp((ref[:, ℓ] − s)·scale[:, ℓ], 0, N_BINS − 1)⌋``; a weight is *inside* the bracket when it
    lies in bin ``chosen[:, ℓ]`` at every level ``ℓ < depth`` (every pass evaluates the same float
    formula on the same scores, so a weight is always on the same side). ``above_mass/above_count``:
    the weights before the bracket (larger), ``bin_mass/bin_count`` inside it; ``mode``: HIST,
    COLLECT (gather and sort the inside weights) or DONE; ``result``: N_eff when DONE."""

    ref: torch.Tensor
    scale: torch.Tensor
    chosen: torch.Tensor
    depth: torch.Tensor
    above_mass: torch.Tensor
    above_count: torch.Tensor
    bin_mass: torch.Tensor
    bin_count: torch.Tensor
    mode: torch.Tensor
    result: torch.Tensor


def _flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Row-major positions (n,) long of the true entries of a contiguous bool ``mask``. On the CPU
    through NumPy: ``np.flatnonzero`` takes 1.0 ms on a 256 × 4096 block with 21 % true entries
    where ``torch.nonzero`` takes 4.3 (one thread), and it was the largest cost of an N_eff pass."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask.view(-1)).view(-1)


def _at(table: torch.Tensor, rows, col: torch.Tensor) -> torch.Tensor:
    """``table[rows[q], col[q]]`` for rows a slice or a long tensor."""
    return table[rows].gather(1, col[:, None]).squeeze(1)


class NeffPass:
    """Consumer of one N_eff pass: for HIST queries the mass and count per bin of the next level of
    the kept weights (inside the bracket; at level 0, above the floor); for COLLECT queries the
    inside scores themselves. ``cap > 0`` (the first pass): also gather the kept scores of every
    query while it has at most ``cap`` of them (``n_kept`` counts them). ``update`` writes only its
    rows (and appends to lists), so the engine may feed disjoint row slices from several threads;
    the collected scores are sorted afterwards, so their order does not matter."""

    row_parallel = True

    def __init__(self, log_norm: torch.Tensor, br: _Bracket, cap: int = 0):
        self.log_norm, self.br, self.cap = log_norm, br, cap
        q, dev = len(log_norm), log_norm.device
        self.mass = torch.zeros(q, N_BINS, dtype=torch.float64, device=dev)
        self.count = torch.zeros(q, N_BINS, dtype=torch.long, device=dev)
        self.n_kept = torch.zeros(q, dtype=torch.long, device=dev)
        # (rows, scores) pairs, appended as ONE tuple: two separate appends from two worker
        # threads could interleave and pair one thread's rows with the other's scores
        self.collected = []
        self.max_depth = int(br.depth.max())
        # per level: inside ⇔ lo ≤ position < hi (the clamped floor equals chosen); ±inf where free.
        # Level 0 keeps only positions < N_BINS (above the floor), so its last bin ends there; a
        # deeper level's last bin is open, to keep a position that round-off put at N_BINS
        inf = torch.tensor(float("inf"), dtype=br.ref.dtype, device=dev)
        chosen = br.chosen.to(br.ref.dtype)
        levels = torch.arange(MAX_LEVELS + 1, device=dev)[None]
        fixed = levels < br.depth[:, None]
        open_end = (br.chosen == N_BINS - 1) & (levels > 0)
        self.lo = torch.where(fixed & (br.chosen > 0), chosen, -inf)
        self.hi = torch.where(fixed & ~open_end, chosen + 1, inf)

    def update(self, rows, scores, values=None, key_ids=None):
        """One (q, k) block. Every weight a pass keeps lies in its query's level-0 band (above the
        floor; at depth >= 1 inside the chosen level-0 bin), so one or two comparisons screen the
        block (two bins loose) and every later op runs on the survivors only, a flat list of
        entries (block row ``r``, score ``s``) with per-row quantities spread by ``index_select``."""
        mode = self.br.mode[rows]
        if not bool((mode != DONE).any()):
            return
        if isinstance(rows, slice):
            rows = torch.arange(rows.start, rows.stop, device=scores.device)
        lower, upper = self._band(rows, mode)
        mask = scores > lower[:, None]
        if upper is not None:
            mask &= scores < upper[:, None]
        flat = _flat_nonzero(mask)  # row-major positions of the survivors
        k = scores.shape[1]
        r = flat >> (k.bit_length() - 1) if k & (k - 1) == 0 else flat.div(k, rounding_mode="floor")  # their rows
        s = scores.view(-1).index_select(0, flat)
        inside = self._inside(rows, r, s)
        hist, coll = mode == HIST, mode == COLLECT
        if bool(hist.all()):  # the common first pass: no selection
            self._histogram(rows, r, s, inside)
        elif bool(coll.all()):  # the common last pass
            self._collect(rows, r, s, inside)
        else:
            for m, step in ((hist, self._histogram), (coll, self._collect)):
                if bool(m.any()):
                    on = m.index_select(0, r)
                    step(rows, r[on], s[on], None if inside is None else inside[on])

    def _band(self, rows, mode):
        """(q,) score bounds ``lower < s < upper`` of the rows' level-0 bands, two bins loose
        (``upper`` None when every row is at level 0); DONE rows get an empty band."""
        ref0, scale0, depth = self.br.ref[rows, 0], self.br.scale[rows, 0], self.br.depth[rows]
        hi = torch.where(depth > 0, self.hi[rows, 0], torch.full_like(ref0, N_BINS))
        lower = ref0 - (hi + 2) / scale0
        lower = torch.where(mode == DONE, torch.full_like(lower, float("inf")), lower)
        if not bool((depth > 0).any()):
            return lower, None
        return lower, ref0 - (self.lo[rows, 0] - 2) / scale0

    def _spread(self, table, rows, col, r):
        """``table[rows[r], col[r]]`` per entry: the (q,) per-row values first, then spread."""
        return table[rows, col].index_select(0, r) if isinstance(col, int) else _at(table, rows, col).index_select(0, r)

    def _inside(self, rows, r, s):
        """Entries (block row ``r``, score ``s``), (n,) -> (n,) bool inside the bracket, or None
        before any level. The position of a score is ``(ref − s)·scale`` (its bin: the clamped
        floor), the same float formula in every pass, so a weight is always on the same side."""
        inside = None
        for lvl in range(self.max_depth):
            t = (self._spread(self.br.ref, rows, lvl, r) - s).mul_(self._spread(self.br.scale, rows, lvl, r))
            ok = (t >= self._spread(self.lo, rows, lvl, r)) & (t < self._spread(self.hi, rows, lvl, r))
            inside = ok if inside is None else inside & ok
        return inside

    def gathered(self):
        """The collected (rows (n,) int32, scores (n,)), concatenated."""
        return torch.cat([w for w, _ in self.collected]), torch.cat([x for _, x in self.collected])

    def _collect(self, rows, r, s, inside):
        if inside is not None:
            r, s = r[inside], s[inside]
        self.collected.append((rows.index_select(0, r).to(torch.int32), s))

    def _histogram(self, rows, r, s, inside):
        """Bin the kept weights among the entries (block row ``r``, score ``s``), each (n,), of a
        block of queries ``rows`` (q,): at level 0 those above the floor, deeper those inside the
        bracket (a deeper level's last bin is open). An entry not kept goes to one extra bin,
        dropped: one ``where`` instead of a selection per array."""
        n_rows, width = len(rows), N_BINS + 1
        depth = self.br.depth[rows]
        t = (self._spread(self.br.ref, rows, depth, r) - s).mul_(self._spread(self.br.scale, rows, depth, r))
        keep = t < N_BINS
        if inside is not None:
            keep = inside & (keep | (depth > 0).index_select(0, r))
        idx = torch.where(keep, t.clamp_(0, N_BINS - 1).long(), N_BINS).add_(r * width)
        w = (s - self.log_norm[rows].index_select(0, r)).exp_()  # at most two bins below the floor
        n = n_rows * width
        mass = torch.zeros(n, dtype=w.dtype, device=w.device).index_add_(0, idx, w).view(n_rows, width)
        self.mass.index_add_(0, rows, mass[:, :N_BINS].double())
        count = torch.bincount(idx, minlength=n).view(n_rows, width)[:, :N_BINS]
        self.count.index_add_(0, rows, count)
        if self.cap:
            self.n_kept.index_add_(0, rows, count.sum(1))
            fits = keep & (self.n_kept[rows] <= self.cap).index_select(0, r)
            self.collected.append((rows.index_select(0, r[fits]).to(torch.int32), s[fits]))


def _collected_early(br: _Bracket, consumer: NeffPass):
    """After the first pass: every query whose kept weights were all gathered (``n_kept ≤ cap``)
    becomes a COLLECT query whose bracket is everything above the floor; the scores gathered for
    the other queries are dropped."""
    fits = consumer.n_kept <= consumer.cap
    br.bin_count[fits] = consumer.n_kept[fits]
    br.mode[fits] = COLLECT
    if consumer.collected:
        who, s = consumer.gathered()
        mine = fits[who.long()]
        consumer.collected = [(who[mine], s[mine])]


def _new_bracket(log_norm, top_log_weight, n_keys, target: float) -> _Bracket:
    """Level-0 bins from just above the largest log-weight down to ``log((1 − target)/n_keys)``."""
    q, dev = len(top_log_weight), top_log_weight.device
    top = top_log_weight.double() + 1e-3
    floor = torch.log((1.0 - target) / n_keys.clamp_min(1)) - 1.0
    ref = torch.zeros(q, MAX_LEVELS + 1, dtype=top_log_weight.dtype, device=dev)
    scale = torch.zeros_like(ref)
    ref[:, 0] = (top + log_norm.double()).to(ref.dtype)  # score space
    scale[:, 0] = (N_BINS / (top - floor).clamp_min(1e-3)).to(ref.dtype)
    zeros = torch.zeros(q, dtype=torch.long, device=dev)
    zeros64 = torch.zeros(q, dtype=torch.float64, device=dev)
    return _Bracket(ref, scale, torch.zeros(q, MAX_LEVELS + 1, dtype=torch.long, device=dev), zeros.clone(),
                    zeros64.clone(), zeros.clone(), zeros64.clone(), zeros.clone(), zeros.clone(), zeros.clone())


def _choose_bins(br: _Bracket, consumer: NeffPass, target: float, cap: int):
    """After a histogram pass: fix the critical bin of every HIST query (the first bin where the
    cumulative mass reaches the target) and the next step: COLLECT when it holds at most ``cap``
    weights, else one more level, or after ``MAX_LEVELS`` the tie rule (gap / mean weight)."""
    rows = torch.nonzero(br.mode == HIST).squeeze(1)
    mass, count = consumer.mass[rows, :N_BINS], consumer.count[rows, :N_BINS]
    cum = br.above_mass[rows, None] + mass.cumsum(1)
    bins = torch.arange(N_BINS, device=rows.device)
    last = torch.where(count > 0, bins, 0).amax(1)
    j = torch.minimum((cum < target).sum(1), last)  # target never reached (round-off): last non-empty bin
    before = bins[None] < j[:, None]
    br.above_mass[rows] += (mass * before).sum(1)
    br.above_count[rows] += (count * before).sum(1)
    br.bin_mass[rows] = mass.gather(1, j[:, None]).squeeze(1)
    br.bin_count[rows] = count.gather(1, j[:, None]).squeeze(1)
    lvl = br.depth[rows]
    br.chosen[rows, lvl] = j
    ref, scale = br.ref[rows, lvl], br.scale[rows, lvl]
    br.ref[rows, lvl + 1] = ref - j.to(ref.dtype) / scale
    br.scale[rows, lvl + 1] = scale * N_BINS
    br.depth[rows] = lvl + 1
    small = br.bin_count[rows] <= cap
    ties = ~small & (lvl + 1 >= MAX_LEVELS)
    br.mode[rows] = torch.where(small, COLLECT, torch.where(ties, DONE, HIST))
    if ties.any():  # weights equal to ~1e-9 relative: the gap divided by their mean
        t = rows[ties]
        mean_w = br.bin_mass[t] / br.bin_count[t].clamp_min(1)
        need = torch.ceil((target - br.above_mass[t]).clamp_min(0) / mean_w.clamp_min(1e-300) - 1e-9).long()
        br.result[t] = br.above_count[t] + torch.minimum(need.clamp_min(1), br.bin_count[t])


def _count_collected(br: _Bracket, consumer: NeffPass, log_norm: torch.Tensor, target: float):
    """After a collection pass: sort each COLLECT query's inside weights (descending) and count the
    fewest that close the gap to the target."""
    q = len(br.mode)
    need = torch.ones(q, dtype=torch.long, device=br.mode.device)
    if consumer.collected:
        who, s = consumer.gathered()
        who = who.long()
        x = s - log_norm[who]  # the log-weights, as in the histograms
        order = torch.sort(x, descending=True, stable=True).indices
        who, x = who[order], x[order]
        order = torch.sort(who, stable=True).indices
        who, w = who[order], x[order].exp().double()
        cum = w.cumsum(0)
        per_row = torch.bincount(who, minlength=q)
        starts = per_row.cumsum(0) - per_row
        base = torch.where(starts[who] > 0, cum[(starts[who] - 1).clamp_min(0)], torch.zeros_like(cum))
        short = br.above_mass[who] + (cum - base) < target
        need = torch.bincount(who[short], minlength=q) + 1
    rows = br.mode == COLLECT
    br.result[rows] = (br.above_count + torch.minimum(need, br.bin_count))[rows]
    br.mode[rows] = DONE


def effective_patches_pass(run, log_norm: torch.Tensor, top_log_weight: torch.Tensor, n_keys: torch.Tensor,
                           tau: float, n_train: int | None = None) -> torch.Tensor:
    """``N_eff(τ)`` for every query (Q,) long (`eq-n-eff`) by passes of ``run(consumer, progress)``,
    which streams every score block of the estimate to ``consumer`` (see the module docstring).

    ``log_norm``: (Q,) final log-normalisers; ``top_log_weight``: (Q,) the largest log-weight;
    ``n_keys``: (Q,) an upper bound on the number of weights; ``n_train``: images per pass (for the
    progress bar). ``τ = 1``: one counting pass."""
    if tau >= 1:
        return _run_pass(run, NonZeroCount(log_norm), n_train, "N_eff(1)").count
    target = tau - NEFF_SLACK
    br = _new_bracket(log_norm, top_log_weight, n_keys, target)
    cap = max(MIN_COLLECT, COLLECT_BUDGET // max(1, len(log_norm)))
    for k in range(MAX_LEVELS + 1):
        if bool((br.mode == DONE).all()):
            break
        consumer = _run_pass(run, NeffPass(log_norm, br, cap if k == 0 else 0), n_train, f"N_eff({tau:g}) pass {k + 1}")
        if k == 0:
            _collected_early(br, consumer)
        if bool((br.mode == COLLECT).any()):  # first: the bins chosen below are collected next pass
            _count_collected(br, consumer, log_norm, target)
        if bool((br.mode == HIST).any()):
            _choose_bins(br, consumer, target, cap)
    return br.result
