"""GPU throughput of ``le_mmse``: 100 measurements against 50,000 colour 32×32 training images.

Setup: P = 5, σ = 0.2, B = None (denoising). Training images: the 2,147 ``photos-rgb`` training
crops, augmented to 50,000 by circular shifts and flips (copy k of crop j: rolled by (5k, 3k),
flipped left-right when k is odd), produced lazily as a generator of ``--gen-chunk`` images built on
the device, so memory stays bounded. Measurements: ``photos-rgb`` test crops (repeated with the
same augmentation when more are asked than exist) + σ e, seed 0.

Two engine paths (``lemmse_lite.estimators.engine.EngineConfig``): ``blocked`` (the score blocks of
the streaming engine) and, on CUDA, ``fused`` (PyTorch's fused memory-efficient attention kernel in
float32, ``LEMMSE_FUSED=1``). Reported, in one run:

* accuracy: max abs error of each path against float64 (``float64_le_mmse``, independent code) on
  ``--acc-meas`` measurements × ``--acc-n`` training images at every σ of ``--acc-sigmas``
  (default 0.05 and 0.2; fresh noise, seed 1), against the tolerance 1e-5 at σ ≥ 0.05;
* timing: seconds of one ``le_mmse`` call per path at full size and the achieved TFLOP/s,
  counting ``2·D·Q·K`` flops for the score matmul plus ``2·C·Q·K`` for the value product
  (``D = C·P²`` = 75, ``C`` = 3, ``Q`` = measurements·H·W queries, ``K`` = N·H·W keys):
  ``flops = 2·(D + C)·Q·K``, beside the card's dense fp32 peak (``--peak-tflops``, else the
  table :data:`FP32_PEAK_TFLOPS` by device name; H200: 67 TFLOP/s, so the score products alone
  bound the 100 × 50k run at ≈ 12 s);
* the ratio of the fastest path to both baselines of ``baselines.py``, timed on a subset
  (``--base-meas`` measurements × ``--base-n`` training images) and **extrapolated linearly**;
* a verdict: the fused path should become the CUDA default only if it is faster and within the
  tolerance at every σ ≥ 0.05.

TF32 is switched off (``torch.backends.cuda.matmul.allow_tf32 = False``,
``torch.backends.cudnn.allow_tf32 = False``): the scores are true float32.

Block sizes: each path uses ``EngineConfig(--query-block, --key-block, fused)`` (default
32768 × 16384 on CUDA, the package default on CPU), or the device default blocks of
``lemmse_lite.estimators.engine.default_engine`` with ``--package-blocks``; it prints and records them.

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
    mark,
    max_abs,
    paper_style_le_mmse,
    straightforward_le_mmse,
    table,
    timed,
    write_json,
)

from lemmse_lite.data import load
from lemmse_lite.estimators import DEFAULT_MAX_MEMORY, le_mmse
from lemmse_lite.estimators.engine import EngineConfig, default_engine

ACC_TOL = 1e-5  # max abs error of the float32 paths vs float64 at sigma >= 0.05 (issue 13)
#: Dense float32 peaks (TFLOP/s, no tensor cores, boost clock) from the vendors' data sheets.
FP32_PEAK_TFLOPS = {"h200": 67.0, "h100 sxm": 67.0, "h100 pcie": 51.0, "h100": 67.0, "a100": 19.5,
                    "l40s": 91.6, "a10": 31.2, "v100": 15.7, "t4": 8.1, "rtx 4090": 82.6}


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
    p.add_argument("--no-fused", action="store_true", help="time only the blocked path (default on CUDA: both)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the card's fp32 peak in TFLOP/s (default: FP32_PEAK_TFLOPS by device name)")
    p.add_argument("--acc-sigmas", type=float, nargs="+", default=[0.05, 0.2],
                   help="noise levels of the accuracy check against float64")
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
        args.acc_sigmas = [0.05]
        args.threads = args.threads or 1
    return args


def engine_config(args, cuda: bool, default: EngineConfig, fused: bool) -> EngineConfig:
    """The configuration of one path: the flags given, else 32768 × 16384 on CUDA, else the default."""
    if args.package_blocks:
        return EngineConfig(default.query_block, default.key_block, fused)
    qb = args.query_block or (32768 if cuda else default.query_block)
    kb = args.key_block or (16384 if cuda else default.key_block)
    return EngineConfig(qb, kb, fused)


def fp32_peak(args, env) -> float | None:
    """The card's dense float32 (non-tensor-core) peak in TFLOP/s: ``--peak-tflops``, else
    :data:`FP32_PEAK_TFLOPS` by device name, else None (unknown card: ratio not printed)."""
    if args.peak_tflops:
        return args.peak_tflops
    name = env["device"].lower()
    return next((v for k, v in FP32_PEAK_TFLOPS.items() if k in name), None)


def accuracy_rows(paths, y, base, args, c):
    """Max abs error of each path against ``float64_le_mmse`` (independent code) at every σ of
    ``--acc-sigmas`` on ``--acc-meas`` × ``--acc-n`` (fresh noise per σ, seed 1)."""
    acc_train = augmented(base, 0, args.acc_n)
    x = augmented(y["clean"], 0, args.acc_meas)
    rows = []
    for s in args.acc_sigmas:
        gen = torch.Generator().manual_seed(1)
        ya = x + s * torch.randn(x.shape, generator=gen).to(x.device)
        ref = float64_le_mmse(ya.double(), acc_train.double(), s, args.patch)
        for name, eng in paths.items():
            err = max_abs(le_mmse(ya, acc_train, s, args.patch, engine=eng), ref)
            rows.append({"path": name, "sigma": s, "max abs err vs float64": err, "tol": ACC_TOL,
                         "ok": mark(err <= ACC_TOL or s < 0.05)})
        rows.append({"path": "float64 inputs (blocked)", "sigma": s, "tol": ACC_TOL,
                     "max abs err vs float64": max_abs(le_mmse(ya.double(), acc_train, s, args.patch,
                                                               engine=paths["blocked"]), ref), "ok": ""})
    return rows


def timing_rows(paths, y, base, args, sync, flops, peak):
    """Seconds and TFLOP/s of one ``le_mmse`` call per path at full size (training set generated
    lazily in chunks of ``--gen-chunk``), after a small warm-up call per path."""
    def train_stream(n):
        for i0 in range(0, n, args.gen_chunk):
            yield augmented(base, i0, min(n, i0 + args.gen_chunk))

    rows = []
    for name, eng in paths.items():
        le_mmse(y["noisy"][:1], augmented(base, 0, 4), args.sigma, args.patch, engine=eng)  # warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        _, t = timed(le_mmse, y["noisy"], train_stream(args.n_train), args.sigma, args.patch, sync=sync,
                     engine=eng, **({} if args.max_memory is None else {"max_memory": args.max_memory}))
        mem = torch.cuda.max_memory_allocated() / 2**30 if y["noisy"].is_cuda else float("nan")
        rows.append({"path": name, "engine": f"{eng.query_block}x{eng.key_block}", "seconds": t,
                     "TFLOP/s": flops / t / 1e12, "fraction of fp32 peak": (flops / t / 1e12 / peak) if peak else
                     float("nan"), "peak GiB": mem})
    return rows


def baseline_rows(y, base, args, sync, eng, t_fast):
    """Both baselines and ``le_mmse`` on ``--base-meas`` × ``--base-n``, extrapolated linearly."""
    sub = augmented(base, 0, args.base_n)
    ys = y["noisy"][: args.base_meas]
    scale = (args.n_meas / len(ys)) * (args.n_train / args.base_n)
    rows = [{"method": "le_mmse", "timed on": f"{args.n_meas} x {args.n_train}", "seconds": t_fast,
             "seconds (full size)": t_fast, "le_mmse speed-up": 1.0}]
    for name, fn, kw in (("paper_style", paper_style_le_mmse, {}), ("straightforward", straightforward_le_mmse, {}),
                         ("le_mmse (subset)", le_mmse, {"engine": eng})):
        _, t = timed(fn, ys, sub, args.sigma, args.patch, sync=sync, **kw)
        rows.append({"method": name, "timed on": f"{len(ys)} x {args.base_n}", "seconds": t,
                     "seconds (full size)": t * scale, "le_mmse speed-up": t * scale / t_fast})
    return rows


def verdict(acc, times) -> str:
    """Which path should be the CUDA default: the fused one only if it is faster and within
    ``ACC_TOL`` of float64 at every σ ≥ 0.05."""
    if "fused" not in {r["path"] for r in times}:
        return "fused path not measured (needs CUDA): the blocked engine stays the default"
    ok = all(r["ok"] == "PASS" for r in acc if r["path"] == "fused")
    t = {r["path"]: r["seconds"] for r in times}
    if ok and t["fused"] < t["blocked"]:
        return (f"fused is {t['blocked'] / t['fused']:.2f}x faster and within {ACC_TOL:g} of float64 at "
                "sigma >= 0.05: make it the CUDA default (engine.default_engine)")
    why = "not within tolerance" if not ok else f"slower ({t['fused']:.2f} s vs {t['blocked']:.2f} s)"
    return f"fused is {why}: keep the blocked engine as the CUDA default"


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
    paths = {"blocked": engine_config(args, cuda, default, False)}
    if cuda and not args.no_fused:
        paths["fused"] = engine_config(args, cuda, default, True)
    env = environment(device)
    peak = fp32_peak(args, env)
    print(f"gpu: device = {device} ({env['device']}), TF32 matmul = {torch.backends.cuda.matmul.allow_tf32}, "
          f"paths = {paths} (package default {default}), fp32 peak = {peak} TFLOP/s")

    base = load("photos-rgb", "train", size=args.size).to(device)
    x = augmented(load("photos-rgb", "test", size=args.size).to(device), 0, args.n_meas)
    y = {"clean": x, "noisy": x + args.sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)}
    c, h, w = x.shape[1:]
    D, Q, K = c * args.patch**2, args.n_meas * h * w, args.n_train * h * w
    flops = 2 * (D + c) * Q * K
    acc = accuracy_rows(paths, y, base, args, c)
    times = timing_rows(paths, y, base, args, sync, flops, peak)
    t_fast = min(r["seconds"] for r in times)
    fastest = paths[min(times, key=lambda r: r["seconds"])["path"]]
    rows = baseline_rows(y, base, args, sync, fastest, t_fast)
    report(args, env, acc, times, rows, flops, (D, c, Q, K), verdict(acc, times))
    err = {r["path"]: r["max abs err vs float64"] for r in acc if r["sigma"] == max(args.acc_sigmas)}
    out = {"env": env, "args": vars(args), "seconds": t_fast, "flops": flops, "tflops": flops / t_fast / 1e12,
           "fp32_peak_tflops": peak, "paths": {k: [v.query_block, v.key_block, v.fused] for k, v in paths.items()},
           "accuracy": acc, "timing": times, "default_max_memory": DEFAULT_MAX_MEMORY, "rows": rows,
           "verdict": verdict(acc, times), "max_abs_err_float32": err["blocked"],
           "max_abs_err_float64": err["float64 inputs (blocked)"]}
    write_json(args.json, out)
    return out


def report(args, env, acc, times, rows, flops, dims, verdict_text):
    D, c, Q, K = dims
    print(f"\n== GPU accuracy == fused and blocked paths vs float64_le_mmse, {args.acc_meas} measurements x "
          f"{args.acc_n} training images (tolerance {ACC_TOL:g} at sigma >= 0.05)")
    print(table(acc, ["path", "sigma", "max abs err vs float64", "tol", "ok"]))
    print(f"\n== GPU throughput == {args.n_meas} measurements x {args.n_train} training images, "
          f"{c}x{int((Q // args.n_meas) ** 0.5)}x{int((Q // args.n_meas) ** 0.5)}, P={args.patch}, "
          f"sigma={args.sigma}, device={env['device']}")
    print(f"{flops:.3e} flop = 2*(D + C)*Q*K with D={D}, C={c}, Q={Q}, K={K}")
    print(table(times, ["path", "engine", "seconds", "TFLOP/s", "fraction of fp32 peak", "peak GiB"]))
    print(table(rows, ["method", "timed on", "seconds", "seconds (full size)", "le_mmse speed-up"]))
    print("(baselines and 'le_mmse (subset)' are timed on the subset and extrapolated linearly in "
          "measurements and N; le_mmse = the fastest path)")
    print(f"\nverdict: {verdict_text}")


if __name__ == "__main__":
    main()
