"""Circular patches, centre pixels, shifts and per-class windows (`course/04_locality.md`,
`eq-local`; the sub-lattice windows of `course/07_networks_vs_theory.md`, `eq-sublattice`).

``Π_n`` extracts the ``C×P×P`` patch centred on pixel ``n`` with circular wrap; features are
ordered ``(c, di, dj)`` row-major with ``di, dj ∈ {−P//2, …, P//2}``. Pixel locations are flat
indices ``n = i·W + j``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_odd


def check_patch_size(patch_size, h: int, w: int) -> int:
    """``patch_size`` must be an odd positive int with ``P ≤ min(H, W)`` (beyond that a patch
    overlaps itself; `course/04_locality.md`, `eq-local`)."""
    check_odd(patch_size, "patch_size")
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


# ----------------------------------------------------------------------------- sub-lattice windows

def _check_class_key(key, stride: int | None = None) -> tuple[int, int]:
    if (not isinstance(key, tuple) or len(key) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in key)):
        raise ValueError(f"supports keys must be pixel classes (a, b) of non-negative ints, got {key!r}")
    if stride is not None and not (key[0] < stride and key[1] < stride):
        raise ValueError(f"supports key {key} is not a class (i mod s, j mod s) for stride s = {stride}")
    return key


def crop_supports(fields_hw: dict, patch_size: int) -> dict:
    """Per-class windows ``R_c`` (`course/07_networks_vs_theory.md`, `eq-sublattice`) from measured
    receptive fields.

    ``fields_hw``: ``{(a, b): (H, W) bool}``, the receptive field of an output pixel of class
    ``(a, b)``, rolled so that the pixel sits at ``(H//2, W//2)`` (the ``.support`` of
    ``models.receptive_field_all_parities``). Returns ``{(a, b): (P, P) bool}``: the centred
    ``P × P`` window, entry ``[P//2 + di, P//2 + dj]`` for offset ``(di, dj)``. Raises if a field
    reaches outside that window (the network reads more than a ``P × P`` patch)."""
    if not isinstance(fields_hw, dict) or not fields_hw:
        raise TypeError("fields_hw must be a non-empty dict {(a, b): (H, W) bool tensor}")
    r = patch_size // 2
    out = {}
    for key, field in fields_hw.items():
        _check_class_key(key)
        if not isinstance(field, torch.Tensor) or field.dim() != 2:
            raise TypeError(f"fields_hw[{key}] must be an (H, W) tensor, got "
                            f"{tuple(field.shape) if isinstance(field, torch.Tensor) else type(field).__name__}")
        h, w = field.shape
        check_patch_size(patch_size, h, w)
        field = field.bool()
        window = field[h // 2 - r : h // 2 + r + 1, w // 2 - r : w // 2 + r + 1].clone()
        if int(window.sum()) != int(field.sum()):
            raise ValueError(f"the receptive field of class {key} reaches outside the centred "
                             f"{patch_size}x{patch_size} window; use a larger patch_size")
        if not window.any():
            raise ValueError(f"the receptive field of class {key} is empty")
        out[key] = window
    return out


def support_features(support: torch.Tensor, channels: int) -> torch.Tensor:
    """(P, P) bool window -> (r,) long indices of the patch features ``(c, di, dj)`` it keeps
    (every channel at each kept offset), in the feature order of :func:`extract_patches`."""
    return torch.nonzero(support.bool().reshape(-1).repeat(channels)).squeeze(1)
