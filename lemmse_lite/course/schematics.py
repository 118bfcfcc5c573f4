"""Schematic figures of the course: one function per figure, labelled, readable in grey.

Each returns a matplotlib ``Figure`` (``category_map`` draws on a given axis). They only draw; the
numbers they show are computed by the caller or by the one formula written in the docstring.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

__all__ = [
    "attention_map",
    "category_map",
    "degenerate_gaussians",
    "forward_models",
    "patch_lookup",
    "shift_pairs",
    "softmax_toy",
]


def _img(ax, img, title: str, cmap: str = "gray"):
    ax.imshow(np.asarray(img, dtype=float), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])


def forward_models(x: torch.Tensor, measurements: dict):
    """The three forward models (`course/00_inverse_problems.md`, `eq-forward`): ``x`` (H, W) and
    ``{name: y (H, W)}``, drawn as ``x -> A -> + e -> y`` rows."""
    fig, axes = plt.subplots(
        len(measurements), 3, figsize=(6, 2 * len(measurements)), squeeze=False
    )
    for row, (name, y) in zip(axes, measurements.items()):
        _img(row[0], x, "x (clean)")
        row[1].axis("off")
        row[1].annotate(
            "", xy=(0.95, 0.5), xytext=(0.05, 0.5), arrowprops={"arrowstyle": "->", "lw": 2}
        )
        row[1].text(0.5, 0.62, f"A: {name}", ha="center", fontsize=9)
        row[1].text(0.5, 0.28, "+ noise e ~ N(0, σ²I)", ha="center", fontsize=8)
        _img(row[2], y.clamp(0, 1), "y = A x + e")
    fig.suptitle("Three linear inverse problems")
    fig.tight_layout()
    return fig


def softmax_toy(points: torch.Tensor, query: torch.Tensor, sigmas):
    """A 2-D toy of the MMSE weights (`course/01_ideal_mmse.md`, `eq-mmse`): training points
    (N, 2), one query (2,), and for each σ the weights ``softmax(−‖y − x_i‖²/2σ²)`` as marker
    areas, with the estimate ``Σ w_i x_i`` marked ×."""
    fig, axes = plt.subplots(1, len(sigmas), figsize=(2.6 * len(sigmas), 2.8), squeeze=False)
    for ax, s in zip(axes[0], sigmas):
        w = torch.softmax(-((points - query) ** 2).sum(1) / (2 * s**2), 0)
        est = w @ points
        ax.scatter(
            points[:, 0], points[:, 1], s=20 + 400 * w, facecolors="lightgrey", edgecolors="black"
        )
        ax.scatter([query[0]], [query[1]], marker="o", s=30, color="black", label="measurement y")
        ax.scatter([est[0]], [est[1]], marker="x", s=60, color="black", label="estimate")
        ax.set_title(f"σ = {s:g}: max w = {float(w.max()):.2f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Softmax weights (marker area) of the training points against σ")
    fig.tight_layout()
    return fig


def shift_pairs(x: torch.Tensor, z: torch.Tensor, shifts):
    """Shift-augmented pairs (`course/03_equivariance.md`, `eq-emmse`): the image ``x`` (H, W)
    and its measurement ``z`` (H, W) shifted *together*, ``(T_g x, T_g z)`` for each g."""
    fig, axes = plt.subplots(2, len(shifts), figsize=(1.8 * len(shifts), 3.8), squeeze=False)
    for j, g in enumerate(shifts):
        _img(axes[0, j], torch.roll(x, tuple(g), (0, 1)), f"T_g x, g = {tuple(g)}")
        _img(axes[1, j], torch.roll(z, tuple(g), (0, 1)).clamp(0, 1), "T_g z")
    fig.suptitle("Augmented pairs: image and measurement shifted together")
    fig.tight_layout()
    return fig


def patch_lookup(query_image: torch.Tensor, keys_images: torch.Tensor, patch_size: int):
    """LE-MMSE as attention (`course/04_locality.md`, `eq-lemmse`): the query patch of the centre
    pixel of ``query_image`` (H, W), and the key patches (boxes) with value pixels (dots) of the
    training images ``keys_images`` (K, H, W)."""
    h, w = query_image.shape
    r = patch_size // 2
    fig, axes = plt.subplots(1, 1 + len(keys_images), figsize=(2.2 * (1 + len(keys_images)), 2.6))
    _img(axes[0], query_image.clamp(0, 1), "query: patch Π_n y")
    axes[0].add_patch(
        Rectangle(
            (w // 2 - r - 0.5, h // 2 - r - 0.5),
            patch_size,
            patch_size,
            fill=False,
            lw=2,
            color="white",
        )
    )
    rng = np.random.default_rng(0)
    for ax, img in zip(axes[1:], keys_images):
        _img(ax, img, "keys Π_m A x_i, values x_i[m]")
        for i, j in rng.integers(r, min(h, w) - r, size=(3, 2)):
            ax.add_patch(
                Rectangle(
                    (j - r - 0.5, i - r - 0.5),
                    patch_size,
                    patch_size,
                    fill=False,
                    lw=1.5,
                    color="white",
                    linestyle="--",
                )
            )
            ax.plot([j], [i], "o", color="white", markersize=3)
    fig.suptitle("One query patch against every training patch (a few drawn)")
    fig.tight_layout()
    return fig


def attention_map(weights: torch.Tensor, side: int):
    """The LE-MMSE weights of one output pixel, ``weights`` (N, side·side) = ``w_{i,m}``, one
    panel per training image ``i`` (darker = larger; grey colour map, shared scale)."""
    n = len(weights)
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows + 0.5), squeeze=False)
    top = float(weights.max())
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([]), ax.set_yticks([])
        if k < n:
            ax.imshow(weights[k].reshape(side, side).numpy(), cmap="gray_r", vmin=0, vmax=top)
            ax.set_title(f"i = {k}: {float(weights[k].sum()):.2f}", fontsize=7)
    fig.suptitle(
        "Attention map w_{i,m} of one output pixel (panel title: total weight of image i)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def category_map(ax, labels: torch.Tensor, n_colours: int = 8, label: str = "class"):
    """Draw an (H, W) integer map as categories: the ``n_colours`` most frequent labels get
    distinct colours and legend entries, every other label light grey ("other")."""
    values, counts = torch.unique(labels, return_counts=True)
    order = values[torch.argsort(counts, descending=True)][:n_colours]
    codes = torch.full(labels.shape, len(order), dtype=torch.long)
    for k, v in enumerate(order.tolist()):
        codes[labels == v] = k
    colours = list(plt.get_cmap("tab10").colors[: len(order)]) + [(0.85, 0.85, 0.85)]
    cmap = plt.matplotlib.colors.ListedColormap(colours)
    ax.imshow(codes.numpy(), cmap=cmap, vmin=-0.5, vmax=len(order) + 0.5, interpolation="nearest")
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in colours]
    names = [f"{label} {v}" for v in order.tolist()] + ["other"]
    ax.legend(
        handles, names, fontsize=5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False
    )
    ax.set_xticks([]), ax.set_yticks([])
    return ax


def degenerate_gaussians(sigma: float = 0.3):
    """Stratification (`course/05_closed_form.md`, `eq-degenerate-gaussian`): in R², a full-rank
    Gaussian atom N(μ₁, σ²I) (density contours) and a rank-1 atom N(μ₂, σ² u uᵀ) on a line. The
    line has probability 0 under the full-rank atom and 1 under the rank-1 atom, so a query on the
    line comes from the rank-1 atom with posterior probability 1."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    t = np.linspace(-2, 2, 200)
    gx, gy = np.meshgrid(t, t)
    dens = np.exp(-((gx + 0.6) ** 2 + (gy - 0.5) ** 2) / (2 * sigma**2))
    ax.contour(gx, gy, dens, levels=[0.1, 0.4, 0.8], colors="grey")
    ax.plot(t, 0.5 * t - 0.2, color="black", lw=2, label="rank-1 atom: range(Q_m) + μ")
    ax.plot([-0.6], [0.5], "o", color="grey", label="full-rank atom (contours)")
    ax.plot([0.8], [0.2], "x", color="black", markersize=9, label="query v on the line")
    ax.set_xlim(-2, 2), ax.set_ylim(-2, 2)
    ax.set_xlabel("patch coordinate 1"), ax.set_ylabel("patch coordinate 2")
    ax.set_title("Degenerate Gaussians: the lower rank wins", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
