"""Networks against reference estimators: the table engine of ``course/07_networks_vs_theory.md``
(``eq-agreement``).

For each split (train/test) and sigma: draw ``y = A x + sigma e`` (``operators.measure``) for a
few images ``x`` of the split, run every network on ``z = B y`` and every reference estimator on
``y``, and report ``PSNR(net, reference)`` for each reference, ``PSNR(net, x)`` and
``PSNR(reference, x)`` (dB, peak 1, averaged over the measurements). By default the one
reference is the LE-MMSE (``course/04_locality.md``, ``eq-lemmse``) at each network's patch size;
:func:`lemmse_lite.experiments.agreement` passes the references and controls of the course.

This module sits above models and estimators; neither imports it.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import torch

from ..checks import check_sigma
from ..estimators import le_mmse
from ..estimators.metrics import psnr
from ..files import atomic_write
from ..operators import measure, measurement_seed
from ..plotting import image_grid, save_figure
from ..tables import format_table as _format_table

__all__ = ["COLUMNS", "ComparisonTable", "compare", "format_table", "save_comparison_figure",
           "save_results"]

COLUMNS = ("architecture", "patch_size", "split", "sigma", "n", "psnr_net_lemmse", "psnr_net_x",
           "psnr_lemmse_x")


class ComparisonTable(list):
    """A list of row dicts; ``images`` holds tensors when kept: ``images[(split, sigma)] =
    {"truth", "measurement" (= B y), "references": {name: x}, "lemmse": {P: x} (default
    references only), "networks": {name: x}}``. ``str(table)`` is :func:`format_table`."""

    images: dict

    def __init__(self, rows=(), images=None):
        super().__init__(rows)
        self.images = images or {}

    def __str__(self):
        return format_table(self)


def _pick(images, n, gen, name, needed=True):
    """``n`` images drawn without replacement by ``gen``; the permutation is drawn even for a split
    that is not ``needed``, so a split's measurements do not depend on which splits are asked for
    (and ``n`` is checked only where it is used)."""
    if not torch.is_tensor(images) or images.ndim != 4:
        raise TypeError(f"{name} must be a tensor (N, C, H, W)")
    perm = torch.randperm(images.shape[0], generator=gen)
    if needed and not 1 <= n <= images.shape[0]:
        raise ValueError(f"n_measurements must be in [1, {images.shape[0]}] for {name}, got {n}")
    return images[perm[:n]]


def _device_of(model):
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _lemmse_name(P):
    return f"LE-MMSE({P})"


def default_references(models, train_images, A, B, patch_size=None, chunk_size=None):
    """``{"LE-MMSE(P)": f(y, sigma)}`` for the patch size of each model (or ``patch_size``)."""
    sizes = sorted({patch_size or m.patch_size for m in models.values()})

    def make(P):
        return lambda y, sigma: le_mmse(y, train_images, sigma, P, A=A, B=B, chunk_size=chunk_size).cpu()

    return {_lemmse_name(P): make(P) for P in sizes}


def _check_inputs(models, sigmas, splits, references):
    if not isinstance(models, dict) or not models:
        raise TypeError("models must be a non-empty dict {name: model}")
    sigmas = [float(s) for s in (sigmas if hasattr(sigmas, "__iter__") else [sigmas])]
    if not sigmas:
        raise ValueError("sigmas must hold at least one noise level, got none")
    check_sigma(torch.tensor(sigmas, dtype=torch.float64), len(sigmas), name="sigmas")  # the one sigma rule
    if not splits or any(s not in ("train", "test") for s in splits):
        raise ValueError(f"splits must be a non-empty subset of ('train', 'test'), got {splits!r}")
    if references is not None and (not isinstance(references, dict) or not references):
        raise TypeError("references must be None or a non-empty dict {name: f(y, sigma) or "
                        "{(split, sigma): tensor}}")
    return sigmas


def _reference_images(references, y, sigma, split):
    """Each reference's estimate of ``y``: call it, or read the precomputed ``{(split, sigma): x}``."""
    out = {}
    for name, ref in references.items():
        if callable(ref):
            out[name] = ref(y, sigma).float().cpu()
        elif (split, sigma) in ref:
            out[name] = ref[(split, sigma)].float().cpu()
        else:
            raise KeyError(f"reference {name!r} has no precomputed images for {(split, sigma)}")
    return out


def _rows(models, nets, refs, x, split, sigma, sizes):
    rows = []
    ref_x = {name: float(psnr(r, x).mean()) for name, r in refs.items()}
    for name, out in nets.items():
        row = {"architecture": name, "patch_size": sizes[name], "split": split, "sigma": sigma,
               "n": x.shape[0], "psnr_net_x": float(psnr(out, x).mean()),
               "psnr_net_refs": {r: float(psnr(out, im).mean()) for r, im in refs.items()},
               "psnr_refs_x": ref_x}
        own = _lemmse_name(sizes[name])
        if own in refs:
            row["psnr_net_lemmse"], row["psnr_lemmse_x"] = row["psnr_net_refs"][own], ref_x[own]
        rows.append(row)
    return rows


