"""The course's inverse problems by name, and the images they are posed on (``course/00_inverse_problems.md``).

:data:`REGISTRY` is the one place a problem is declared: its forward operator (a factory of
:mod:`lemmse_lite.operators` primitives), the options of ``"name:OPT=V"``, the settings it takes
from a profile and its default noise level. The CLI, the experiments, the trained networks and the
sharded run read it; adding a problem is one :class:`Problem` here.

* :func:`forward_operator` -- ``A`` of a problem's name at an image size;
* :func:`load_images` -- the profile's grey images of a split;
* :func:`problem_operators` -- ``(A, B)`` of a named problem (``"denoising"``, ``"inpainting"``,
  ``"deblurring"``, ``"mri"``, with options such as ``"inpainting:box=15"``) and pre-inverse spec;
* :func:`problem_settings` / :func:`problem_description` -- the problem's settings beyond its name,
  and our setting in words for the README;
* :func:`default_sigma` -- the problem's default noise level (the CLI's demo);
* measurements are simulated by :func:`lemmse_lite.operators.measure`, seeded by the one rule
  :func:`lemmse_lite.operators.measurement_seed`.

Shared by the trained networks (:mod:`lemmse_lite.networks.zoo`) and the experiments
(:mod:`lemmse_lite.experiments`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import data, operators, profiles

__all__ = ["PROBLEMS", "PROBLEM_OPTIONS", "REGISTRY", "Problem", "default_sigma", "forward_operator", "load_images",
           "problem_description", "problem_operators", "problem_settings"]


# ----------------------------------------------------------------------------- the registry

def _denoising(h, w, seed):
    return operators.Denoising()


def _inpainting(h, w, seed, box=None, missing_fraction=None):
    """A centre box of side ``box`` (default ``h//3`` rounded to odd), or a random mask with
    ``missing_fraction`` of the pixels missing (seeded)."""
    if missing_fraction is not None:
        return operators.Inpainting(operators.random_mask(h, w, missing_fraction, seed))
    return operators.Inpainting(operators.center_box_mask(h, w, box if box is not None else (min(h, w) // 3) | 1))


def _deblurring(h, w, seed, blur_std=1.0):
    """A circular Gaussian blur of std ``blur_std`` (kernel side 2⌈3·std⌉ + 1, at most the image)."""
    return operators.Blur(operators.gaussian_kernel(blur_std, min(h, w, 2 * math.ceil(3 * blur_std) + 1) | 1))


def _mri(h, w, seed, acceleration=4.0, center_fraction=0.08, mask_kind="random"):
    """k-space line sampling (:func:`lemmse_lite.operators.line_mask`), seeded."""
    return operators.KSpaceSampling(operators.line_mask(h, w, acceleration, center_fraction, mask_kind, seed))


@dataclass(frozen=True)
class Problem:
    """One inverse problem: ``factory(h, w, seed, **options)`` builds its ``A``; ``options`` maps
    each option of ``"name:OPT=V"`` to (factory keyword, type); ``default_sigma`` is its demo noise
    level; ``settings(problem, profile, text)``, if given, reads its keywords from a profile instead
    (MRI; ``text`` is what follows the ``:`` of ``problem``)."""

    factory: Callable
    default_sigma: float
    options: dict = field(default_factory=dict)
    settings: Callable | None = None


def _mri_settings(problem: str, profile, text: str) -> dict:
    """MRI's keywords from ``profiles.mri_settings(profile)``; ``"mri:R"`` sets the acceleration R."""
    m = profiles.mri_settings(profile)
    try:
        acceleration = float(text) if text else m.acceleration
    except ValueError:
        raise ValueError(f"problem {problem!r}: write 'mri' or 'mri:R' with a number R >= 1") from None
    return {"acceleration": acceleration, "center_fraction": m.center_fraction, "mask_kind": m.mask_kind}


#: Every problem of the course by name (``course/00_inverse_problems.md``; MRI: ``course/09_mri.md``).
REGISTRY = {
    "denoising": Problem(_denoising, 0.2),
    "inpainting": Problem(_inpainting, 0.05, {"box": ("box", int), "missing": ("missing_fraction", float)}),
    "deblurring": Problem(_deblurring, 0.05, {"std": ("blur_std", float)}),
    "mri": Problem(_mri, 0.05, settings=_mri_settings),
}
PROBLEMS = tuple(REGISTRY)
#: Options of ``"inpainting:OPT=V"`` / ``"deblurring:OPT=V"`` (comma-separated), e.g. the paper's
#: ``"inpainting:box=15"``, ``"inpainting:missing=0.3"``, ``"deblurring:std=1.0"``
#: (``profiles.PAPER_PROBLEMS``): option -> (factory keyword, type).
PROBLEM_OPTIONS = {name: p.options for name, p in REGISTRY.items() if p.options}


def _problem(problem: str) -> Problem:
    """The :class:`Problem` of ``problem`` (its name before any ``:``); ValueError naming the known ones."""
    name = problem.partition(":")[0] if isinstance(problem, str) else problem
    if name not in REGISTRY:
        raise ValueError(f"problem must be one of {', '.join(PROBLEMS)} (with options after ':'), got {problem!r}")
    return REGISTRY[name]


def forward_operator(problem: str, h: int, w: int, seed: int = 0, **options) -> operators.Operator:
    """``A`` of the problem named ``problem`` (no ``:options``) on (h, w) images, with the factory
    keywords ``options`` (e.g. ``box=15``, ``missing_fraction=0.3``, ``blur_std=1.0``,
    ``acceleration=8``); ``seed`` draws random masks."""
    if not isinstance(problem, str) or ":" in problem:
        raise ValueError(f"problem must be a bare name, one of {', '.join(PROBLEMS)}, got {problem!r}")
    return _problem(problem).factory(h, w, seed, **options)


def default_sigma(problem: str) -> float:
    """The default noise level of ``problem`` (the CLI's demo and estimate)."""
    return _problem(problem).default_sigma


# ----------------------------------------------------------------------------- images and operators

def load_images(profile, split: str, n=None, dataset=None) -> torch.Tensor:
    """``(N, 1, H, W)`` grey images of ``dataset`` (default ``profile.dataset``) at the profile's
    size and seed; ``n`` defaults to ``profile.n_train`` (train) or ``profile.n_test`` (test)."""
    if n is None:
        n = profile.n_train if split == "train" else profile.n_test
    return data.load(dataset or profile.dataset, split, n=n, seed=profile.seed,
                     size=profile.image_size, grey=True)


def problem_operators(problem: str, pre_inverse, profile):
    """``(A, B)`` of a named problem (:func:`forward_operator`: denoising, centre-box
    inpainting, Gaussian blur of std 1) and pre-inverse spec (``operators.pre_inverse``: None,
    ``"pinv"``, ``"adjoint"``, ``"tikhonov:EPS"``, ...) at the profile's image size."""
    h = w = profile.image_size
    A = forward_operator(problem.partition(":")[0], h, w, seed=profile.seed, **problem_settings(problem, profile))
    return A, operators.pre_inverse(A, pre_inverse)


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
    """The settings of ``problem`` beyond its name, as keyword arguments of its factory
    (:func:`forward_operator`): the ``:OPT=V`` options, or, for ``"mri"``, the acceleration, centre
    fraction and mask kind of ``profiles.mri_settings(profile)`` (``course/09_mri.md``; ``"mri:R"``
    sets the acceleration to the number R, the R sweep)."""
    spec, (name, _, text) = _problem(problem), problem.partition(":")
    if spec.settings is not None:
        return spec.settings(problem, profile, text)
    if spec.options:
        return _problem_options(problem, name, text)
    if text:
        raise ValueError(f"problem {problem!r}: {name} takes no options")
    return {}


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
