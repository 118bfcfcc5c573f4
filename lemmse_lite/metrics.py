"""Image metrics and the diagnostics of THEORY.md §6 that need more than one softmax pass.

* :func:`psnr` — peak signal-to-noise ratio in dB (peak 1, THEORY.md §8);
* :func:`nearest_training` — distance to the nearest training image, optionally over all circular
  shifts (memorisation, §6);
* :func:`effective_patches_pass` — ``N_eff(τ)`` by refining log-weight histograms (§6).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .engine import LogWeightHistogram
from .operators import check_images


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
    from .estimators import training_chunks

    check_images(x, "x")
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
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


def effective_patches_pass(run, log_norm: torch.Tensor, top_score: torch.Tensor, tau: float, dtype,
                           bins: int = 4096, max_passes: int = 8) -> torch.Tensor:
    """``N_eff(τ)`` for every query (THEORY.md §6) by passes of ``run`` (which streams every score
    block to a consumer) over log-weight histograms.

    Each pass splits, per query, the interval ``[lo, hi)`` of log-weights that holds the weight at
    which the sorted cumulative mass first reaches ``τ − 1e-6`` into ``bins`` bins, and keeps the
    bin where that happens. Edges are compared exactly in ``dtype``, so after a few passes the bin
    is one representable log-weight wide (or holds one weight); the count is then the weights above
    the bin plus the fewest bin weights (all equal at the working precision) that close the gap.
    ``τ = 1`` counts the non-zero weights in one pass."""
    tiny = math.log(torch.finfo(dtype).tiny * torch.finfo(dtype).eps)  # log of the smallest subnormal
    lo = torch.full_like(log_norm, tiny, dtype=torch.float64)
    hi = (top_score - log_norm).double() + 1e-3  # just above the largest log-weight
    if tau >= 1:
        hist = LogWeightHistogram(log_norm, torch.stack([lo, hi], 1).to(dtype))
        run(hist)
        return hist.nonzero.round().long()
    target = tau - 1e-6
    steps = torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=log_norm.device)
    for _ in range(max_passes):
        edges = (lo[:, None] + (hi - lo)[:, None] * steps[None]).to(dtype)  # (Q, bins + 1)
        hist = LogWeightHistogram(log_norm, edges)
        run(hist)
        tail_mass = hist.mass.flip(1).cumsum(1).flip(1)  # mass at or above bin j
        tail_count = hist.count.flip(1).cumsum(1).flip(1)
        # the bin j ∈ 1..bins with the largest j whose tail mass reaches the target
        j = ((tail_mass[:, 1 : bins + 1] >= target).sum(1)).clamp(min=1)[:, None]
        above_mass = tail_mass.gather(1, j + 1).squeeze(1)
        above_count = tail_count.gather(1, j + 1).squeeze(1)
        bin_mass = hist.mass.gather(1, j).squeeze(1)
        bin_count = hist.count.gather(1, j).squeeze(1)
        lo_new, hi_new = edges.gather(1, j - 1).squeeze(1), edges.gather(1, j).squeeze(1)
        done = (bin_count <= 1) | (torch.nextafter(lo_new, hi_new) >= hi_new)
        lo, hi = lo_new.double(), hi_new.double()
        if done.all():
            break
    mean_w = bin_mass / bin_count.clamp_min(1)
    need = torch.ceil((target - above_mass).clamp_min(0) / mean_w.clamp_min(1e-300) - 1e-9)
    return (above_count + torch.minimum(need, bin_count)).long()
