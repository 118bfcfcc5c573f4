"""GPU throughput of ``le_mmse``: 100 measurements against 50,000 colour 32×32 training images.

Setup: P = 5, σ = 0.2, B = None (denoising). Training images: the 2,147 ``photos-rgb`` training
crops, augmented to 50,000 by circular shifts and flips (copy k of crop j: rolled by (5k, 3k),
flipped left-right when k is odd), produced lazily as a generator of ``--gen-chunk`` images built on
the device, so memory stays bounded. Measurements: ``photos-rgb`` test crops (repeated with the
same augmentation when more are asked than exist) + σ e, seed 0.

Reported, in one run:

* seconds of one ``le_mmse`` call and the achieved TFLOP/s, counting ``2·D·Q·K`` flops for the
  score matmul plus ``2·C·Q·K`` for the value product (``D = C·P²`` = 75, ``C`` = 3,
  ``Q`` = measurements·H·W queries, ``K`` = N·H·W keys): ``flops = 2·(D + C)·Q·K``;
* the ratio to both baselines of ``baselines.py``, which are timed on a subset (``--base-meas``
  measurements × ``--base-n`` training images) and **extrapolated linearly** in measurements and N;
* max abs error against float64 (``float64_le_mmse``, independent code) on ``--acc-meas``
  measurements × ``--acc-n`` training images.

TF32 is switched off (``torch.backends.cuda.matmul.allow_tf32 = False``,
``torch.backends.cudnn.allow_tf32 = False``): the scores are true float32.

Block sizes: the engine scores keys in ``query_block × key_block`` blocks given by an
``EngineConfig``; the package default comes from ``lemmse_lite.engine.default_engine(device)``
(CPU 1024 × 1024, CUDA 16384 × 16384). This script builds
``EngineConfig(--query-block, --key-block, fused=--fused)`` (default 32768 × 16384 on CUDA, the
package default on CPU) and
passes it to every ``le_mmse`` call, unless ``--package-blocks`` is given (then the device default);
it prints and records the configuration actually used.

    python benchmarks/gpu.py            # CUDA if available (full size), else CPU
    python benchmarks/gpu.py --small    # tiny run, works on CPU (used by the tests)
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import (
    augmented,
    environment,
    float64_le_mmse,
    max_abs,
    paper_style_le_mmse,
    straightforward_le_mmse,
    table,
    timed,
    write_json,
)

from lemmse_lite.data import load
from lemmse_lite.engine import EngineConfig, default_engine
from lemmse_lite.estimators import DEFAULT_MAX_MEMORY, le_mmse


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny run (16×16, few images); fine on CPU")
    p.add_argument("--json", default=None)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--n-meas", type=int, default=100)
    p.add_argument("--n-train", type=int, default=50_000)
    p.add_argument("--patch", type=int, default=5)
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--gen-chunk", type=int, default=2048, help="images per generated training chunk")
    p.add_argument("--max-memory", type=int, default=None,
                   help="le_mmse max_memory in bytes (default: the package's 256 MiB)")
    p.add_argument("--query-block", type=int, default=None,
                   help="engine query block (default: 32768 on CUDA, the package default on CPU)")
    p.add_argument("--key-block", type=int, default=None,
                   help="engine key block (default: 16384 on CUDA, the package default on CPU)")
    p.add_argument("--package-blocks", action="store_true", help="use the engine's default configuration")
    p.add_argument("--fused", action="store_true", help="fused memory-efficient attention kernel (CUDA)")
    p.add_argument("--base-meas", type=int, default=1)
    p.add_argument("--base-n", type=int, default=2000)
    p.add_argument("--acc-meas", type=int, default=4)
    p.add_argument("--acc-n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=None, help="CPU torch threads (default: torch's)")
    args = p.parse_args(argv)
    args.size = None
    if args.small:
        args.size, args.n_meas, args.n_train, args.gen_chunk = 16, 2, 40, 16
        args.base_meas, args.base_n, args.acc_meas, args.acc_n = 1, 8, 1, 8
        args.threads = args.threads or 1
    return args


def engine_config(args, cuda: bool, default: EngineConfig) -> EngineConfig:
    """The configuration of this run: the flags given, else 32768 × 16384 on CUDA, else the default."""
    qb = args.query_block or (32768 if cuda else default.query_block)
    kb = args.key_block or (16384 if cuda else default.key_block)
    return EngineConfig(qb, kb, args.fused or default.fused)


def main(argv=None):
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    sync = torch.cuda.synchronize if cuda else None
    default = default_engine(device)
    eng = default if args.package_blocks else engine_config(args, cuda, default)
    env = environment(device)
    print(f"gpu: device = {device} ({env['device']}), TF32 matmul = {torch.backends.cuda.matmul.allow_tf32}, "
          f"engine = {eng} (package default {default})")

    base = load("photos-rgb", "train", size=args.size).to(device)
    test = load("photos-rgb", "test", size=args.size).to(device)
    x = augmented(test, 0, args.n_meas)
    y = x + args.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)
    c, h, w = x.shape[1:]
    P, s = args.patch, args.sigma
    kw = {"engine": eng} if args.max_memory is None else {"engine": eng, "max_memory": args.max_memory}

    def train_stream(n):
        for i0 in range(0, n, args.gen_chunk):
            yield augmented(base, i0, min(n, i0 + args.gen_chunk))

    # warm-up (cuBLAS handles, kernels) on a small problem
    le_mmse(y[:1], augmented(base, 0, 4), s, P, **kw)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _, t_fast = timed(le_mmse, y, train_stream(args.n_train), s, P, sync=sync, **kw)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    D = c * P * P
    Q, K = args.n_meas * h * w, args.n_train * h * w
    flops = 2 * (D + c) * Q * K
    tflops = flops / t_fast / 1e12

    # baselines on a subset, extrapolated linearly in measurements and N
    sub = augmented(base, 0, args.base_n)
    ys = y[: args.base_meas]
    scale = (args.n_meas / len(ys)) * (args.n_train / args.base_n)
    _, t_paper = timed(paper_style_le_mmse, ys, sub, s, P, sync=sync)
    _, t_straight = timed(straightforward_le_mmse, ys, sub, s, P, sync=sync)
    _, t_fast_sub = timed(le_mmse, ys, sub, s, P, sync=sync, **kw)
    rows = [
        {"method": "le_mmse", "timed on": f"{args.n_meas} x {args.n_train}", "seconds": t_fast,
         "seconds (full size)": t_fast, "le_mmse speed-up": 1.0},
        {"method": "paper_style", "timed on": f"{len(ys)} x {args.base_n}", "seconds": t_paper,
         "seconds (full size)": t_paper * scale, "le_mmse speed-up": t_paper * scale / t_fast},
        {"method": "straightforward", "timed on": f"{len(ys)} x {args.base_n}", "seconds": t_straight,
         "seconds (full size)": t_straight * scale, "le_mmse speed-up": t_straight * scale / t_fast},
        {"method": "le_mmse (subset)", "timed on": f"{len(ys)} x {args.base_n}", "seconds": t_fast_sub,
         "seconds (full size)": t_fast_sub * scale, "le_mmse speed-up": t_fast_sub * scale / t_fast},
    ]

    # accuracy against float64 on a subset
    acc_train = augmented(base, 0, args.acc_n)
    ya = y[: args.acc_meas]
    ref = float64_le_mmse(ya.double(), acc_train.double(), s, P)
    err = max_abs(le_mmse(ya, acc_train, s, P, **kw), ref)
    err_pkg64 = max_abs(le_mmse(ya.double(), acc_train, s, P, **kw), ref)

    print(f"\n== GPU throughput == {args.n_meas} measurements x {args.n_train} training images, "
          f"{c}x{h}x{w}, P={P}, sigma={s}, device={env['device']}")
    print(f"le_mmse: {t_fast:.3f} s, {flops:.3e} flop = 2*(D + C)*Q*K with D={D}, C={c}, Q={Q}, K={K} "
          f"-> {tflops:.2f} TFLOP/s; peak CUDA memory {peak:.2f} GiB")
    print(table(rows, ["method", "timed on", "seconds", "seconds (full size)", "le_mmse speed-up"]))
    print("(baselines and 'le_mmse (subset)' are timed on the subset and extrapolated linearly in "
          "measurements and N)")
    print(f"\n== GPU accuracy == {len(ya)} measurements x {args.acc_n} training images vs float64_le_mmse")
    print(table([{"le_mmse float32 err": err, "le_mmse float64 err": err_pkg64, "tol": 1e-5}],
                ["le_mmse float32 err", "le_mmse float64 err", "tol"]))
    out = {"env": env, "args": vars(args), "seconds": t_fast, "flops": flops, "tflops": tflops,
           "peak_cuda_gib": peak, "blocks": [eng.query_block, eng.key_block], "fused": eng.fused,
           "default_max_memory": DEFAULT_MAX_MEMORY, "rows": rows,
           "max_abs_err_float32": err, "max_abs_err_float64": err_pkg64}
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
