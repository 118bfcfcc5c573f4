"""Does the network's width move its effective patch size P_eff(sigma)? (course/07_networks_vs_theory.md,
the effective patch size; chapter 07 measures training length and N, this measures the third candidate.)

Setup (quick profile): LocalResNet denoisers of receptive field P = 5, trained on the same N = 400
photo crops for the same ``sweep_steps`` (1,500), one per width (default 24, 48, 96; 48 is the
course's shipped ``sweep-P5`` network). Each is compared on ``K`` = 32 test measurements at every
sigma of the agreement grid with LE-MMSE(P') for P' in {1, 3, 5, 7, 9}::

    rows, _ = experiments.agreement({"net": net}, "denoising", prof, controls=False,
                                    splits=("test",), n_measurements=32, sizes=(1, 3, 5, 7, 9))
    P_eff = argmax_P' PSNR(net, LE-MMSE(P'))

Prints one table per width (PSNR to each LE-MMSE(P'), P_eff, the network's PSNR to the truth and its
parameter count) and writes them with ``--json``. Networks are cached like the course's (a rerun
reuses them); widths other than 48 are trained here (width 96: about 4x the arithmetic of 48).

    python benchmarks/p_eff_width.py [--widths 24 48 96] [--json out.json]
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from baselines import network_study_args, run_study

from lemmse_lite import experiments
from lemmse_lite.networks import models

SIZES = (1, 3, 5, 7, 9)
COLUMNS = ["width", "params", "sigma", "P_eff", *[f"LE({p})" for p in SIZES], "PSNR(net,x)", "source"]


def parse(argv):
    return network_study_args(argv, __doc__, "widths", [24, 48, 96], "network widths to compare")


def measure(prof, width, n):
    """Rows {sigma, LE(P')..., P_eff, PSNR(net, x)} of one width (test measurements)."""
    t0 = time.perf_counter()
    net = experiments.trained_network("resnet", "denoising", prof, steps=prof.sweep_steps, width=width,
                                      progress=True)
    trained_s = time.perf_counter() - t0
    rows, _ = experiments.agreement({"net": net}, "denoising", prof, controls=False, splits=("test",),
                                    n_measurements=n, sizes=SIZES)
    params = models.count_parameters(net)
    out = []
    for r in sorted(rows, key=lambda r: r["sigma"]):
        out.append({"width": width, "params": params, "sigma": r["sigma"], "P_eff": r["p_eff"],
                    **{f"LE({p})": round(r["by_size"][p], 2) for p in SIZES},
                    "PSNR(net,x)": round(r["psnr_net_x"], 2), "source": net.source})
    print(f"width {width}: {params} parameters, {net.source} ({trained_s:.0f} s to get it)")
    return out


def main(argv=None):
    args = parse(argv)
    run_study(args, args.widths, lambda width, prof, n: measure(prof, width, n), COLUMNS)


if __name__ == "__main__":
    main()