def compare(models, train_images, test_images, A=None, B=None, sigmas=(0.1,), patch_size=None,
            n_measurements=4, seed=0, chunk_size=None, progress=True, keep_images=False, device=None,
            references=None, splits=("train", "test")):
    """Compare networks with reference estimators on training and test measurements.

    Args:
        models: ``{name: model}``, each ``model(z, sigma) -> x_hat`` trained for ``(A, B)``.
        train_images: ``(N, C, H, W)`` -- the set the networks were trained on and the default
            LE-MMSE's prior; ``test_images``: ``(M, C, H, W)`` held-out images.
        A, B: forward operator and pre-inverse (``None`` = identity). The references receive the
            raw ``y``; the networks receive ``B y``.
        sigmas: noise levels. patch_size: default LE-MMSE patch size; ``None`` = each model's own.
        n_measurements: images drawn (seeded) from each split; one noise draw each per sigma.
        seed: selection and noise seed. chunk_size: streamed to the default ``le_mmse``.
        keep_images: keep the tensors in ``table.images``.
        device: where measurements are computed (default: the first model's device).
        references: ``{name: f(y, sigma) -> x_hat}`` or ``{name: {(split, sigma): x_hat}}``
            (precomputed for exactly the measurements this call draws); default: LE-MMSE at each
            model's patch size (:func:`default_references`).
        splits: which splits to measure.

    Returns:
        :class:`ComparisonTable` of rows ``{architecture, patch_size, split, sigma, n,
        psnr_net_x, psnr_net_refs: {name: dB}, psnr_refs_x: {name: dB}}``, plus
        ``psnr_net_lemmse``/``psnr_lemmse_x`` when the LE-MMSE at the model's patch size is
        among the references.
    """
    from tqdm.auto import tqdm

    sigmas = _check_inputs(models, sigmas, splits, references)
    gen = torch.Generator().manual_seed(seed)
    picked = {"train": _pick(train_images, n_measurements, gen, "train_images", "train" in splits),
              "test": _pick(test_images, n_measurements, gen, "test_images", "test" in splits)}
    sizes = {name: patch_size or m.patch_size for name, m in models.items()}
    device = torch.device(device) if device is not None else _device_of(next(iter(models.values())))
    if references is None:
        references = default_references(models, train_images, A, B, patch_size, chunk_size)
    table = ComparisonTable()
    jobs = [(split, s) for split in ("train", "test") if split in splits for s in sigmas]
    for split, sigma in tqdm(jobs, disable=not progress, desc="compare"):
        x = picked[split].to(device)
        # the noise depends on (seed, split, sigma) only: the same measurement whatever else is asked
        y = measure(A, x, sigma, measurement_seed(seed, split, sigma))
        z = B(y) if B is not None else y
        refs = _reference_images(references, y, sigma, split)
        with torch.no_grad():
            nets = {n: m.eval()(z.to(_device_of(m)), sigma).float().cpu() for n, m in models.items()}
        table.extend(_rows(models, nets, refs, x.cpu(), split, sigma, sizes))
        if keep_images:
            lemmse = {int(r[8:-1]): im for r, im in refs.items() if r.startswith("LE-MMSE(")}
            table.images[(split, sigma)] = {"truth": x.cpu(), "measurement": z.cpu(), "references": refs,
                                            "lemmse": lemmse, "networks": nets}
    return table


def format_table(rows, columns=COLUMNS):
    """Fixed-width text table of ``rows`` (``tables.format_table``; sigma with 3 decimals)."""
    return _format_table(rows, columns, {"sigma": "{:.3f}"})


def save_results(rows, out_dir, name="compare"):
    """Write ``rows`` to ``out_dir/<name>.json`` and ``out_dir/<name>.csv``; returns both paths.

    Non-finite floats (e.g. an infinite PSNR of identical images) become ``null`` in the JSON
    (strict JSON has no ``Infinity``) and stay ``inf`` in the CSV.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [dict(r) for r in rows]
    json_path, csv_path = out / f"{name}.json", out / f"{name}.csv"

    def strict(v):
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        return None if isinstance(v, float) and not math.isfinite(v) else v

    atomic_write(json_path, json.dumps([strict(r) for r in rows], indent=2, allow_nan=False) + "\n")
    keys = list(dict.fromkeys(k for r in rows for k in r)) or list(COLUMNS)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, table.getvalue())
    return json_path, csv_path


def save_comparison_figure(path, measurement, network, lemmse, truth, max_images=4,
                           titles=("measurement", "network", "LE-MMSE", "truth")):
    """PNG grid (``plotting.image_grid``), one row per image, columns measurement / network /
    LE-MMSE / truth. All four are ``(B, C, H, W)`` tensors (C = 1 or 3), shown clipped to [0, 1]."""
    n = min(max_images, truth.shape[0])
    rows = [[cols[i] for cols in (measurement, network, lemmse, truth)] for i in range(n)]
    fig = image_grid(rows, titles=list(titles))
    return save_figure(fig, path, dpi=100)
