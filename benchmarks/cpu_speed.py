"""CPU speed, accuracy and batching of ``lemmse_lite.estimators.le_mmse`` against the baselines of
``baselines.py``, all measured in ONE run so that speed claims are ratios on the same machine state.

Setup (issue targets): grey 32×32 photos, N = 1,000 training crops (``load("photos", "train",
n=1000)``), 8 test crops (``load("photos", "test")``), P = 5, σ = 0.2, y = x + σe (seed 0).

1. Speed: ``le_mmse`` on the batch of 8 (one call) vs ``paper_style_le_mmse`` and
   ``straightforward_le_mmse`` (timed on ``--paper-images`` / ``--straight-images`` measurements
   of the same batch); seconds per image and the two ratios (targets ≥ 20× and ≥ 6×).
   ``--repeats`` > 1 interleaves the three methods and keeps each one's fastest run.
2. Accuracy: max |le_mmse(float32) − float64 reference| on ``--acc-n`` training crops and
   ``--acc-images`` measurements: denoising against ``float64_le_mmse`` (independent code), and the
   physics-aware paths (centre-box inpainting with B = mask and B = ε-mask(0.01); Gaussian blur
   std 1 with B = A.tikhonov(1e-2) and B = Aᵀ) against ``le_mmse`` run on float64 inputs.
   Targets ≤ 1e-5 (σ ≥ 0.05), ≤ 1e-4 (σ = 0.01). Also the errors of the two baselines (paper style
   at σ = 0.05 only, on one measurement: it is slow).
3. Batching: one call on ``--batch`` measurements vs single calls (``--batch-singles`` of them,
   scaled), seconds per image, against ``--batch-n`` training crops.
4. Under load (``--load on|both``, replaces sections 1–3): ``le_mmse`` and
   ``straightforward_le_mmse`` s/image and their ratio (target ≥ 6×), quiet and/or while a
   competing process runs a 2-thread float32 2048×2048 ``torch.mm`` loop (started and checked
   before each timing, killed afterwards, also on errors and Ctrl-C; it exits by itself if this
   script dies), for each ``--threads`` value, ``--repeats`` times interleaved. Each row records
   the 1-minute load average (``os.getloadavg``) just before it: on a shared machine "quiet" is
   only as quiet as the other users allow.

    python benchmarks/cpu_speed.py                  # full run (minutes on 2 cores)
    python benchmarks/cpu_speed.py --small          # smoke run (< 30 s)
    python benchmarks/cpu_speed.py --json out.json
    python benchmarks/cpu_speed.py --load both --threads 2,1 --repeats 3 --n-train 100
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import (
    environment,
    float64_le_mmse,
    mark,
    max_abs,
    paper_style_le_mmse,
    positive_list,
    straightforward_le_mmse,
    table,
    timed,
    write_json,
)

from lemmse_lite.data import load
from lemmse_lite.estimators import le_mmse
from lemmse_lite.estimators.engine import default_engine
from lemmse_lite.operators import (
    Blur,
    Inpainting,
    center_box_mask,
    eps_mask,
    gaussian_kernel,
    measure,
)
from lemmse_lite.tables import format_table

SIGMAS = (0.01, 0.05, 0.2, 1.0)


def tolerance(sigma):
    return 1e-4 if sigma < 0.05 else 1e-5


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="tiny smoke run (16×16 images, few crops)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--threads", type=positive_list(int), default=(1,),
                   help="torch threads, or a comma list for --load (e.g. 2,1); sections 1-3 use the first")
    p.add_argument("--load", choices=("off", "on", "both"), default="off",
                   help="under-load mode: 'on' times with a competing 2-thread torch.mm process, "
                        "'both' quiet and under load (default off: sections 1-3)")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=8)
    p.add_argument("--patch", type=int, default=5)
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--paper-images", type=int, default=1)
    p.add_argument("--straight-images", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--acc-n", type=int, default=200)
    p.add_argument("--acc-images", type=int, default=2)
    p.add_argument("--box", type=int, default=8, help="side of the centre-box hole")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batch-singles", type=int, default=16)
    p.add_argument("--batch-n", type=int, default=100)
    p.add_argument("--skip", default="", help="comma list of sections to skip: speed,accuracy,batching")
    args = p.parse_args(argv)
    args.size = None
    if args.small:
        args.size = 16
        args.n_train, args.n_test, args.acc_n, args.acc_images = 12, 2, 8, 1
        args.batch, args.batch_singles, args.batch_n, args.box = 4, 2, 6, 4
        args.paper_images, args.straight_images = 1, 1
    return args


# --------------------------------------------------------------------------- under load (section 4)

LOAD_CODE = """
import os, sys, torch
torch.set_num_threads(2)
a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
c = torch.empty(2048, 2048)
parent, n = int(sys.argv[1]), 0
while os.getppid() == parent:  # exits by itself if the benchmark dies
    torch.mm(a, b, out=c)
    n += 1
    if n == 1:
        print("running", flush=True)
