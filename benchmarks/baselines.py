"""Reference implementations of physics-agnostic LE-MMSE (THEORY.md §4.1, ``A = B = I``), used ONLY
to time and check :func:`lemmse_lite.estimators.le_mmse` in the benchmarks of this folder::

    x̂(y)[n] = Σ_{i,m} w_{i,m} x_i[m],   w_{i,m} = softmax_{i,m}( −‖Π_n y − Π_m x_i‖² / (2σ²) ).

Three versions, all written independently of the package's engine (only the patch extraction
helpers of :mod:`lemmse_lite.estimators.patches` are shared):

* :func:`paper_style_le_mmse` — the approach of the paper's own code: one measurement at a time,
  for each training batch all pairwise patch distances with ``torch.cdist`` on **float16** query
  and key patches, then a running log-sum-exp over training batches (float32 accumulators).
  What actually happens on CPU with torch 2.14: ``torch.cdist`` *accepts* float16 inputs on CPU and
  returns float16 distances; with more than 25 rows on either side its default
  ``compute_mode="use_mm_for_euclid_dist_if_necessary"`` takes the matrix-product expansion
  ``‖a‖² + ‖b‖² − 2 a·b`` in float16, exactly as on the GPU. So we call it as is; the float16
  rounding (and cancellation) of the distances is kept, and only afterwards are the distances cast
  to float32, squared and turned into log-weights. (Measured on this machine: float16 cdist of
  1024×32768 patch pairs is ~7x slower than float32 cdist on CPU and its distances differ by up to
  ~1e-2 from float32 ones.)
* :func:`straightforward_le_mmse` — float32, per measurement, distances by one matrix product per
  chunk of ``key_chunk`` training patches (``‖q‖² + ‖k‖² − 2 q·k``, no centring), online
  log-sum-exp across chunks.
* :func:`float64_le_mmse` — the same straightforward method in float64: the accuracy reference.

All take ``y`` (B, C, H, W) noisy measurements ``x + σe``, ``train`` (N, C, H, W) tensor, ``sigma``
float, odd patch size ``P``; they return (B, C, H, W) in the working dtype (float32 / float64).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch

from lemmse_lite.estimators.patches import centre_pixels, extract_patches
from lemmse_lite.operators import measure
from lemmse_lite.profiles import get_profile
from lemmse_lite.tables import format_table


class _OnlineSoftmax:
    """Running max ``m``, denominator ``d`` and numerator ``num`` of a softmax over key chunks."""

    def __init__(self, n_queries, value_dim, dtype, device):
        self.m = torch.full((n_queries,), -math.inf, dtype=dtype, device=device)
        self.d = torch.zeros(n_queries, dtype=dtype, device=device)
        self.num = torch.zeros(n_queries, value_dim, dtype=dtype, device=device)

    def update(self, logits, values):
        """logits (Q, K), values (K, V)."""
        m_new = torch.maximum(self.m, logits.amax(1))
        w = torch.exp(logits - m_new[:, None])
        alpha = torch.exp(self.m - m_new)
        self.d = self.d * alpha + w.sum(1)
        self.num = self.num * alpha[:, None] + w @ values
        self.m = m_new

    def result(self):
        return self.num / self.d[:, None]


def _check(y, train, patch_size):
    if y.dim() != 4 or train.dim() != 4 or y.shape[1:] != train.shape[1:]:
        raise ValueError(f"y {tuple(y.shape)} and train {tuple(train.shape)} must be (B|N, C, H, W) alike")
    if patch_size % 2 != 1:
        raise ValueError("patch_size must be odd")


def paper_style_le_mmse(y, train, sigma, patch_size, train_batch: int = 32):
    """LE-MMSE (B = I) the paper's way: per measurement, per training batch of ``train_batch``
    images, float16 ``torch.cdist`` between all query patches and all key patches, then a running
    log-sum-exp (float32). Returns float32 (B, C, H, W)."""
    _check(y, train, patch_size)
    bsz, c, h, w = y.shape
    d = c * patch_size**2
    y = y.float()
    out = torch.empty(bsz, h * w, c, dtype=torch.float32, device=y.device)
    two_var = 2.0 * float(sigma) ** 2
    for b in range(bsz):
        q16 = extract_patches(y[b : b + 1], patch_size)[0].half()  # (HW, D) float16
        acc = _OnlineSoftmax(h * w, c, torch.float32, y.device)
        for i0 in range(0, len(train), train_batch):
            chunk = train[i0 : i0 + train_batch].to(device=y.device, dtype=torch.float32)
            k16 = extract_patches(chunk, patch_size).reshape(-1, d).half()  # (nb·HW, D) float16
            dist16 = torch.cdist(q16, k16)  # float16 distances (mm expansion in float16)
            logits = dist16.float().square_().div_(-two_var)
            acc.update(logits, centre_pixels(chunk).reshape(-1, c))
        out[b] = acc.result()
    return out.reshape(bsz, h, w, c).permute(0, 3, 1, 2).contiguous()


def _straightforward(y, train, sigma, patch_size, key_chunk, dtype):
    _check(y, train, patch_size)
    bsz, c, h, w = y.shape
    d = c * patch_size**2
    y = y.to(dtype)
    images_per_chunk = max(1, key_chunk // (h * w))
    # training keys/values once, in chunks of ~key_chunk patches (kept: reused by every measurement)
    chunks = []
    for i0 in range(0, len(train), images_per_chunk):
        x = train[i0 : i0 + images_per_chunk].to(device=y.device, dtype=dtype)
        k = extract_patches(x, patch_size).reshape(-1, d)
        chunks.append((k, (k * k).sum(1), centre_pixels(x).reshape(-1, c)))
    out = torch.empty(bsz, h * w, c, dtype=dtype, device=y.device)
    two_var = 2.0 * float(sigma) ** 2
    for b in range(bsz):
        q = extract_patches(y[b : b + 1], patch_size)[0]  # (HW, D)
        qq = (q * q).sum(1)
        acc = _OnlineSoftmax(h * w, c, dtype, y.device)
        for k, kk, vals in chunks:
            d2 = qq[:, None] + kk[None, :] - 2.0 * (q @ k.T)
            acc.update(d2.div_(-two_var), vals)
        out[b] = acc.result()
    return out.reshape(bsz, h, w, c).permute(0, 3, 1, 2).contiguous()


def straightforward_le_mmse(y, train, sigma, patch_size, key_chunk: int = 32768):
    """LE-MMSE (B = I) in float32: per measurement, matmul distances over chunks of ``key_chunk``
    training patches, online log-sum-exp. Returns float32 (B, C, H, W)."""
    return _straightforward(y, train, sigma, patch_size, key_chunk, torch.float32)


def float64_le_mmse(y, train, sigma, patch_size, key_chunk: int = 32768):
    """:func:`straightforward_le_mmse` in float64: the accuracy reference. Returns float64."""
    return _straightforward(y, train, sigma, patch_size, key_chunk, torch.float64)


# ----------------------------------------------------------------------------- benchmark helpers
# (timing, tables, JSON) shared by the scripts of this folder


def timed(fn, *args, sync=None, **kwargs):
    """``(result, seconds)`` of one call; ``sync`` (e.g. ``torch.cuda.synchronize``) is called
    before starting and before stopping the clock."""
    if sync is not None:
        sync()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    if sync is not None:
        sync()
    return out, time.perf_counter() - t


def noisy(x, sigma, seed=0, A=None):
    """``A x + σ e`` with a fixed int seed (``A=None``: identity): the package's one simulator
    :func:`lemmse_lite.operators.measure`, under the argument order of these scripts."""
    return measure(A, x, sigma, seed)


def max_abs(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def table(rows, columns, floatfmt="{:.3g}") -> str:
    """Plain-text table of ``rows`` (list of dicts) over ``columns``: a thin alias of
    :func:`lemmse_lite.tables.format_table` (left-aligned, floats as ``floatfmt``), kept for the
    scripts of this folder that call it."""
    cells = [{c: floatfmt.format(v) if isinstance(v, float) else v for c, v in r.items()} for r in rows]
    return format_table(cells, columns, align="left")


def environment(device=None) -> dict:
    env = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    if device is not None and torch.device(device).type == "cuda":
        env["device"] = torch.cuda.get_device_name(device)
    else:
        env["device"] = "cpu"
    return env


def write_json(path, payload) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2, default=str)
        print(f"\nresults written to {path}")


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def augmented(base: torch.Tensor, i0: int, i1: int) -> torch.Tensor:
    """Images ``i0:i1`` of the infinite augmentation of ``base``: image ``j`` is copy
    ``k = j // len(base)`` of crop ``j % len(base)``, flipped if k is odd and rolled by (5k, 3k)."""
    out = []
    n = len(base)
    j = i0
    while j < i1:
        k, r = divmod(j, n)
        stop = min(i1, (k + 1) * n)
        x = base[r : r + stop - j]
        if k:
            x = torch.roll(x, shifts=(5 * k, 3 * k), dims=(-2, -1))
            if k % 2:
                x = torch.flip(x, dims=(-1,))
        out.append(x)
        j = stop
    return torch.cat(out).contiguous()


