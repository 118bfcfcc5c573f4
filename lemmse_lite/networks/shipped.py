"""The list of networks the package ships in ``lemmse_lite/networks/weights/`` (chapters 06-09 rest on them).

Kept apart from :mod:`lemmse_lite.networks.zoo` on purpose: a shipped network's key covers the code
its training can run (:func:`lemmse_lite.networks.zoo.network_key`), and this list is not part of
it, so adding or removing a network here retrains no other one. ``python scripts/ship_networks.py``
trains the list; ``tests/test_shipped.py`` checks every one is shipped under today's key.
"""

from __future__ import annotations

from .. import profiles

__all__ = ["course_networks"]


def course_networks(profile) -> dict:
    """{name: :func:`trained_network` keyword arguments} of every network chapters 06-09 rest on
    under ``profile``: the main networks (``Profile.train_steps``), the runs twice as long that
    check their convergence and give the agreement-against-steps curve (snapshots at
    ``curve_steps``), a second seed, and the sweep networks (``sweep_steps``, ``sweep_width``) of
    the patch-size, training-set and width sweeps, the other problems and chapter 09's accelerations.
    ``python scripts/ship_networks.py`` trains these into :data:`WEIGHTS_DIR`."""
    part2, mri = profiles.part_two_settings(profile), profiles.mri_settings(profile)
    sweep = {"family": "resnet", "steps": profile.sweep_steps, "width": profile.sweep_width}
    twice = {"steps": 2 * profile.train_steps, "snapshots": part2.curve_steps}
    nets = {f"{f}-denoising": {"family": f, "problem": "denoising"} for f in ("resnet", "unet", "patchmlp")}
    nets.update({
        "resnet-denoising-seed1": {"family": "resnet", "problem": "denoising", "seed": profile.seed + 1},
        "resnet-denoising-2x": {"family": "resnet", "problem": "denoising", **twice},
        "resnet-inpainting": {"family": "resnet", "problem": "inpainting"},
        "resnet-inpainting-2x": {"family": "resnet", "problem": "inpainting", **twice},
    })
    nets.update({f"sweep-P{p}": {**sweep, "problem": "denoising", "patch_size": p} for p in profile.patch_sizes})
    # chapter 07's third knob of P_eff: the sweep network at half the width (a quarter of the parameters)
    nets["sweep-width-half"] = {**sweep, "problem": "denoising", "width": profile.sweep_width // 2}
    nets.update({f"sweep-N{n}": {**sweep, "problem": "denoising", "n_train": n} for n in profile.n_sweep
                 if n != profile.n_train})  # N = n_train is sweep-P{P}
    for family, problem, pre in (("resnet", "inpainting", "pinv"), ("resnet", "deblurring", None),
                                 ("resnet", "deblurring", "tikhonov:0.01"), ("patchmlp", "deblurring", "tikhonov:0.01")):
        nets[f"sweep-{family}-{problem}-{pre or 'none'}"] = {**sweep, "family": family, "problem": problem,
                                                             "pre_inverse": pre}
    for r in mri.accelerations:
        problem = "mri" if r == mri.acceleration else f"mri:{r:g}"
        nets[f"sweep-{problem}"] = {**sweep, "problem": problem, "pre_inverse": "pinv"}
    return nets
