"""Networks against the LE-MMSE: the check of THEORY.md §7.

For each split (train/test), sigma and architecture: draw ``y = A x + sigma e`` for a few images
``x`` of the split, run the network on ``z = B y`` and the LE-MMSE (§4) on ``y`` with the same
training set, and report ``PSNR(net, LE-MMSE)``, ``PSNR(net, x)`` and ``PSNR(LE-MMSE, x)`` (dB,
peak 1, averaged over the measurements). The paper reports ``PSNR(net, LE-MMSE) >~ 25 dB``.

This module sits above models and estimators; neither imports it.
Note: a :class:`~lemmse_lite.models.LocalUNet` is equivariant to even shifts only, so its optimum
is the LE-MMSE restricted to ``m = n (mod 2)``; it is compared with the plain LE-MMSE here.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch

from .metrics import psnr

__all__ = ["ComparisonTable", "compare", "format_table", "save_comparison_figure", "save_results"]

COLUMNS = (
    "architecture",
    "patch_size",
    "split",
    "sigma",
    "n",
    "psnr_net_lemmse",
    "psnr_net_x",
    "psnr_lemmse_x",
)


class ComparisonTable(list):
    """A list of row dicts (keys :data:`COLUMNS`); ``images`` holds tensors when kept:
    ``images[(split, sigma)] = {"truth", "measurement" (= B y), "lemmse": {P: x}, "networks":
    {name: x}}``. ``str(table)`` is :func:`format_table`."""

    images: dict

    def __init__(self, rows=(), images=None):
        super().__init__(rows)
        self.images = images or {}

    def __str__(self):
        return format_table(self)


def _pick(images, n, gen, name):
    if not torch.is_tensor(images) or images.ndim != 4:
        raise TypeError(f"{name} must be a tensor (N, C, H, W)")
    if not 1 <= n <= images.shape[0]:
        raise ValueError(f"n_measurements must be in [1, {images.shape[0]}] for {name}, got {n}")
    return images[torch.randperm(images.shape[0], generator=gen)[:n]]


def _device_of(model):
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def compare(
    models,
    train_images,
    test_images,
    A=None,
    B=None,
    sigmas=(0.1,),
    patch_size=None,
    n_measurements=4,
    seed=0,
    chunk_size=None,
    progress=True,
    keep_images=False,
    device=None,
):
    """Compare networks with the LE-MMSE on training and test measurements (THEORY.md §7).

    Args:
        models: ``{name: model}``, each ``model(z, sigma) -> x_hat`` trained for ``(A, B)``.
        train_images: ``(N, C, H, W)`` -- the set the networks were trained on and the LE-MMSE's
            prior ``D``; ``test_images``: ``(M, C, H, W)`` held-out images.
        A, B: forward operator and pre-inverse (``None`` = identity). The LE-MMSE receives the raw
            ``y`` and applies ``B`` itself; the networks receive ``B y``.
        sigmas: noise levels. patch_size: LE-MMSE patch size; ``None`` = each model's own.
        n_measurements: images drawn (seeded) from each split; one noise draw each per sigma.
        seed: selection and noise seed. chunk_size: streamed to ``le_mmse``.
        keep_images: keep the tensors in ``table.images`` (for :func:`save_comparison_figure`).
        device: where measurements and the LE-MMSE are computed (default: the first model's
            device; training chunks are moved there as they stream).

    Returns:
        :class:`ComparisonTable` of rows ``{architecture, patch_size, split, sigma, n,
        psnr_net_lemmse, psnr_net_x, psnr_lemmse_x}``.
    """
    from tqdm.auto import tqdm

    from .estimators import le_mmse

    if not isinstance(models, dict) or not models:
        raise TypeError("models must be a non-empty dict {name: model}")
    sigmas = [float(s) for s in (sigmas if hasattr(sigmas, "__iter__") else [sigmas])]
    if any(s <= 0 for s in sigmas):
        raise ValueError(f"sigmas must be positive, got {sigmas}")
    gen = torch.Generator().manual_seed(seed)
    splits = {
        "train": _pick(train_images, n_measurements, gen, "train_images"),
        "test": _pick(test_images, n_measurements, gen, "test_images"),
    }
    sizes = {name: patch_size or m.patch_size for name, m in models.items()}
    device = torch.device(device) if device is not None else _device_of(next(iter(models.values())))
    table = ComparisonTable()
    jobs = [(split, s) for split in splits for s in sigmas]
    for k, (split, sigma) in enumerate(tqdm(jobs, disable=not progress, desc="compare")):
        x = splits[split].to(device)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 1 + k))
        y = (A(x) if A is not None else x) + sigma * noise.to(x)
        z = B(y) if B is not None else y
        le = {
            P: le_mmse(y, train_images, sigma, P, A=A, B=B, chunk_size=chunk_size).cpu()
            for P in sorted(set(sizes.values()))
        }
        nets, x_cpu = {}, x.cpu()
        for name, model in models.items():
            with torch.no_grad():
                nets[name] = model.eval()(z.to(_device_of(model)), sigma).float().cpu()
            ref = le[sizes[name]].float()
            table.append(
                {
                    "architecture": name,
                    "patch_size": sizes[name],
                    "split": split,
                    "sigma": sigma,
                    "n": x.shape[0],
                    "psnr_net_lemmse": float(psnr(nets[name], ref).mean()),
                    "psnr_net_x": float(psnr(nets[name], x_cpu).mean()),
                    "psnr_lemmse_x": float(psnr(ref, x_cpu).mean()),
                }
            )
        if keep_images:
            table.images[(split, sigma)] = {
                "truth": x_cpu,
                "measurement": z.cpu(),
                "lemmse": le,
                "networks": nets,
            }
    return table


def format_table(rows, columns=COLUMNS):
    """Fixed-width text table of ``rows`` (floats with 2 decimals, sigma with 3)."""

    def cell(key, v):
        if isinstance(v, float):
            return f"{v:.3f}" if key == "sigma" else f"{v:.2f}"
        return str(v)

    body = [[cell(c, r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    line = lambda cells: "  ".join(s.rjust(w) for s, w in zip(cells, widths))
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(b) for b in body])


def save_results(rows, out_dir, name="compare"):
    """Write ``rows`` to ``out_dir/<name>.json`` and ``out_dir/<name>.csv``; returns both paths.

    Non-finite floats (e.g. an infinite PSNR of identical images) become ``null`` in the JSON
    (strict JSON has no ``Infinity``) and stay ``inf`` in the CSV.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"
    strict = [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in rows
    ]
    json_path.write_text(json.dumps(strict, indent=2, allow_nan=False) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r)) or list(COLUMNS)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


def save_comparison_figure(
    path,
    measurement,
    network,
    lemmse,
    truth,
    max_images=4,
    titles=("measurement", "network", "LE-MMSE", "truth"),
):
    """PNG grid, one row per image, columns measurement / network / LE-MMSE / truth.

    All four are ``(B, C, H, W)`` tensors (C = 1 or 3), shown clipped to [0, 1].
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = [measurement, network, lemmse, truth]
    n = min(max_images, truth.shape[0])
    fig = Figure(figsize=(2 * len(cols), 2 * n))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, len(cols), squeeze=False)
    for i in range(n):
        for j, (imgs, title) in enumerate(zip(cols, titles)):
            img = imgs[i].detach().float().cpu().clamp(0, 1)
            ax = axes[i][j]
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return Path(path)