def positive_list(kind):
    """An argparse ``type`` for a comma-separated list of positive ``kind`` values ("1,2,4" ->
    (1, 2, 4)); anything else is a one-line argparse error."""
    def parse(text):
        try:
            values = tuple(kind(t) for t in text.split(","))
        except ValueError:
            values = ()
        if not values or min(values) <= 0:
            raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {text!r}")
        return values
    return parse


def network_study_args(argv, doc, name, default, help, extra=None):
    """Arguments of the scripts that train networks and compare them with LE-MMSEs
    (``convergence.py``, ``p_eff_width.py``): ``--{name}`` (positive integers, default ``default``),
    ``--n`` test measurements (>= 2), ``--threads``, ``--json``; ``extra(parser)`` adds the rest."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument(f"--{name}", type=int, nargs="+", default=default, help=help)
    p.add_argument("--n", type=int, default=32, help="test measurements per sigma")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    if any(v < 1 for v in getattr(args, name)):
        p.error(f"--{name} must be positive integers, got {getattr(args, name)}")
    if args.n < 2:
        p.error(f"--n must be an integer >= 2, got {args.n}")
    return args


def run_study(args, items, measure, columns) -> list:
    """Run ``measure(item, profile, n)`` (a list of row dicts) for every item under the quick
    profile with ``args.threads`` threads, printing the table so far after each, then the
    environment; write rows and environment to ``args.json``. Returns the rows."""
    torch.set_num_threads(args.threads)
    prof = get_profile("quick")
    rows = []
    for item in items:
        rows += measure(item, prof, args.n)
        print(table(rows, columns))
    print(environment())
    write_json(args.json, {"rows": rows, "environment": environment()})
    return rows
