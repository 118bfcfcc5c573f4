"""Figures used by the notebooks and the CLI: image grids and estimator comparisons.

Images are tensors (C, H, W) or (H, W) with values in [0, 1]; grey images use the ``gray`` colour
map (prints in grey), colour images are shown as RGB. Every function returns the Figure.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from .files import atomic_write


def _to_numpy(img: torch.Tensor):
    img = img.detach().float().cpu()
    if img.dim() == 4:
        if img.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {img.shape[0]}")
        img = img[0]
    if img.dim() == 3:
        img = img[0] if img.shape[0] == 1 else img.permute(1, 2, 0)
    return img.clamp(0, 1).numpy()


def show_image(ax, img: torch.Tensor, title: str | None = None, vmin: float = 0.0, vmax: float = 1.0):
    """Draw one image on ``ax`` without ticks, with an optional title."""
    arr = _to_numpy(img)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def image_grid(images, titles=None, row_labels=None, ncols: int | None = None, size: float = 1.8,
               suptitle: str | None = None):
    """A grid of images, one Axes per image, no ticks; returns the Figure (the one image-grid
    drawer of the package: the chapters, ``comparison_figure`` and ``compare`` use it).

    Args:
        images: a flat list of images (laid out ``ncols`` per row, default: all in one row) or a
            list of rows (lists/tuples) of images; rows may be shorter than the longest (the
            missing cells are blank). Each image is ``(C, H, W)`` with ``C`` in {1, 3},
            ``(1, C, H, W)`` or ``(H, W)``, values in [0, 1] (clipped), any device.
        titles: one per column (drawn over the top row), one per image (in order) or one per
            cell (``nrow * ncol``, row by row); ``None``: no titles. When ``ncol`` equals the
            number of images (one row) these coincide.
        row_labels: one per row (y-label of its first image).
        ncols: columns for a flat list. size: inches per cell. suptitle: figure title.

    Layout: ``nrow x ncol`` Axes, ``fig.axes[r * ncol + c]`` is row ``r``, column ``c``.
    """
    if not images:
        raise ValueError("images must be a non-empty list of images or of rows of images")
    rows = images if isinstance(images[0], (list, tuple)) else None
    if rows is None:
        ncols = ncols or len(images)
        rows = [list(images[i : i + ncols]) for i in range(0, len(images), ncols)]
    nrow, ncol = len(rows), max(len(r) for r in rows)
    n_images = sum(len(r) for r in rows)
    if titles is not None and len(titles) not in (ncol, n_images, nrow * ncol):
        raise ValueError(f"titles must have {ncol} (one per column), {n_images} (one per image) or "
                         f"{nrow * ncol} (one per cell) entries, got {len(titles)}")
    if row_labels is not None and len(row_labels) != nrow:
        raise ValueError(f"row_labels must have {nrow} entries (one per row), got {len(row_labels)}")
    fig, axes = plt.subplots(nrow, ncol, figsize=(size * ncol, size * nrow + (0.4 if suptitle else 0)),
                             squeeze=False)
    per_image = titles is not None and len(titles) == n_images and len(titles) != ncol
    per_cell = titles is not None and len(titles) == nrow * ncol and not per_image
    k = 0
    for r, row in enumerate(rows):
        for c in range(ncol):
            ax = axes[r][c]
            if c >= len(row):
                ax.axis("off")
                continue
            if per_image or per_cell:
                title = titles[k if per_image else r * ncol + c]
            else:
                title = titles[c] if titles is not None and r == 0 else None
            show_image(ax, row[c], title)
            k += 1
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def comparison_figure(rows: dict, columns: list[str], psnrs: dict | None = None, size: float = 1.8):
    """One row per problem, one column per estimate. ``rows[name][column]`` is an image;
    ``psnrs[name][column]`` (dB) is appended to the column titles when given."""
    images, titles = [], []
    for name, row in rows.items():
        images.append([row[c] for c in columns])
        for c in columns:
            p = (psnrs or {}).get(name, {}).get(c)
            titles.append(f"{c}\n{p:.1f} dB" if p is not None else c)
    return image_grid(images, titles=titles, row_labels=list(rows), size=size)


def psnr_curves(x, curves: dict, xlabel: str, ylabel: str = "PSNR (dB)", title: str | None = None,
                logx: bool = False, ax=None):
    """Line plot of several named curves over the same ``x`` values, with markers and a legend."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.4))
    else:
        fig = ax.figure
    markers = "osD^v<>*"
    for k, (name, ys) in enumerate(curves.items()):
        ax.plot(x, ys, marker=markers[k % len(markers)], label=name)
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pixel_map(ax, values: torch.Tensor, title: str | None = None, cmap: str = "viridis", log: bool = False,
              label: str | None = None):
    """A per-pixel map (H, W) (source map, log-density, effective patches) with a colour bar."""
    arr = values.detach().double().cpu()
    if log:
        arr = torch.log10(arr.clamp_min(1e-300))
    im = ax.imshow(arr.numpy(), cmap=cmap, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if label:
        cb.set_label(label, fontsize=8)
    return im


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically (:func:`lemmse_lite.files.atomic_write`: a
    reader never sees half a figure) and close it; returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write(path, buffer.getvalue())
