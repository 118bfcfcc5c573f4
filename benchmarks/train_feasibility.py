"""Does a small network trained for a few CPU minutes follow the LE-MMSE?

The agreement measured is ``course/07_networks_vs_theory.md``, ``eq-agreement``.

Trains each family for a wall-clock budget on the embedded grey photos (quick profile data) and
prints PSNR(network, LE-MMSE), PSNR(network, x) and PSNR(LE-MMSE, x) on training and held-out
measurements, with the training time. Example::

    python benchmarks/train_feasibility.py --tasks denoise --families resnet --minutes 4
    python benchmarks/train_feasibility.py --tasks denoise,inpaint,deblur \
        --families resnet,unet,patchmlp

The step count is calibrated from a few timed steps so that training fits ``--minutes``
(``--steps`` fixes it instead). Results go to ``--out`` (JSON + CSV).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from lemmse_lite.data import load
from lemmse_lite.experiments.compare import compare, format_table, save_results
from lemmse_lite.networks.models import count_parameters, make_model
from lemmse_lite.networks.training import train
from lemmse_lite.operators import Blur, Denoising, Inpainting, center_box_mask, gaussian_kernel


def problem(task, size, box=6):
    """``(A, B)`` of a task: denoising (B = I), centre-box inpainting (B = mask), Gaussian blur
    (B = Tikhonov/Wiener inverse, eps 1e-2)."""
    if task == "denoise":
        return Denoising(), None
    if task == "inpaint":
        A = Inpainting(center_box_mask(size, size, box))
        return A, A
    if task == "deblur":
        A = Blur(gaussian_kernel(1.0, 5))
        return A, A.tikhonov(1e-2)
    raise ValueError(f"unknown task {task!r}")


def calibrate_steps(model, images, A, B, args, n=8):
    """Steps that fit ``args.minutes``, from ``n`` timed steps of a throw-away copy."""
    probe = copy.deepcopy(model)
    kw = {
        "sigma_range": args.sigma_range,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "progress": False,
        "device": args.device,
        "compile": args.compile,
    }
    train(probe, images, A, B, steps=2, **kw)  # warm-up
    t = time.perf_counter()
    train(probe, images, A, B, steps=n, **kw)
    per_step = (time.perf_counter() - t) / n
    return max(10, int(args.minutes * 60 / per_step)), per_step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="denoise")
    p.add_argument("--families", default="resnet")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-test", type=int, default=6)
    p.add_argument("--sigma", type=float, default=0.2)
    p.add_argument("--sigma-range", type=float, nargs=2, default=(0.1, 0.3))
    p.add_argument("--patch-size", type=int, default=5)
    p.add_argument("--width", type=int, default=48)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--box", type=int, default=6, help="side of the inpainting hole")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile (CUDA only)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/train_feasibility")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    train_images = load("photos", "train", n=args.n_train, seed=args.seed)
    test_images = load("photos", "test", n=args.n_test, seed=args.seed)
    size = train_images.shape[-1]
    rows = []
    for task in args.tasks.split(","):
        A, B = problem(task, size, args.box)
        for family in args.families.split(","):
            torch.manual_seed(args.seed)
            model = make_model(
                family, patch_size=args.patch_size, channels=1, width=args.width, depth=args.depth
            )
            steps, per_step = (
                (args.steps, None)
                if args.steps
                else calibrate_steps(model, train_images, A, B, args)
            )
            t0 = time.perf_counter()
            hist = train(
                model,
                train_images,
                A,
                B,
                args.sigma_range,
                steps,
                args.batch_size,
                args.lr,
                seed=args.seed,
                progress=sys.stderr.isatty(),
                device=args.device,
                compile=args.compile,
            )
            train_s = time.perf_counter() - t0
            table = compare(
                {family: model},
                train_images,
                test_images,
                A,
                B,
                (args.sigma,),
                args.patch_size,
                n_measurements=args.n_test,
                seed=args.seed,
                progress=False,
            )
            for r in table:
                r.update(
                    task=task,
                    width=args.width,
                    depth=args.depth,
                    params=count_parameters(model),
                    steps=steps,
                    train_s=round(train_s, 1),
                    final_loss=hist.loss[-1],
                )
                rows.append(r)
            how = f"calibrated {per_step:.3f} s/step" if per_step else "--steps"
            print(
                f"[{task}/{family}] {steps} steps in {train_s:.0f} s ({how}), "
                f"final loss {hist.loss[-1]:.2e}",
                flush=True,
            )
            print(format_table(table[-2:]), flush=True)
    cols = (
        "task",
        "architecture",
        "split",
        "sigma",
        "n",
        "psnr_net_lemmse",
        "psnr_net_x",
        "psnr_lemmse_x",
        "steps",
        "train_s",
    )
    print()
    print(format_table(rows, cols))
    save_results(rows, args.out)


if __name__ == "__main__":
    main()
