"""How long must the course's networks train to be converged? (course/07_networks_vs_theory.md,
"Trained long enough?": a network is converged when PSNR(net, LE-MMSE(P)) at sigma = 0.2 on test
measurements is within 0.5 dB of that of a run twice as long.)

Chapter 07 measures S = ``train_steps`` against 2S (quick: 3,000 against 6,000, both shipped). This
script adds the next doubling, 4S, trained here (same seed, settings and schedule, cosine decay to 0
at its own end), and prints for each problem the agreement of S, 2S and 4S with its bootstrap 95 %
interval over ``K`` = 32 test measurements and the gain of each doubling::

    rows, _ = experiments.agreement({"S": net_S, "2S": net_2S, "4S": net_4S}, problem, prof,
                                    controls=False, sigmas=(0.2,), splits=("test",), n_measurements=32)

    python benchmarks/convergence.py [--problems denoising inpainting] [--factors 1 2 4] [--json out.json]

On 2 cores one 12,000-step quick network takes about 40-60 minutes (compile + bfloat16, one
thread): the networks are cached like the course's, so an interrupted run resumes from its checkpoint.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import network_study_args, run_study

from lemmse_lite import experiments, profiles

PROBLEMS = ("denoising", "inpainting")
COLUMNS = ["problem", "steps", "PSNR(net,LE)", "95% interval", "gain of the doubling", "PSNR(net,x)", "source"]


def parse(argv):
    return network_study_args(argv, __doc__, "factors", [1, 2, 4],
                              "training lengths as multiples of the profile's train_steps",
                              lambda p: p.add_argument("--problems", nargs="+", default=list(PROBLEMS),
                                                       choices=PROBLEMS))


def network(problem, prof, factor):
    """The ``factor`` x ``train_steps`` ResNet; 2x is the course's shipped run with snapshots."""
    kw = {"steps": factor * prof.train_steps}
    if factor == 2:  # the course's run twice as long carries snapshots (same training otherwise)
        kw["snapshots"] = profiles.part_two_settings(prof).curve_steps
    return experiments.trained_network("resnet", problem, prof, progress=True, **kw)


def measure(problem, prof, factors, n):
    t0 = time.perf_counter()
    nets = {f"{f}S": network(problem, prof, f) for f in factors}
    print(f"{problem}: networks in {time.perf_counter() - t0:.0f} s "
          f"({', '.join(f'{k} {v.source}' for k, v in nets.items())})")
    rows, _ = experiments.agreement(nets, problem, prof, controls=False, sigmas=(0.2,), splits=("test",),
                                    n_measurements=n)
    by_name = {r["network"]: r for r in rows}
    out, previous = [], None
    for name, net in nets.items():
        r = by_name[name]
        lo, hi = r["psnr_net_ref_ci"]
        out.append({"problem": problem, "steps": int(net.history["completed"]),
                    "PSNR(net,LE)": round(r["psnr_net_ref"], 2), "95% interval": f"[{lo:.2f}, {hi:.2f}]",
                    "gain of the doubling": "" if previous is None else round(r["psnr_net_ref"] - previous, 2),
                    "PSNR(net,x)": round(r["psnr_net_x"], 2), "source": net.source})
        previous = r["psnr_net_ref"]
    return out


def main(argv=None):
    args = parse(argv)
    run_study(args, args.problems, lambda problem, prof, n: measure(problem, prof, args.factors, n), COLUMNS)


if __name__ == "__main__":
    main()
