"""What every estimator of :mod:`lemmse_lite.estimators` checks and prepares before it streams:
the measurements ``y`` in the working dtype, the operators ``A`` and ``B``, the noise levels, and
the dense matrix of a pre-inverse that has no structure the estimators can use
(`course/05_closed_form.md`, `eq-le-general`).
"""

from __future__ import annotations

import math

import torch

from ..checks import check_sigma
from ..operators import (
    Denoising,
    DenseOperator,
    Diagonal,
    FourierMultiplier,
    Operator,
    as_operator,
    check_images,
)

__all__ = ["DENSE_LIMIT", "RANGE_TOL", "check_flag", "check_inputs", "dense_operator", "is_structured"]

DENSE_LIMIT = 4096  # largest n = C·H·W for which a general (non-structured) B is made dense
RANGE_TOL = 1e-6  # v ∈ range(Q) when ‖Q Q⁺ v − v‖ ≤ RANGE_TOL·‖v‖ (`eq-le-general` tolerances)


def check_flag(flag, name: str) -> bool:
    """``flag`` if it is a bool, else a TypeError naming ``name``."""
    if not isinstance(flag, bool):
        raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    return flag


def check_inputs(y, sigma, A, B):
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


def is_structured(B) -> bool:
    """Identity, diagonal or translation-equivariant (Fourier) ``B``: no dense matrix needed."""
    return B is None or isinstance(B, (Denoising, Diagonal, FourierMultiplier))


def dense_operator(B: Operator, shape) -> DenseOperator:
    """The explicit (n, n) matrix of a linear ``B`` on images of ``shape`` = (C, H, W), checked
    finite and linear; ``n = C·H·W`` at most :data:`DENSE_LIMIT`."""
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
