"""The local-equivariant MMSE (`course/04_locality.md`, `eq-lemmse`; `course/05_closed_form.md`,
`eq-le-general`) and its sub-lattice form (`course/07_networks_vs_theory.md`, `eq-sublattice`).

Keys are patches of training measurements, values their centre pixels. :func:`le_mmse` checks its
inputs (:mod:`lemmse_lite.estimator_inputs`), groups the locations by patch likelihood
(:mod:`lemmse_lite.patch_whitening`), plans each group's queries (:func:`plan_queries`) and streams
the training set once through the engine (:class:`PatchBlocks` → :class:`~lemmse_lite.engine.SoftmaxState`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import check_positive_int
from .diagnostics import build_diagnostics, log_density_constant
from .engine import (
    EngineConfig,
    ScoreBlock,
    SoftmaxState,
    augment_keys,
    augment_queries,
    check_engine,
)
from .estimator_inputs import check_flag, check_inputs
from .operators import Operator
from .patch_whitening import DenseGroup, PatchGroup, WhitenedGroup, patch_groups, stratum
from .patches import _check_class_key, centre_pixels, check_patch_size, extract_patches
from .streaming import (
    DEFAULT_MAX_MEMORY,
    ScoreStream,
    check_chunk_size,
    default_chunk_size,
    is_reiterable,
)

__all__ = ["PatchBlocks", "QueryPlan", "centre_on_own_queries", "le_mmse", "log_weight_offset", "pixel_classes",
           "plan_queries"]


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
    check_flag(return_diagnostics, "return_diagnostics")
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
    y, dtype, A, B, sig = check_inputs(y, sigma, A, B)
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
