"""Speed of ``Diagnostics.effective_patches`` (N_eff, `course/08_generalisation.md`, `eq-n-eff`)
against the ``le_mmse`` call it diagnoses, measured in one run.

Setup (issue 10's README snippet): N = 400 grey 32×32 photo crops, 4 held-out measurements,
P = 5, σ = 0.05; denoising (B = I) and deblurring (Gaussian blur std 1) with B = Tikhonov 1e-2 and
B = Aᵀ, the N_eff-heavy cases. For each case::

    t1: x_hat, diag = le_mmse(y, train, sigma, 5, A=A, B=B, return_diagnostics=True)
    t2: diag.effective_patches(0.99)

and the ratio t2 / t1 (goal: ≤ 3), in wall time and in CPU time of this process (the steadier
measure on a shared machine). ``--tau-one`` adds τ = 1 (the non-zero count).

    python benchmarks/neff_speed.py [--small] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from lemmse_lite.data import load
from lemmse_lite.estimators import le_mmse
from lemmse_lite.operators import Blur, gaussian_kernel, measure
from lemmse_lite.tables import format_table


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="smoke run (16×16, N = 12, 1 measurement)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=4)
    p.add_argument("--sigma", type=float, default=0.05)
    p.add_argument("--tau", type=float, default=0.99)
    p.add_argument("--tau-one", action="store_true", help="also time N_eff(1)")
    p.add_argument("--json", default=None, help="write the rows to this file")
    args = p.parse_args(argv)
    args.size = None
    if args.small:
        args.size, args.n_train, args.n_test = 16, 12, 1
    return args


def cases():
    A = Blur(gaussian_kernel(1.0))
    return [("denoising, B = I", None, None), ("deblurring, B = Tikhonov 1e-2", A, A.tikhonov(1e-2)),
            ("deblurring, B = A.T", A, A.T)]


def _timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process): on a shared machine the CPU time is the
    steadier measure of the work done (other processes stretch the wall time)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads)
    train = load("photos", "train", n=args.n_train, size=args.size)
    x = load("photos", "test", n=args.n_test, size=args.size)
    taus = [args.tau] + ([1.0] if args.tau_one else [])
    print(f"neff_speed: torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}; "
          f"N={len(train)}, {len(x)} measurements {tuple(x.shape[-2:])}, P=5, sigma={args.sigma}")
    rows = []
    for name, A, B in cases():
        y = measure(A, x, args.sigma, 0)
        (_, diag), t1, c1 = _timed(le_mmse, y, train, args.sigma, 5, A=A, B=B, return_diagnostics=True)
        for tau in taus:
            n_eff, t2, c2 = _timed(diag.effective_patches, tau)
            rows.append({"case": name, "tau": tau, "le_mmse wall (s)": t1, "N_eff wall (s)": t2, "ratio wall": t2 / t1,
                         "le_mmse cpu (s)": c1, "N_eff cpu (s)": c2, "ratio cpu": c2 / c1,
                         "median N_eff": float(n_eff.double().median())})
            print(f"  {name}, tau={tau}: le_mmse {t1:.2f} s, N_eff {t2:.2f} s, ratio {t2 / t1:.2f} "
                  f"(CPU time ratio {c2 / c1:.2f})", flush=True)
    fmt = {"tau": "{:g}", "median N_eff": "{:.0f}"}
    fmt.update({k: "{:.2f}" for k in rows[0] if "(s)" in k or "ratio" in k})
    print(format_table(rows, formats=fmt))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
