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
the same score blocks (so every score is bit-identical across passes):

1. a histogram pass: per query, the log-weights ``ℓ = s − log Σ exp s`` fall into ``N_BINS``
   arithmetic bins ``⌊(ℓ_top − ℓ)·scale⌋`` (no search), accumulating the mass per bin (float32 per
   block, float64 across blocks); the bin where the sorted cumulative mass first reaches the target
   is the *critical bin* (the mass above it is known);
2. a collection pass: the log-weights of each query's critical bin are gathered and sorted exactly,
   and the weights above it counted exactly, which gives the count. A critical bin that may hold too
   many weights to gather (its mass over its smallest weight exceeds the budget: near-ties) is split
   by one more histogram pass inside it; after ``MAX_LEVELS`` levels its weights agree to about
   1e-9 relative and the count is the gap divided by their mean weight.

Two passes in the usual case, each about as costly as the estimate's own pass.

The bins need a lower end: the K-th largest weight is at least ``(1 − target)/n_keys`` (the weights
below it sum to more than ``1 − target`` and are at most ``n_keys``), so the critical bin always
lies above ``log((1 − target)/n_keys)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

NEFF_SLACK = 1e-6  # N_eff(τ): fewest weights summing to ≥ τ − NEFF_SLACK (`eq-n-eff`)
N_BINS = 256  # arithmetic log-weight bins per histogram level
MAX_LEVELS = 3  # histogram levels before a full critical bin is treated as ties
COLLECT_BUDGET = 2**23  # log-weights gathered by one collection pass, at most (about)
MIN_COLLECT = 256  # ... but always up to this many per query
PROGRESS_DELAY = 3.0  # seconds before a pass shows a progress bar


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
    _second_pass: Callable | None = field(default=None, repr=False)

    def effective_patches(self, tau: float = 0.99) -> torch.Tensor:
        """``N_eff(τ)`` per output pixel (B, H, W), long: the fewest (i, m) whose largest weights sum
        to at least ``τ − 1e-6``; ``τ = 1``: the number of non-zero weights (`eq-n-eff`)."""
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau <= 1:
            raise ValueError(f"tau must be in (0, 1], got {tau!r}")
        if self._second_pass is None:
            raise ValueError("effective_patches needs a re-iterable training set (a tensor or a list), "
                             "not a one-shot iterator")
        return self._second_pass(float(tau)).reshape(self.rank.shape)


