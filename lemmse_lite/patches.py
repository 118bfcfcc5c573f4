"""Circular patches, centre pixels and shifts (THEORY.md §1, §8).

``Π_n`` extracts the ``C×P×P`` patch centred on pixel ``n`` with circular wrap; features are
ordered ``(c, di, dj)`` row-major with ``di, dj ∈ {−P//2, …, P//2}``. Pixel locations are flat
indices ``n = i·W + j``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_patch_size(patch_size, h: int, w: int) -> int:
    """``patch_size`` must be an odd positive int with ``P ≤ min(H, W)`` (THEORY.md §8)."""
    if not isinstance(patch_size, int) or isinstance(patch_size, bool):
        raise TypeError(f"patch_size must be an int, got {type(patch_size).__name__}")
    if patch_size <= 0 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd integer, got {patch_size}")
    if patch_size > min(h, w):
        raise ValueError(f"patch_size must be at most min(H, W) = {min(h, w)}, got {patch_size}")
    return patch_size


def extract_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """All centred circular patches: (B, C, H, W) -> (B, H·W, C·P·P); row ``n`` is ``Π_n x``."""
    check_patch_size(patch_size, *x.shape[-2:])
    r = patch_size // 2
    padded = F.pad(x, (r, r, r, r), mode="circular") if r else x
    cols = F.unfold(padded, kernel_size=patch_size)  # (B, C·P·P, H·W), features (c, di, dj)
    return cols.transpose(1, 2)


def patches_at(x: torch.Tensor, patch_size: int, locations: torch.Tensor) -> torch.Tensor:
    """Patches at the flat ``locations`` only: (B, C, H, W), (L,) -> (B, L, C·P·P).

    Gathers through circular offsets, so memory is O(B·L·C·P²) rather than O(B·H·W·C·P²)."""
    b, c, h, w = x.shape
    check_patch_size(patch_size, h, w)
    r = patch_size // 2
    d = torch.arange(-r, r + 1, device=x.device)
    i, j = locations // w, locations % w
    rows = (i[:, None, None] + d[None, :, None]) % h  # (L, P, 1)
    cols = (j[:, None, None] + d[None, None, :]) % w  # (L, 1, P)
    flat = (rows * w + cols).reshape(len(locations), -1)  # (L, P·P)
    out = x.reshape(b, c, h * w)[:, :, flat]  # (B, C, L, P·P)
    return out.permute(0, 2, 1, 3).reshape(b, len(locations), c * patch_size**2)


def centre_pixels(x: torch.Tensor) -> torch.Tensor:
    """Pixels as rows: (B, C, H, W) -> (B, H·W, C); row ``n`` is ``x[n]``."""
    return x.flatten(2).transpose(1, 2)


def shift(x: torch.Tensor, g) -> torch.Tensor:
    """Circular shift ``T_g``: ``(T_g x)[n] = x[n − g]`` for ``g = (gi, gj)`` on the last two dims."""
    return torch.roll(x, shifts=(int(g[0]), int(g[1])), dims=(-2, -1))


def all_shifts(h: int, w: int) -> list[tuple[int, int]]:
    """Every circular shift of an (h, w) image, in flat order ``g = gi·w + gj``."""
    return [(gi, gj) for gi in range(h) for gj in range(w)]
