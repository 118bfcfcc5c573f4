"""The course's inverse problems by name, and the images they are posed on (``course/00_inverse_problems.md``).

* :func:`load_images` -- the profile's grey images of a split;
* :func:`problem_operators` -- ``(A, B)`` of a named problem (``"denoising"``, ``"inpainting"``,
  ``"deblurring"``, ``"mri"``, with options such as ``"inpainting:box=15"``) and pre-inverse spec;
* :func:`problem_settings` / :func:`problem_description` -- the problem's settings beyond its name,
  and our setting in words for the README.

Shared by the trained networks (:mod:`lemmse_lite.zoo`) and the experiments
(:mod:`lemmse_lite.experiments`).
"""

from __future__ import annotations

import torch

from . import data, operators, profiles

__all__ = ["PROBLEM_OPTIONS", "load_images", "problem_description", "problem_operators", "problem_settings"]


def load_images(profile, split: str, n=None, dataset=None) -> torch.Tensor:
    """``(N, 1, H, W)`` grey images of ``dataset`` (default ``profile.dataset``) at the profile's
    size and seed; ``n`` defaults to ``profile.n_train`` (train) or ``profile.n_test`` (test)."""
    if n is None:
        n = profile.n_train if split == "train" else profile.n_test
    return data.load(dataset or profile.dataset, split, n=n, seed=profile.seed,
                     size=profile.image_size, grey=True)


def problem_operators(problem: str, pre_inverse, profile):
    """``(A, B)`` of a named problem (``operators.forward_operator``: denoising, centre-box
    inpainting, Gaussian blur of std 1) and pre-inverse spec (``operators.pre_inverse``: None,
    ``"pinv"``, ``"adjoint"``, ``"tikhonov:EPS"``, ...) at the profile's image size."""
    h = w = profile.image_size
    A = operators.forward_operator(problem.partition(":")[0], h, w, seed=profile.seed,
                                   **problem_settings(problem, profile))
    return A, operators.pre_inverse(A, pre_inverse)


#: Options of ``"inpainting:OPT=V"`` / ``"deblurring:OPT=V"`` (comma-separated), e.g. the paper's
#: ``"inpainting:box=15"``, ``"inpainting:missing=0.3"``, ``"deblurring:std=1.0"``
#: (``profiles.PAPER_PROBLEMS``): option -> (``operators.forward_operator`` keyword, type).
PROBLEM_OPTIONS = {"inpainting": {"box": ("box", int), "missing": ("missing_fraction", float)},
                   "deblurring": {"std": ("blur_std", float)}}


def _problem_options(problem: str, name: str, text: str) -> dict:
    """``forward_operator`` keywords of the options ``text`` of ``problem`` (ValueError naming it)."""
    options, out = PROBLEM_OPTIONS[name], {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in options:
            raise ValueError(f"problem {problem!r}: the options of {name} are "
                             f"{', '.join(k + '=VALUE' for k in options)}")
        arg, kind = options[key.strip()]
        try:
            out[arg] = kind(value)
        except ValueError:
            raise ValueError(f"problem {problem!r}: {key} needs a {kind.__name__}, got {value!r}") from None
    return out


def problem_settings(problem: str, profile) -> dict:
    """The settings of ``problem`` beyond its name, as keyword arguments of
    ``operators.forward_operator``: for ``"mri"`` the acceleration, centre fraction and mask kind
    of ``profiles.mri_settings(profile)`` (``course/09_mri.md``); ``"mri:R"`` sets the acceleration
    to the number R (the R sweep). Other problems: none."""
    name, _, r = problem.partition(":")
    if name in PROBLEM_OPTIONS:
        return _problem_options(problem, name, r)
    if name != "mri":
        return {}
    m = profiles.mri_settings(profile)
    try:
        acceleration = float(r) if r else m.acceleration
    except ValueError:
        raise ValueError(f"problem {problem!r}: write 'mri' or 'mri:R' with a number R >= 1") from None
    return {"acceleration": acceleration, "center_fraction": m.center_fraction, "mask_kind": m.mask_kind}


def problem_description(problem: str, profile) -> str:
    """Our setting of ``problem`` in words, read from the operator itself (for the README)."""
    A, _ = problem_operators(problem, None, profile)
    name, opts = problem.partition(":")[0], problem_settings(problem, profile)
    if name == "inpainting" and "missing_fraction" in opts:
        return f"random {100 * opts['missing_fraction']:g} % missing"
    if name == "inpainting":
        hole = int((A.b == 0).sum().item() ** 0.5 + 0.5)
        return f"centre hole {hole}×{hole}"
    if name == "deblurring":
        k = A.kernel if hasattr(A, "kernel") else None
        return (f"Gaussian blur std {float(opts.get('blur_std', 1.0))!r}"
                f"{'' if k is None else f', {k.shape[-2]}×{k.shape[-1]} kernel'}")
    if problem.partition(":")[0] == "mri":
        m = problem_settings(problem, profile)
        return (f"{m['mask_kind']} k-space lines, R = {A.acceleration:.2f} (target {m['acceleration']:g}), "
                f"f_c = {m['center_fraction']:g}")
    return "white noise"
