"""Training speed of the course's ResNets: steps per second and time to converged agreement.

For the denoising and the inpainting ResNet of the quick profile (P = 5, width 48, N = 400 photo crops,
sigma ~ U[0.02, 0.5]) this trains, in one run, the old settings (eager float32, whole images) beside
the new ones (``torch.compile`` and bfloat16 autocast, ``profiles.part_two_settings``; optionally
crops) for the same number of steps, and every ``--every`` steps measures on ``--n-test`` held-out
measurements at sigma = 0.2

    PSNR(net, LE-MMSE(5))   and the margin over LE-MMSE(3) and the truth (dB),

with the EMA weights (``course/07_networks_vs_theory.md``, ``eq-agreement``). It prints the steps per
second (training time only), the **time to converged agreement** (training wall time until
PSNR(net, LE-MMSE(5)) stays within 0.5 dB of its value at the last step) and, for inpainting, the time
until PSNR(net, LE-MMSE(5)) >= 27 dB with a margin >= +3 dB. Example::

    python benchmarks/train_speed.py                     # both problems, 1,500 steps each setting
    python benchmarks/train_speed.py --problems inpainting --steps 1000 --threads 2

Timings are wall-clock on this machine; compare the two settings of one run, not runs of two days.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from lemmse_lite import estimators, operators, problems, profiles
from lemmse_lite.estimators import metrics
from lemmse_lite.networks import models, training

SETTINGS = {
    "old: eager float32": {"compile": False, "amp": False, "crop": None, "batch_size": 32},
    "new: compile + bfloat16": {"compile": True, "amp": True, "crop": None, "batch_size": 32},
    "new + crops 16, batch 128": {"compile": True, "amp": True, "crop": 16, "batch_size": 128},
}


def references(problem, profile, n_test, sigma=0.2):
    """Measurements of ``n_test`` test images and their LE-MMSE(5), LE-MMSE(3) and truth."""
    train = problems.load_images(profile, "train")
    test = problems.load_images(profile, "test", n=n_test)
    A, B = problems.problem_operators(problem, None, profile)
    y = operators.measure(A, test, sigma, 12345)
    refs = {p: estimators.le_mmse(y, train, sigma, p, A=A, B=B, chunk_size=profile.chunk_size) for p in (3, 5)}
    return train, A, B, y, refs, test


def evaluate(model, y, B, refs, truth, sigma=0.2):
    with torch.no_grad():
        out = model(y if B is None else B(y), sigma).float()
    a5 = float(metrics.psnr(out, refs[5]).mean())
    rival = max(float(metrics.psnr(out, refs[3]).mean()), float(metrics.psnr(out, truth).mean()))
    return a5, a5 - rival


def run(problem, label, options, args, profile, data):
    train, A, B, y, refs, truth = data
    torch.manual_seed(profile.seed)
    net = models.make_model("resnet", patch_size=5, width=profile.model_width, depth=profile.model_depth)
    cfg = training.TrainConfig(sigma_range=profile.sigma_range, steps=args.steps, batch_size=options["batch_size"],
                               lr=profile.lr, seed=profile.seed, device="cpu", compile=options["compile"],
                               amp=options["amp"], crop=options["crop"]).resolved()
    state = training.TrainState.create(net, cfg)
    seconds, curve = 0.0, []
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        training.train_step(state, training.sample_batch(state, train, cfg), A, B, cfg)
        seconds += time.perf_counter() - t0
        if step % args.every == 0 or step == args.steps:
            ema = state.ema_model.eval()
            curve.append((step, seconds, *evaluate(ema, y, B, refs, truth)))
            ema.train()
    final = curve[-1][2]
    converged = next(t for k, (_, t, a, _) in enumerate(curve)
                     if all(abs(c[2] - final) <= 0.5 for c in curve[k:]))
    goal = next((t for _, t, a, m in curve if a >= 27 and m >= 3), None)
    warm = curve[0][1] / curve[0][0]  # includes compilation
    rate = (curve[-1][0] - curve[0][0]) / (curve[-1][1] - curve[0][1])
    return {"problem": problem, "setting": label, "steps_per_s": rate, "first_steps_s_per_step": warm,
            "final_agreement": final, "final_margin": curve[-1][3], "time_to_converged_s": converged,
            "time_to_27dB_and_3dB_s": goal, "total_s": seconds, "curve": curve}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="denoising,inpainting", help="comma list (default both)")
    parser.add_argument("--steps", type=int, default=1500, help="steps per setting (default 1500)")
    parser.add_argument("--every", type=int, default=50, help="evaluation interval in steps (default 50)")
    parser.add_argument("--n-test", type=int, default=16, help="test measurements (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma list of: " + ", ".join(SETTINGS))
    parser.add_argument("--out", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.settings.split(",")]
    if any(s not in SETTINGS for s in chosen):
        parser.error(f"--settings: choose from {', '.join(SETTINGS)}")
    if args.steps < args.every or args.every < 1:
        parser.error("--steps must be >= --every >= 1")
    torch.set_num_threads(args.threads)
    profile = profiles.get_profile("quick")
    rows = []
    for problem in [p.strip() for p in args.problems.split(",")]:
        data = references(problem, profile, args.n_test)
        for label in chosen:
            row = run(problem, label, SETTINGS[label], args, profile, data)
            rows.append(row)
            goal = row["time_to_27dB_and_3dB_s"]
            print(f"{problem:11s} {label:28s} {row['steps_per_s']:5.2f} steps/s  "
                  f"final PSNR(net, LE5) {row['final_agreement']:5.2f} dB, margin {row['final_margin']:+5.2f}  "
                  f"converged after {row['time_to_converged_s']:6.1f} s  "
                  f"27 dB & +3 dB after {'never' if goal is None else f'{goal:.1f} s'}", flush=True)
        base = next(r for r in rows if r["problem"] == problem and r["setting"] == chosen[0])
        for r in rows:
            if r["problem"] == problem and r is not base:
                print(f"{problem:11s} speed-up {r['setting']} / {base['setting']}: steps/s x"
                      f"{r['steps_per_s'] / base['steps_per_s']:.2f}, time to converged agreement x"
                      f"{base['time_to_converged_s'] / max(r['time_to_converged_s'], 1e-9):.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
