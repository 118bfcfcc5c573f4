"""A small float64 reference for the three estimators, written straight from the course's formulas.

Each function evaluates one formula term by term, with explicit circular rolls and one softmax, in
float64 on the CPU, for a few tiny images. It shares nothing with the fast streaming engine of
:mod:`lemmse_lite.estimators` (no chunking, no centring, no pattern groups), so a chapter can check
the fast estimators against it in a regime where the weights are *mixed* — where a wrong σ, a
wrong temperature or a wrong sign shows. The chapters print these functions with
``inspect.getsource``: what is checked is what is read.

Conventions: ``y`` (B, C, H, W) raw measurements ``A x + e``; ``train`` (N, C, H, W); ``A`` an
operator of :mod:`lemmse_lite.operators` (or any callable on batches), ``None`` for denoising;
``T_g u = torch.roll(u, g)`` (circular shift by ``g = (g_1, g_2)``).
"""

from __future__ import annotations

import torch

from ..checks import check_odd, check_sigma

__all__ = [
    "N_IMAGES",
    "SIZE",
    "crop",
    "emmse_reference",
    "le_mmse_reference",
    "mmse_reference",
    "patch_matrix_rows",
]

#: The chapters' reference problem: ``N_IMAGES`` images cropped to ``SIZE × SIZE`` (odd, so that a
#: patch as large as the image is centred: `course/04_locality.md`, exercise ex-04-3).
SIZE = 11
N_IMAGES = 16


def crop(images: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size): the top-left corner of each image."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be an (N, C, H, W) tensor")
    if min(images.shape[-2:]) < size:
        raise ValueError(f"size must be at most min(H, W) = {min(images.shape[-2:])}, got {size}")
    return images[..., :size, :size]


def _inputs(y, train, sigma, A):
    """float64 CPU copies of ``y``, ``train``, ``A x_i`` and σ as a (B,) tensor."""
    for value, name in ((y, "y"), (train, "train")):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if y.dim() != 4:
        raise ValueError(f"y must be a (B, C, H, W) tensor, got shape {tuple(y.shape)}")
    if train.dim() != 4 or train.shape[1:] != y.shape[1:]:
        raise ValueError("train must be an (N, C, H, W) tensor with the (C, H, W) of y")
    y, x = y.detach().cpu().double(), train.detach().cpu().double()
    ax = x if A is None else A(x).double()
    return y, x, ax, check_sigma(sigma, y.shape[0], torch.device("cpu"), torch.float64)


def mmse_reference(y, train, sigma, A=None):
    """Ideal MMSE under the empirical prior (`course/01_ideal_mmse.md`, `eq-mmse`), ``B = I``.

    ``w_i(y) = softmax_i(−‖y − A x_i‖² / 2σ²)``, ``x̂ = Σ_i w_i x_i``.
    Returns ``(x̂ (B, C, H, W), w (B, N))``, float64."""
    y, x, ax, sig = _inputs(y, train, sigma, A)
    d2 = ((y[:, None] - ax[None]) ** 2).flatten(2).sum(2)  # (B, N): ‖y − A x_i‖²
    w = torch.softmax(-d2 / (2 * sig[:, None] ** 2), dim=1)
    return torch.einsum("bi,ichw->bchw", w, x), w


def emmse_reference(y, train, sigma, A=None):
    """Equivariant MMSE (`course/03_equivariance.md`, `eq-emmse`), ``B = I``.

    ``w_{i,g} = softmax_{i,g}(−‖T_g⁻¹ y − A x_i‖² / 2σ²)``, ``x̂ = Σ_{i,g} w_{i,g} T_g x_i``
    over all ``H·W`` circular shifts ``g``. Returns ``(x̂ (B, C, H, W), w (B, N, H, W))``."""
    y, x, ax, sig = _inputs(y, train, sigma, A)
    h, w_ = y.shape[-2:]
    d2 = torch.empty(y.shape[0], x.shape[0], h, w_, dtype=torch.float64)
    for g1 in range(h):
        for g2 in range(w_):
            back = torch.roll(y, (-g1, -g2), dims=(2, 3))  # T_g⁻¹ y
            d2[:, :, g1, g2] = ((back[:, None] - ax[None]) ** 2).flatten(2).sum(2)
    w = torch.softmax((-d2 / (2 * sig[:, None, None, None] ** 2)).flatten(1), dim=1).view_as(d2)
    out = torch.zeros_like(y)
    for g1 in range(h):
        for g2 in range(w_):  # Σ_i w_{i,g} T_g x_i
            shifted = torch.roll(x, (g1, g2), dims=(2, 3))
            out += torch.einsum("bi,ichw->bchw", w[:, :, g1, g2], shifted)
    return out, w


