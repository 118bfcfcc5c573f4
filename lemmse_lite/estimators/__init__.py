"""The three estimators of the course: MMSE, equivariant MMSE and local-equivariant MMSE.

All three minimise ``E‖φ(B y) − x‖²`` over a class of functions under the empirical prior of a
training set and all three are softmax averages computed by the one streaming engine of
:mod:`lemmse_lite.estimators.engine`, fed by the one driver :class:`lemmse_lite.estimators.streaming.ScoreStream`:

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
rounding (:func:`rounding_slack`) cannot rule out; they return ``y``'s dtype. ``engine``: an
:class:`~lemmse_lite.estimators.engine.EngineConfig` (default: :func:`~lemmse_lite.estimators.engine.default_engine` of ``y``'s device).

Where each part lives (this module is the public entry; chapters and users import from here):

* :mod:`lemmse_lite.estimators.estimator_inputs` — the checks and preparation every estimator shares;
* :mod:`lemmse_lite.estimators.image_estimators` — :func:`mmse`, :func:`equivariant_mmse` and their float64 rescoring;
* :mod:`lemmse_lite.estimators.local_queries`    — the LE-MMSE's query side: pixel classes, patch groups (whitening, rank, stratum), plans;
* :mod:`lemmse_lite.estimators.local_estimators` — :func:`le_mmse` and its score blocks (the keys).
"""

from __future__ import annotations

from .diagnostics import Diagnostics
from .engine import EngineConfig
from .estimator_inputs import DENSE_LIMIT, RANGE_TOL
from .image_estimators import equivariant_mmse, mmse, rounding_slack
from .local_estimators import PatchBlocks, le_mmse
from .local_queries import (
    DenseGroup,
    DiagonalGroup,
    IdentityGroup,
    PatchGroup,
    WhitenedGroup,
    patch_groups,
)
from .streaming import DEFAULT_MAX_MEMORY

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "DENSE_LIMIT",
    "RANGE_TOL",
    "DenseGroup",
    "Diagnostics",
    "DiagonalGroup",
    "EngineConfig",
    "IdentityGroup",
    "PatchBlocks",
    "PatchGroup",
    "WhitenedGroup",
    "equivariant_mmse",
    "le_mmse",
    "mmse",
    "patch_groups",
    "rounding_slack",
]