def build_diagnostics(state, n_train: int, n_locations: torch.Tensor, kept_rank: torch.Tensor, shape,
                      run: Callable | None) -> Diagnostics:
    """:class:`Diagnostics` from a finished ``SoftmaxState`` with top-k tracking (Q = B·H·W queries).

    ``n_locations`` (Q,): locations per query's class; ``kept_rank`` (Q,); ``shape`` = (B, H, W);
    ``run(consumer, progress)`` streams every score block again (``None``: one-shot training set)."""
    hw = shape[1] * shape[2]
    log_norm = state.log_normaliser()
    ids = state.top_ids
    top_log_weight = state.top_scores[:, 0] - log_norm
    n_keys = n_train * n_locations.double()
    second = None
    if run is not None:
        def second(tau):
            return effective_patches_pass(run, log_norm, top_log_weight, n_keys, tau, n_train)
    return Diagnostics(
        log_density=log_density(log_norm, n_train, n_locations).reshape(shape),
        source_image=(ids[:, 0] // hw).reshape(shape),
        source_location=(ids[:, 0] % hw).reshape(shape),
        top_weights=torch.exp(state.top_scores - log_norm[:, None]).reshape(*shape, -1),
        top_images=torch.where(ids >= 0, ids // hw, -1).reshape(*shape, -1),
        top_locations=torch.where(ids >= 0, ids % hw, -1).reshape(*shape, -1),
        rank=kept_rank.reshape(shape),
        n_train=n_train,
        _second_pass=second,
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
    """Consumer counting, per query, the weights ``exp(s − log Σ exp s)`` that are non-zero floats."""

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


HIST, COLLECT, COUNT, DONE = 0, 1, 2, 3  # what the next pass does for a query


@dataclass
class _Bracket:
    """Per query (Q): the nested bins chosen so far. Level ℓ puts log-weight ``x`` in bin
    ``⌊(ref[:, ℓ] − x)·scale[:, ℓ]⌋`` (clamped to ``0..N_BINS−1``); a weight is *inside* the bracket
    when it lies in bin ``chosen[:, ℓ]`` at every level ``ℓ < depth``, *above* it when it lies in an
    earlier bin at the first level where it leaves. ``above_mass``/``bin_mass``: the mass above and
    inside (from the histograms); ``mode``: HIST, COLLECT (gather and sort the inside weights),
    COUNT (count only: near-ties at the last level) or DONE; ``result``: N_eff when DONE."""

    ref: torch.Tensor
    scale: torch.Tensor
    chosen: torch.Tensor
    depth: torch.Tensor
    above_mass: torch.Tensor
    bin_mass: torch.Tensor
    mode: torch.Tensor
    result: torch.Tensor


def _bin_index(x, ref, scale):
    """(q, k) log-weights, (q,) ref and scale -> (q, k) long bins (see :class:`_Bracket`)."""
    return (ref[:, None] - x).mul_(scale[:, None]).floor_().clamp_(0, N_BINS - 1).long()


def _at(table: torch.Tensor, rows, col: torch.Tensor) -> torch.Tensor:
    """``table[rows[q], col[q]]`` for rows a slice or a long tensor."""
    return table[rows].gather(1, col[:, None]).squeeze(1)


def _add(table: torch.Tensor, rows, values: torch.Tensor):
    """``table[rows] += values`` for rows a slice or a long tensor (no duplicates)."""
    if isinstance(rows, slice):
        table[rows] += values
    else:
        table.index_add_(0, rows, values.to(table.dtype))


class NeffPass:
    """Consumer of one N_eff pass: for HIST queries the mass of the inside weights per bin of the next
    level; for COLLECT/COUNT queries the exact counts inside and above (and, COLLECT, the inside
    log-weights themselves)."""

    def __init__(self, log_norm: torch.Tensor, br: _Bracket):
        self.log_norm, self.br = log_norm, br
        q, dev = len(log_norm), log_norm.device
        self.mass = torch.zeros(q, N_BINS + 1, dtype=torch.float64, device=dev)
        self.inside = torch.zeros(q, dtype=torch.long, device=dev)
        self.above = torch.zeros(q, dtype=torch.long, device=dev)
        self.collected_rows, self.collected = [], []
        self.max_depth = int(br.depth.max())

    def _locate(self, rows, x):
        """(q, k) log-weights -> (inside, above) (q, k) bool, or (None, None) before any level."""
        inside = above = None
        for lvl in range(self.max_depth):
            fixed = self.br.depth[rows] > lvl
            if not fixed.any():
                continue
            idx = _bin_index(x, self.br.ref[rows, lvl], self.br.scale[rows, lvl])
            chosen = self.br.chosen[rows, lvl][:, None]
            up = fixed[:, None] & (idx < chosen)
            up = up if inside is None else up & inside
            above = up if above is None else above | up
            ok = ~fixed[:, None] | (idx == chosen)
            inside = ok if inside is None else inside & ok
        return inside, above

    def update(self, rows, scores, values=None, key_ids=None):
        mode = self.br.mode[rows]
        hist, exact = mode == HIST, (mode == COLLECT) | (mode == COUNT)
        if not bool(hist.any() | exact.any()):
            return
        x = scores.sub_(self.log_norm[rows, None])
        inside, above = self._locate(rows, x)
        if bool(hist.all()):  # the common first pass: no copies
            self._histogram(rows, x, inside)
            return
        if bool(exact.all()):  # the common last pass: no copies either
            self._count(rows, x, inside, above, mode == COLLECT)
            return
        rows = torch.arange(rows.start, rows.stop, device=x.device) if isinstance(rows, slice) else rows
        if hist.any():
            self._histogram(rows[hist], x[hist], None if inside is None else inside[hist])
        if exact.any():
            self._count(rows[exact], x[exact], inside[exact], above[exact], mode[exact] == COLLECT)

    def _count(self, rows, x, inside, above, collect):
        _add(self.inside, rows, inside.sum(1))
        _add(self.above, rows, above.sum(1))
        if collect.any():
            sel = inside if bool(collect.all()) else inside & collect[:, None]
            local, _ = torch.nonzero(sel, as_tuple=True)
            rows = torch.arange(rows.start, rows.stop, device=x.device) if isinstance(rows, slice) else rows
            self.collected_rows.append(rows[local].to(torch.int32))
            self.collected.append(x[sel])

    def _histogram(self, rows, x, inside):
        lvl = self.br.depth[rows]
        idx = _bin_index(x, _at(self.br.ref, rows, lvl), _at(self.br.scale, rows, lvl))
        if inside is not None:  # weights outside the bracket go to the spare bin N_BINS
            idx.masked_fill_(~inside, N_BINS)
        # clamp: exp of very negative log-weights gives subnormals, ~10x slower on x86; such weights
        # (< e^-80) only reach the last bin (below the floor), whose mass is never counted
        w = x.clamp_(min=-80.0).exp_()
        hist = torch.zeros(len(w), N_BINS + 1, dtype=w.dtype, device=w.device).scatter_add_(1, idx, w)
        if isinstance(rows, slice):
            self.mass[rows] += hist
        else:
            self.mass.index_add_(0, rows, hist.double())


def _new_bracket(top_log_weight, n_keys, target: float) -> _Bracket:
    """Level-0 bins from just above the largest log-weight down to ``log((1 − target)/n_keys)``."""
    q, dev = len(top_log_weight), top_log_weight.device
    top = top_log_weight.double() + 1e-3
    floor = torch.log((1.0 - target) / n_keys.clamp_min(1)) - 1.0
    ref = torch.zeros(q, MAX_LEVELS + 1, dtype=top_log_weight.dtype, device=dev)
    scale = torch.zeros_like(ref)
    ref[:, 0] = top.to(ref.dtype)
    scale[:, 0] = (N_BINS / (top - floor).clamp_min(1e-3)).to(ref.dtype)
    zeros = torch.zeros(q, dtype=torch.long, device=dev)
    return _Bracket(ref, scale, torch.zeros(q, MAX_LEVELS + 1, dtype=torch.long, device=dev), zeros.clone(),
                    torch.zeros(q, dtype=torch.float64, device=dev), torch.zeros(q, dtype=torch.float64, device=dev),
                    zeros.clone(), zeros.clone())


def _choose_bins(br: _Bracket, consumer: NeffPass, target: float, cap: int):
    """After a histogram pass: fix the critical bin of every HIST query (the first bin where the
    cumulative mass reaches the target) and the next step: COLLECT when the bin holds at most
    ``cap`` weights (bound: its mass over its smallest weight), else one more level, or COUNT."""
    rows = torch.nonzero(br.mode == HIST).squeeze(1)
    mass = consumer.mass[rows, :N_BINS]
    cum = br.above_mass[rows, None] + mass.cumsum(1)
    bins = torch.arange(N_BINS, device=rows.device)
    last = torch.where(mass > 0, bins, 0).amax(1)
    j = torch.minimum((cum < target).sum(1), last)  # target never reached (round-off): last non-empty bin
    lvl = br.depth[rows]
    br.above_mass[rows] += (mass * (bins[None] < j[:, None])).sum(1)
    br.bin_mass[rows] = mass.gather(1, j[:, None]).squeeze(1)
    br.chosen[rows, lvl] = j
    ref, scale = br.ref[rows, lvl], br.scale[rows, lvl]
    br.ref[rows, lvl + 1] = ref - j.to(ref.dtype) / scale
    br.scale[rows, lvl + 1] = scale * N_BINS
    br.depth[rows] = lvl + 1
    lowest = (ref - (j + 1).to(ref.dtype) / scale).double()  # smallest log-weight in the bin
    bound = br.bin_mass[rows] * torch.exp(-lowest) * 1.01 + 1
    split = torch.where(lvl + 1 >= MAX_LEVELS, COUNT, HIST)
    br.mode[rows] = torch.where(bound <= cap, COLLECT, split)


def _count_exact(br: _Bracket, consumer: NeffPass, target: float):
    """After a pass: COLLECT queries sort their inside weights (descending) and count the fewest that
    close the gap to the target; COUNT queries (near-ties, equal to ~1e-9 relative) divide the gap
    by the mean inside weight."""
    q = len(br.mode)
    need = torch.ones(q, dtype=torch.long, device=br.mode.device)
    if consumer.collected:
        who = torch.cat(consumer.collected_rows).long()
        x = torch.cat(consumer.collected)
        order = torch.sort(x, descending=True, stable=True).indices
        who, x = who[order], x[order]
        order = torch.sort(who, stable=True).indices
        who, w = who[order], x[order].exp().double()
        cum = w.cumsum(0)
        starts = torch.bincount(who, minlength=q).cumsum(0) - torch.bincount(who, minlength=q)
        base = torch.where(starts[who] > 0, cum[(starts[who] - 1).clamp_min(0)], torch.zeros_like(cum))
        short = br.above_mass[who] + (cum - base) < target
        need = torch.bincount(who[short], minlength=q) + 1
    ties = br.mode == COUNT
    mean_w = br.bin_mass / consumer.inside.clamp_min(1)
    gap = (target - br.above_mass).clamp_min(0)
    tie_need = torch.ceil(gap / mean_w.clamp_min(1e-300) - 1e-9).long().clamp_min(1)
    need = torch.where(ties, tie_need, need)
    rows = (br.mode == COLLECT) | ties
    br.result[rows] = (consumer.above + torch.minimum(need, consumer.inside))[rows]
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
    br = _new_bracket(top_log_weight, n_keys, target)
    cap = max(MIN_COLLECT, COLLECT_BUDGET // max(1, len(log_norm)))
    for k in range(MAX_LEVELS + 2):
        if bool((br.mode == DONE).all()):
            break
        consumer = _run_pass(run, NeffPass(log_norm, br), n_train, f"N_eff({tau:g}) pass {k + 1}")
        _count_exact(br, consumer, target)  # first: the bins chosen below are counted next pass
        if bool((br.mode == HIST).any()):
            _choose_bins(br, consumer, target, cap)
    return br.result