def patch_matrix_rows(u: torch.Tensor, P: int) -> torch.Tensor:
    """(…, C, H, W) -> (…, H·W, C·P·P): row ``m`` is the patch ``Π_m u`` centred on pixel ``m``
    (circular), features in the order (c, di, dj), ``di, dj = −P//2 … P//2``."""
    r = P // 2
    rows = [
        torch.roll(u, (-di, -dj), dims=(-2, -1))
        for di in range(-r, r + 1)
        for dj in range(-r, r + 1)
    ]
    stack = torch.stack(rows, dim=-3)  # (…, C, P·P, H, W): [c, k, i, j] = u[c, i + di, j + dj]
    return stack.flatten(-2).flatten(-3, -2).transpose(-1, -2)


def le_mmse_reference(y, train, sigma, P: int, A=None, b=None):
    """LE-MMSE with a diagonal pre-inverse ``B = diag(b)`` (``b=None``: ``B = I``).

    For the query patch ``v = Π_n B y`` with support ``s_n`` (where ``Π_n b ≠ 0``), keep the
    locations ``m`` with the same support (`course/05_closed_form.md`, `eq-le-general`) and weigh

        log w_{i,m} = −Σ_{j∈s} ((v_j − (Π_m b ⊙ Π_m A x_i)_j) / (Π_m b)_j)² / 2σ² − Σ_{j∈s} log|(Π_m b)_j|,

    ``x̂[n] = Σ_{i,m} w_{i,m} x_i[m]``. With ``b = 1`` this is `course/04_locality.md`, `eq-lemmse`:
    ``w_{i,m} = softmax_{i,m}(−‖Π_n y − Π_m A x_i‖² / 2σ²)``. ``b``: (H, W) or (C, H, W).
    Returns ``(x̂ (B, C, H, W), w (B, H·W, N, H·W))`` — ``w[., n, i, m]``."""
    P = check_odd(P, "P")
    y, x, ax, sig = _inputs(y, train, sigma, A)
    bsz, c, h, w_ = y.shape
    bb = (
        torch.ones(c, h, w_, dtype=torch.float64)
        if b is None
        else torch.as_tensor(b).double().reshape(-1, h, w_).expand(c, h, w_)
    )
    pb = patch_matrix_rows(bb, P)  # (HW, k): Π_m b
    keys = patch_matrix_rows(ax, P)  # (N, HW, k): Π_m A x_i
    queries = patch_matrix_rows(bb * y, P)  # (B, HW, k): Π_n B y
    values = x.flatten(2)  # (N, C, HW): x_i[m]
    support = pb != 0
    safe = torch.where(support, pb, torch.ones_like(pb))
    logdet = torch.where(support, safe.abs().log(), torch.zeros_like(pb)).sum(1)  # (HW,)
    out = torch.empty(bsz, c, h * w_, dtype=torch.float64)
    weights = torch.zeros(bsz, h * w_, x.shape[0], h * w_, dtype=torch.float64)
    for n in range(h * w_):
        same = (support == support[n]).all(1)  # (HW,): locations m with the pattern of n
        diff = torch.where(support[n], (queries[:, n, None, None, :] / safe - keys[None]), 0.0)
        d2 = (diff**2).sum(-1)  # (B, N, HW)
        logw = -d2 / (2 * sig[:, None, None] ** 2) - logdet[None, None, :]
        logw = logw.masked_fill(~same[None, None, :], float("-inf"))
        wn = torch.softmax(logw.flatten(1), dim=1).view_as(logw)
        weights[:, n] = wn
        out[:, :, n] = torch.einsum("bim,icm->bc", wn, values)
    return out.view(bsz, c, h, w_), weights
