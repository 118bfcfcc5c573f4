"""Image metrics.

* :func:`psnr` — peak signal-to-noise ratio in dB (peak 1; `course/00_inverse_problems.md`);
* :func:`bootstrap_interval`, :func:`error_correlation` — the uncertainty and error-map controls of
  `course/07_networks_vs_theory.md`;
* :func:`nearest_training` — distance to the nearest training image, optionally over all circular
  shifts (memorisation; `course/02_memorisation.md`, `course/08_generalisation.md`).

The diagnostics of an LE-MMSE call (log-density, source map, N_eff) live in
:mod:`lemmse_lite.estimators.diagnostics`; ``effective_patches_pass`` is re-exported here for old imports.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..checks import check_positive_int
from ..operators import check_images
from .diagnostics import effective_patches_pass
from .streaming import training_chunks

__all__ = ["Nearest", "bootstrap_interval", "effective_patches_pass", "error_correlation", "nearest_training", "psnr"]


def psnr(x: torch.Tensor, ref: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image: ``10 log10(peak² / mean((x − ref)²))``; (B, …) -> (B,)."""
    if not isinstance(x, torch.Tensor) or not isinstance(ref, torch.Tensor):
        raise TypeError("x and ref must be torch tensors")
    if x.dim() < 2:
        raise ValueError(f"x and ref must be batches (B, …) with at least 2 dimensions, got x of shape {tuple(x.shape)}")
    if x.shape != ref.shape:
        raise ValueError(f"x and ref must have the same shape, got {tuple(x.shape)} and {tuple(ref.shape)}")
    mse = ((x.double() - ref.double()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse)


class Nearest(NamedTuple):
    """Per image of the batch: squared-error ``mse`` to the nearest training image (after the best
    shift if shifts were searched), its PSNR, its index in the training set and the shift (gi, gj)."""

    mse: torch.Tensor
    psnr: torch.Tensor
    index: torch.Tensor
    shift: torch.Tensor


def nearest_training(x: torch.Tensor, train, shifts: bool = False, chunk_size: int = 256) -> Nearest:
    """Nearest training image to each ``x[b]`` in mean squared error, ``min_i ‖x − x_i‖²/n``, or with
    ``shifts=True`` ``min_{i,g} ‖x − T_g x_i‖²/n`` over all circular shifts (float64, FFT correlation).

    x: (B, C, H, W); train: (N, C, H, W) or an iterable of such tensors."""
    check_images(x, "x")
    check_positive_int(chunk_size, "chunk_size")
    xb = x.double()
    bsz, c, h, w = x.shape
    n = c * h * w
    best = torch.full((bsz,), math.inf, dtype=torch.float64, device=x.device)
    index = torch.zeros(bsz, dtype=torch.long, device=x.device)
    shift = torch.zeros(bsz, 2, dtype=torch.long, device=x.device)
    fx = torch.fft.rfft2(xb) if shifts else None
    for start, chunk in training_chunks(train, (c, h, w), chunk_size, x.device, torch.float64):
        sq = (chunk**2).flatten(1).sum(1)  # (Nc,)
        if shifts:
            # Σ_n x[n] x_i[n − g] for every g: correlation via the FFT, summed over channels
            corr = torch.fft.irfft2((fx[:, None] * torch.fft.rfft2(chunk)[None].conj()).sum(2), s=(h, w))
            cross, flat = corr.flatten(2).max(2)  # best shift per (b, i)
        else:
            cross = xb.flatten(1) @ chunk.flatten(1).T
            flat = torch.zeros_like(cross, dtype=torch.long)
        d2 = (xb**2).flatten(1).sum(1)[:, None] + sq[None] - 2 * cross  # (B, Nc)
        dmin, arg = d2.min(1)
        better = dmin < best
        best = torch.where(better, dmin, best)
        index = torch.where(better, start + arg, index)
        g = flat.gather(1, arg[:, None]).squeeze(1)
        shift = torch.where(better[:, None], torch.stack([g // w, g % w], 1), shift)
    mse = best.clamp_min(0) / n
    return Nearest(mse, 10 * torch.log10(1.0 / mse), index, shift)


def bootstrap_interval(statistic, n: int, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple:
    """Percentile bootstrap interval of ``statistic(idx)`` -- a float computed from the items
    ``idx`` (a ``(n,)`` long tensor of indices drawn with replacement from ``0 .. n-1``), e.g. a
    mean PSNR over test images or a margin between two means. ``n_boot`` resamples from a
    generator seeded with ``seed``; returns ``(low, high)`` at ``level`` (0.95: the 2.5th and
    97.5th percentiles)."""
    check_positive_int(n, "n"), check_positive_int(n_boot, "n_boot")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    gen = torch.Generator().manual_seed(seed)
    stats = torch.tensor([statistic(torch.randint(n, (n,), generator=gen)) for _ in range(n_boot)],
                         dtype=torch.float64)
    lo, hi = torch.quantile(stats, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)


def error_correlation(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image, the correlation over pixels of the error maps ``a - x`` and ``b - x``
    ((B, ...) each -> (B,)): 1 when two estimators make the same mistakes (up to scale)."""
    ea, eb = (a.double() - x.double()).flatten(1), (b.double() - x.double()).flatten(1)
    ea, eb = ea - ea.mean(1, keepdim=True), eb - eb.mean(1, keepdim=True)
    return (ea * eb).sum(1) / (ea.norm(dim=1) * eb.norm(dim=1)).clamp_min(1e-300)