"""


@contextlib.contextmanager
def competing_load():
    """A separate process running a 2-thread float32 2048×2048 ``torch.mm`` loop for the duration
    of the block: started and seen running (its first product done) before the block, checked
    still alive after it, killed in every case."""
    proc = subprocess.Popen([sys.executable, "-c", LOAD_CODE, str(os.getpid())],
                            stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "running" or proc.poll() is not None:
            raise RuntimeError("the competing load process did not start")
        yield proc
        if proc.poll() is not None:
            raise RuntimeError(f"the competing load process died during the timing (exit {proc.returncode})")
    finally:
        proc.kill()
        proc.wait()


def _time_pair(y, train, args, n_straight):
    """s/image of ``le_mmse`` (one call on all of ``y``) and of ``straightforward_le_mmse``
    (``n_straight`` measurements), back to back."""
    _, t_le = timed(le_mmse, y, train, args.sigma, args.patch)
    _, t_sf = timed(straightforward_le_mmse, y[:n_straight], train, args.sigma, args.patch)
    return t_le / len(y), t_sf / n_straight


def under_load(args, train, test):
    y = measure(None, test, args.sigma, 0)
    n_straight = min(args.straight_images, len(y))
    conditions = {"on": ("load",), "both": ("quiet", "load")}[args.load]
    le_mmse(y[:1], train[:2], args.sigma, args.patch)  # warm-up (thread pools, allocator)
    rows = []
    print(f"\n== CPU speed under load == N={len(train)}, {tuple(train.shape[1:])}, P={args.patch}, "
          f"sigma={args.sigma}, le_mmse on {len(y)} measurements, straightforward on {n_straight}; "
          f"load = competing 2-thread 2048x2048 torch.mm process; engine {default_engine('cpu')}")
    for run in range(1, args.repeats + 1):
        for threads in args.threads:
            torch.set_num_threads(threads)
            for cond in conditions:
                load_avg = os.getloadavg()[0]
                with competing_load() if cond == "load" else contextlib.nullcontext():
                    le_s, sf_s = _time_pair(y, train, args, n_straight)
                rows.append({"run": run, "threads": threads, "condition": cond, "load avg": load_avg,
                             "le_mmse s/image": le_s, "straightforward s/image": sf_s,
                             "ratio": sf_s / le_s, "target >= 6x": mark(sf_s / le_s >= 6)})
                print(f"  run {run}, {threads} thread(s), {cond}: ratio {sf_s / le_s:.1f}x "
                      f"(load avg {load_avg:.1f})", flush=True)
    columns = ["run", "threads", "condition", "load avg", "le_mmse s/image", "straightforward s/image",
               "ratio", "target >= 6x"]
    print(format_table(rows, columns, {"load avg": "{:.1f}", "le_mmse s/image": "{:.3g}",
                                       "straightforward s/image": "{:.3g}", "ratio": "{:.1f}x"}))
    summary = []
    for threads in args.threads:
        for cond in conditions:
            ratios = [r["ratio"] for r in rows if r["threads"] == threads and r["condition"] == cond]
            summary.append({"threads": threads, "condition": cond, "runs": len(ratios),
                            "ratios": ", ".join(f"{x:.1f}x" for x in ratios), "min ratio": min(ratios),
                            "all >= 6x": mark(min(ratios) >= 6)})
    print(format_table(summary, ["threads", "condition", "runs", "ratios", "min ratio", "all >= 6x"],
                       {"min ratio": "{:.1f}x"}))
    return {"rows": rows, "summary": summary}


# --------------------------------------------------------------------------- sections 1-3

def speed(args, train, test):
    y = measure(None, test, args.sigma, 0)
    P, s = args.patch, args.sigma
    le_mmse(y[:1], train[:2], s, P)  # warm-up (thread pools, allocator)
    best = {"le_mmse": float("inf"), "paper_style": float("inf"), "straightforward": float("inf")}
    counts = {"le_mmse": len(y), "paper_style": min(args.paper_images, len(y)),
              "straightforward": min(args.straight_images, len(y))}
    for _ in range(args.repeats):
        _, t = timed(le_mmse, y, train, s, P)
        best["le_mmse"] = min(best["le_mmse"], t)
        _, t = timed(straightforward_le_mmse, y[: counts["straightforward"]], train, s, P)
        best["straightforward"] = min(best["straightforward"], t)
        _, t = timed(paper_style_le_mmse, y[: counts["paper_style"]], train, s, P)
        best["paper_style"] = min(best["paper_style"], t)
    per = {k: best[k] / counts[k] for k in best}
    rows = [{"method": k, "images timed": counts[k], "seconds": best[k], "s/image": per[k],
             "speed-up of le_mmse": per[k] / per["le_mmse"]} for k in best]
    ratios = {"vs_paper_style": per["paper_style"] / per["le_mmse"],
              "vs_straightforward": per["straightforward"] / per["le_mmse"]}
    print(f"\n== CPU speed == N={len(train)}, {tuple(train.shape[1:])}, P={P}, sigma={s}, "
          f"threads={torch.get_num_threads()}")
    print(table(rows, ["method", "images timed", "seconds", "s/image", "speed-up of le_mmse"]))
    print(f"ratio vs paper style:     {ratios['vs_paper_style']:.1f}x  (target >= 20x: "
          f"{mark(ratios['vs_paper_style'] >= 20)})")
    print(f"ratio vs straightforward: {ratios['vs_straightforward']:.1f}x  (target >= 6x: "
          f"{mark(ratios['vs_straightforward'] >= 6)})")
    return {"rows": rows, "ratios": ratios}


def problems(h, w, box):
    mask = center_box_mask(h, w, box)
    A_inp = Inpainting(mask)
    A_blur = Blur(gaussian_kernel(1.0))
    return [
        ("inpaint B=mask", A_inp, A_inp),
        ("inpaint B=eps-mask(0.01)", A_inp, Inpainting(eps_mask(mask, 0.01))),
        ("deblur B=tikhonov(1e-2)", A_blur, A_blur.tikhonov(1e-2)),
        ("deblur B=A.T", A_blur, A_blur.T),
    ]


def accuracy(args, train_all, test):
    train = train_all[: args.acc_n]
    x = test[: args.acc_images]
    P = args.patch
    rows = []
    for s in SIGMAS:
        y = measure(None, x, s, 1)
        ref = float64_le_mmse(y.double(), train.double(), s, P)
        err = max_abs(le_mmse(y, train, s, P), ref)
        row = {"problem": "denoise B=I", "reference": "float64_le_mmse", "sigma": s, "le_mmse err": err,
               "tol": tolerance(s), "ok": mark(err <= tolerance(s)),
               "straightforward err": max_abs(straightforward_le_mmse(y, train, s, P), ref)}
        if s == 0.05:
            row["paper_style err"] = max_abs(paper_style_le_mmse(y[:1], train, s, P), ref[:1])
        rows.append(row)
    for name, A, B in problems(*x.shape[-2:], args.box):
        for s in SIGMAS:
            y = measure(A, x, s, 1)
            ref = le_mmse(y.double(), train.double(), s, P, A=A, B=B)
            err = max_abs(le_mmse(y, train, s, P, A=A, B=B), ref)
            rows.append({"problem": name, "reference": "le_mmse float64", "sigma": s, "le_mmse err": err,
                         "tol": tolerance(s), "ok": mark(err <= tolerance(s))})
    print(f"\n== Accuracy == max abs error vs float64, N={len(train)}, {len(x)} measurement(s), P={P}")
    print(table(rows, ["problem", "sigma", "le_mmse err", "tol", "ok", "straightforward err",
                       "paper_style err", "reference"]))
    return rows


def batching(args, train_all, test):
    train = train_all[: args.batch_n]
    reps = -(-args.batch // len(test))
    x = test.repeat(reps, 1, 1, 1)[: args.batch]
    y = measure(None, x, args.sigma, 2)
    P, s = args.patch, args.sigma
    le_mmse(y[:1], train[:2], s, P)
    _, t_batch = timed(le_mmse, y, train, s, P)
    n_single = min(args.batch_singles, args.batch)
    _, t_single = timed(lambda: [le_mmse(y[i : i + 1], train, s, P) for i in range(n_single)])
    per_b, per_s = t_batch / args.batch, t_single / n_single
    res = {"batch": args.batch, "singles_timed": n_single, "n_train": len(train),
           "s/image batched": per_b, "s/image single": per_s, "single/batched": per_s / per_b}
    print(f"\n== Batching == one call on {args.batch} measurements vs {n_single} single calls, "
          f"N={len(train)}")
    print(table([res], ["batch", "singles_timed", "n_train", "s/image batched", "s/image single",
                        "single/batched"]))
    print(f"batched <= single per image: {mark(per_b <= per_s)}")
    return res


def main(argv=None):
    args = parse(argv)
    torch.set_num_threads(args.threads[0])
    train = load("photos", "train", n=args.n_train, size=args.size)
    test = load("photos", "test", n=args.n_test, size=args.size)
    skip = set(filter(None, args.skip.split(",")))
    out = {"env": environment(), "args": vars(args)}
    print(f"cpu_speed: {out['env']}")
    if args.load != "off":
        out["under_load"] = under_load(args, train, test)
        write_json(args.json, out)
        return out
    if "speed" not in skip:
        out["speed"] = speed(args, train, test)
    if "accuracy" not in skip:
        out["accuracy"] = accuracy(args, train, test)
    if "batching" not in skip:
        out["batching"] = batching(args, train, test)
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
