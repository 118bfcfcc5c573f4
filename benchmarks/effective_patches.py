"""Effective number of patches ``N_eff(0.99)`` of LE-MMSE for deconvolution, per pre-inverse B
(course/08_generalisation.md, eq-n-eff; issue 3's table).

Setup: grey 32×32 photos, Gaussian blur std 1 (``Blur(gaussian_kernel(1.0))``), P = 5, N = 400
training crops, 4 held-out measurements ``y = A x + σ e`` (test crops, seed 0), σ ∈ {0.01, 0.05},
B ∈ {None, Aᵀ, A.tikhonov(ε) for ε ∈ {1e-1, 1e-2, 1e-3}}. For each (B, σ)::

    x_hat, diag = le_mmse(y, train, sigma, 5, A=A, B=B, return_diagnostics=True)
    n_eff = diag.effective_patches(0.99)        # (4, 32, 32)

and the median, mean and 90th percentile of ``n_eff`` over all pixels of the 4 measurements (plus
PSNR of ``x_hat`` to ``x`` for context).

    python benchmarks/effective_patches.py [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import environment, noisy, table, timed, write_json

from lemmse_lite.data import load
from lemmse_lite.estimators import le_mmse
from lemmse_lite.estimators.metrics import psnr
from lemmse_lite.operators import Blur, gaussian_kernel


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny run (16×16, N = 12, 1 measurement)")
    p.add_argument("--json", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=4)
    p.add_argument("--patch", type=int, default=5)
    p.add_argument("--tau", type=float, default=0.99)
    p.add_argument("--sigmas", default="0.01,0.05")
    args = p.parse_args(argv)
    args.size = None
    if args.small:
        args.size, args.n_train, args.n_test = 16, 12, 1
    args.sigmas = [float(v) for v in args.sigmas.split(",")]
    return args


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    train = load("photos", "train", n=args.n_train, size=args.size)
    x = load("photos", "test", n=args.n_test, size=args.size)
    A = Blur(gaussian_kernel(1.0))
    pre = [("None (B = I)", None), ("A.T", A.T)] + [(f"A.tikhonov({e:g})", A.tikhonov(e)) for e in (1e-1, 1e-2, 1e-3)]
    env = environment()
    print(f"effective_patches: {env}")
    rows = []
    for name, B in pre:
        for s in args.sigmas:
            y = noisy(x, s, seed=0, A=A)
            (x_hat, diag), t1 = timed(le_mmse, y, train, s, args.patch, A=A, B=B, return_diagnostics=True)
            n_eff, t2 = timed(diag.effective_patches, args.tau)
            v = n_eff.double().flatten()
            rows.append({"B": name, "sigma": s, "median N_eff": v.median().item(), "mean N_eff": v.mean().item(),
                         "p90 N_eff": torch.quantile(v, 0.9).item(), "max N_eff": v.max().item(),
                         "PSNR(x_hat, x)": psnr(x_hat, x).mean().item(), "s (estimate + N_eff)": t1 + t2})
            r = rows[-1]
            print(f"  done: B={name}, sigma={s}: median {r['median N_eff']:g}, mean {r['mean N_eff']:.4g}, "
                  f"p90 {r['p90 N_eff']:.4g} ({t1 + t2:.1f} s)", flush=True)
    side = args.size or 32
    print(f"\n== Effective patches == N_eff({args.tau}) over all pixels of {len(x)} measurements, "
          f"Gaussian blur std 1, {side}x{side} grey photos, N={len(train)}, P={args.patch}")
    print(table(rows, ["B", "sigma", "median N_eff", "mean N_eff", "p90 N_eff", "max N_eff",
                       "PSNR(x_hat, x)", "s (estimate + N_eff)"], floatfmt="{:.4g}"))
    write_json(args.json, {"env": env, "args": vars(args), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
