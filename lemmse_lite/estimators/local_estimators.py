"""The local-equivariant MMSE (`course/04_locality.md`, `eq-lemmse`; `course/05_closed_form.md`,
`eq-le-general`) and its sub-lattice form (`course/07_networks_vs_theory.md`, `eq-sublattice`).

Keys are patches of training measurements, values their centre pixels. :func:`le_mmse` checks its
inputs (:mod:`lemmse_lite.estimators.estimator_inputs`), plans every query
(:mod:`lemmse_lite.estimators.local_queries`: pixel classes, patch groups, per-group plans), then
streams the training set once through the engine: :class:`PatchBlocks` makes the keys of each chunk,
:class:`~lemmse_lite.estimators.engine.SoftmaxState` merges them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_positive_int
from ..operators import Operator
from .diagnostics import build_diagnostics
from .engine import EngineConfig, ScoreBlock, SoftmaxState, augment_keys, check_engine
from .estimator_inputs import check_flag, check_inputs
from .local_queries import plan_local_queries
from .patches import centre_pixels, check_patch_size, extract_patches
from .streaming import (
    DEFAULT_MAX_MEMORY,
    ScoreStream,
    check_chunk_size,
    default_chunk_size,
    is_reiterable,
)

__all__ = ["PatchBlocks", "le_mmse"]


# ----------------------------------------------------------------------------- the keys

@dataclass(frozen=True)
class PatchBlocks:
    """The LE-MMSE's block source (:class:`~lemmse_lite.estimators.streaming.BlockSource`): for one
    chunk of training images ``x_i`` (Nc, C, H, W) from image ``start``, one :class:`ScoreBlock` per
    plan, keys ``whiten(Π_m B A x_i) − centre`` (Nc·L, r + 2 augmented) of the plan's group, values
    the centre pixels ``x_i[m]`` (Nc·L, C), key ids ``i·H·W + m`` (`eq-le-general`). ``precise``: apply
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
        return_diagnostics: also return a :class:`~lemmse_lite.estimators.diagnostics.Diagnostics`.
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
    q = plan_local_queries(y, B, sig, patch_size, stride, supports, dtype)
    chunk_size = chunk_size or default_chunk_size(h * w, c * patch_size**2, max_memory)
    blocks = PatchBlocks(q.plans, A, B, patch_size, q.precise, h * w)
    scores = ScoreStream(train, (c, h, w), chunk_size, y.device, dtype, blocks, engine)
    state = SoftmaxState(bsz * h * w, c, y.device, dtype, top_k=top_k if return_diagnostics else 0)
    n_train = scores.run(state)
    out = state.result().reshape(bsz, h, w, c).permute(0, 3, 1, 2).contiguous()
    if not return_diagnostics:
        return out
    second = scores if is_reiterable(train) else None
    return out, build_diagnostics(state, n_train, q.n_locations, q.kept_rank, (bsz, h, w), second)
