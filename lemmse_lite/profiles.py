"""The ``quick`` and ``full`` settings of the course, in one place.

``quick`` runs the whole course on 2 CPU cores inside a CI budget: the embedded offline sets of
:mod:`lemmse_lite.data`, a few hundred training crops, small networks trained for a few minutes.
``full`` is paper scale on a GPU: 10,000 FashionMNIST / CIFAR-10 images, 10,000 training steps,
width-128 networks.

Choose with the environment variable ``LEMMSE_PROFILE`` (``quick`` or ``full``); unset, the
default is ``full`` when ``torch.cuda.is_available()`` and ``quick`` otherwise::

    from lemmse_lite.profiles import get_profile
    profile = get_profile()                  # from LEMMSE_PROFILE / the hardware
    print(profile.describe())                # one line per field, with its meaning
    small = profile.replace(n_train=100)     # a modified copy

Every consumer (notebooks, CLI, benchmarks) reads these field names; see :data:`FIELD_DOCS`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .checks import check_positive_int, check_sigma_range, check_sigma_value

__all__ = [
    "FIELD_DOCS",
    "FULL",
    "PAPER",
    "PAPER_PROBLEMS",
    "PART_ONE",
    "PART_TWO",
    "PROFILES",
    "QUICK",
    "PartOneSettings",
    "PartTwoSettings",
    "Profile",
    "get_profile",
    "part_one_settings",
    "part_two_settings",
]

#: The meaning of every field of :class:`Profile` (also printed by :meth:`Profile.describe`).
FIELD_DOCS = {
    "name": "profile name, 'quick', 'full' or 'paper'",
    "device": "torch device for estimators and training, 'cpu' or 'cuda'",
    "dataset": "grey train/test set for data.load",
    "dataset_rgb": "colour train/test set for data.load",
    "dataset_shift": "a different test distribution (load it grey=True, size=image_size)",
    "image_size": "side H = W of the images of `dataset`",
    "n_train": "training images N for the estimators and the networks",
    "n_test": "test measurements per experiment",
    "patch_size": "default patch size / receptive field P (odd)",
    "patch_sizes": "patch sizes P of the sweeps",
    "sigmas": "noise levels sigma of the tables and curves",
    "sigma_range": "(sigma_min, sigma_max) of the noise drawn during training",
    "model_width": "`width` of lemmse_lite.networks.models: channels of the hidden layers",
    "model_depth": "`depth` of lemmse_lite.networks.models: blocks beyond those setting the receptive field",
    "train_steps": "optimisation steps per trained network",
    "batch_size": "images per training step",
    "lr": "Adam learning rate",
    "chunk_size": "training images per streamed chunk inside the estimators",
    "seed": "seed of data order, masks, noise and initialisation",
    "sweep_steps": "optimisation steps of the sweep networks of chapters 07-08 (other problems, P, N)",
    "sweep_width": "`width` of the sweep networks of chapters 07-08",
    "agreement_sigmas": "noise levels of the network-vs-theory agreement tables (chapters 07-08)",
    "n_sweep": "training-set sizes N of the N sweep (chapter 08; at least 3; all sweep networks)",
    "min_agreement": "threshold (dB) on PSNR(network, reference) at sigma = 0.2, denoising, test",
    "control_margin": "threshold (dB) on the margin of the reference over the best control",
}


@dataclass(frozen=True)
class Profile:
    """One set of course settings; every field is documented in :data:`FIELD_DOCS`."""

    name: str
    device: str
    dataset: str
    dataset_rgb: str
    dataset_shift: str
    image_size: int
    n_train: int
    n_test: int
    patch_size: int
    patch_sizes: tuple
    sigmas: tuple
    sigma_range: tuple
    model_width: int
    model_depth: int
    train_steps: int
    batch_size: int
    lr: float
    chunk_size: int
    seed: int
    sweep_steps: int
    sweep_width: int
    agreement_sigmas: tuple
    n_sweep: tuple
    min_agreement: float
    control_margin: float

    def __post_init__(self):
        _validate(self)

    def replace(self, **changes) -> Profile:
        """A copy with some fields changed (``dataclasses.replace``; validated again)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line per field: ``field = value   # meaning``."""
        rows = [(f.name, repr(getattr(self, f.name))) for f in dataclasses.fields(self)]
        width = max(len(f"{k} = {v}") for k, v in rows)
        lines = [f"{f'{k} = {v}':<{width}}   # {FIELD_DOCS[k]}" for k, v in rows]
        return f"Profile {self.name!r}\n  " + "\n  ".join(lines)

    def __str__(self) -> str:
        return self.describe()


def _validate(p: Profile) -> None:
    """Clear ValueErrors for inconsistent settings (also after ``replace``)."""
    for field in (
        "image_size",
        "n_train",
        "n_test",
        "model_width",
        "model_depth",
        "train_steps",
        "batch_size",
        "chunk_size",
        "sweep_steps",
        "sweep_width",
    ):
        check_positive_int(getattr(p, field), f"Profile.{field}")
    if p.device not in ("cpu", "cuda") and not p.device.startswith("cuda:"):
        raise ValueError(f"Profile.device must be 'cpu' or 'cuda', got {p.device!r}")
    for size in (p.patch_size, *p.patch_sizes):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"patch sizes must be odd positive ints, got {size!r}")
    for field in ("sigmas", "agreement_sigmas"):
        if not getattr(p, field):
            raise ValueError(f"Profile.{field} must hold at least one noise level")
        for s in getattr(p, field):
            check_sigma_value(s, f"Profile.{field}")
    check_sigma_range(p.sigma_range, "Profile.sigma_range")
    if len(p.n_sweep) < 3:
        raise ValueError(f"Profile.n_sweep must hold at least 3 positive ints, got {p.n_sweep!r}")
    for n in p.n_sweep:
        check_positive_int(n, "Profile.n_sweep")
    if not p.lr > 0:
        raise ValueError(f"Profile.lr must be positive, got {p.lr!r}")


QUICK = Profile(
    name="quick",
    device="cpu",
    dataset="photos",
    dataset_rgb="photos-rgb",
    dataset_shift="faces",
    image_size=32,
    n_train=400,
    n_test=4,
    patch_size=5,
    patch_sizes=(3, 5, 7),
    sigmas=(0.05, 0.1, 0.2, 0.4),
    sigma_range=(0.02, 0.5),
    model_width=48,
    model_depth=4,
    train_steps=3000,
    batch_size=32,
    lr=2e-3,
    chunk_size=100,
    seed=0,
    sweep_steps=1500,
    sweep_width=48,
    agreement_sigmas=(0.05, 0.1, 0.2, 0.4),
    n_sweep=(10, 50, 150, 400),
    min_agreement=28.0,
    control_margin=1.0,
)

# dataset_shift: CIFAR-10 converted to grey 28x28 tests the FashionMNIST-trained estimators and
# networks on natural images; a folder of faces ("folder:<path>", e.g. FFHQ thumbnails) can
# replace it with profile.replace(dataset_shift="folder:...") where one is present.
FULL = Profile(
    name="full",
    device="cuda",
    dataset="fashionmnist",
    dataset_rgb="cifar10",
    dataset_shift="cifar10",
    image_size=28,
    n_train=10_000,
    n_test=32,
    patch_size=5,
    patch_sizes=(3, 5, 7, 9, 11),
    sigmas=(0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
    sigma_range=(0.01, 0.5),
    model_width=128,
    model_depth=8,
    train_steps=10_000,
    batch_size=128,
    lr=1e-3,
    chunk_size=1000,
    seed=0,
    sweep_steps=5_000,
    sweep_width=96,
    agreement_sigmas=(0.05, 0.2),
    n_sweep=(1_000, 3_000, 10_000),
    min_agreement=25.0,
    control_margin=1.0,
)

# The paper's own settings (Nguyen et al., arXiv:2601.10334) for `lemmse reproduce --profile paper` on a
# GPU with the real data sets (FashionMNIST, CIFAR-10 via torchvision; FFHQ-32 thumbnails in a folder).
# width 288, depth 8: the ResNet at P = 5 has 3,917,089 parameters (measured with models.make_model),
# the paper's ~4M. Its problems (centre hole 15x15, random 30 % missing, Gaussian blur std 1.0) are
# PAPER_PROBLEMS, spelt as experiments.problem_operators reads them.
PAPER = Profile(
    name="paper",
    device="cuda",
    dataset="fashionmnist",
    dataset_rgb="cifar10",
    dataset_shift="folder:~/.cache/lemmse_lite/ffhq32",
    image_size=28,
    n_train=10_000,
    n_test=32,
    patch_size=5,
    patch_sizes=(5, 7, 9, 11),
    sigmas=(0.01, 0.1, 0.2, 0.3, 0.4, 0.5),
    sigma_range=(0.01, 0.5),
    model_width=288,
    model_depth=8,
    train_steps=10_000,
    batch_size=128,
    lr=1e-3,
    chunk_size=1000,
    seed=0,
    sweep_steps=5_000,
    sweep_width=288,
    agreement_sigmas=(0.01, 0.1, 0.2, 0.3, 0.4, 0.5),
    n_sweep=(1_000, 3_000, 10_000),
    min_agreement=25.0,
    control_margin=1.0,
)
#: The paper's inverse problems: denoising, centre hole 15x15, random 30 % missing, blur std 1.0.
PAPER_PROBLEMS = ("denoising", "inpainting:box=15", "inpainting:missing=0.3", "deblurring:std=1.0")

PROFILES = {"quick": QUICK, "full": FULL, "paper": PAPER}


def get_profile(name: str | Profile | None = None) -> Profile:
    """The profile called ``name``; ``None`` reads ``$LEMMSE_PROFILE``, then the hardware.

    With no name and no (or an empty) ``LEMMSE_PROFILE``, the default is ``full`` when
    ``torch.cuda.is_available()``, else ``quick``. ``full`` chosen on a machine without CUDA
    keeps its sizes but gets ``device="cpu"`` (slow but correct). A :class:`Profile` passed in is
    returned unchanged. Raises ``ValueError`` for an unknown name.
    """
    if isinstance(name, Profile):
        return name
    if name is None:
        name = os.environ.get("LEMMSE_PROFILE", "").strip() or None
    cuda = _cuda_available()
    if name is None:
        name = "full" if cuda else "quick"
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} (argument or $LEMMSE_PROFILE); valid: {', '.join(PROFILES)}"
        )
    profile = PROFILES[key]
    return profile.replace(device="cpu") if profile.device == "cuda" and not cuda else profile


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- MRI (chapter 09)

@dataclass(frozen=True)
class MRISettings:
    """Chapter 09's accelerated MRI (``course/09_mri.md``) under one profile: the k-space line mask
    (target ``acceleration`` R >= 1, centre fraction ``center_fraction`` f_c in [0, 1],
    ``mask_kind`` 'random' or 'equispaced'), the accelerations of the R sweep and the headline
    noise level ``sigma`` of the agreement and its margin. Kept beside :class:`Profile` (whose
    fields are the contract of chapters 00-08); the experiments read it with :func:`mri_settings`."""

    acceleration: float
    center_fraction: float
    mask_kind: str
    accelerations: tuple
    sigma: float

    def __post_init__(self):
        for r in (self.acceleration, *self.accelerations):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not r >= 1:
                raise ValueError(f"MRI accelerations must be numbers >= 1, got {r!r}")
        if isinstance(self.center_fraction, bool) or not isinstance(self.center_fraction, (int, float)) \
                or not 0 <= self.center_fraction <= 1:
            raise ValueError(f"MRISettings.center_fraction must be in [0, 1], got {self.center_fraction!r}")
        if self.mask_kind not in ("random", "equispaced"):
            raise ValueError(f"MRISettings.mask_kind must be 'random' or 'equispaced', got {self.mask_kind!r}")
        check_sigma_value(self.sigma, "MRISettings.sigma")


#: fastMRI's R = 4 / f_c = 0.08 on the profile's images; the R sweep keeps f_c.
MRI_QUICK = MRISettings(acceleration=4.0, center_fraction=0.08, mask_kind="random",
                        accelerations=(2.0, 4.0, 8.0), sigma=0.2)
MRI_FULL = MRISettings(acceleration=4.0, center_fraction=0.08, mask_kind="random",
                       accelerations=(2.0, 3.0, 4.0, 6.0, 8.0), sigma=0.2)


def mri_settings(profile) -> MRISettings:
    """The :class:`MRISettings` of ``profile``: ``MRI_FULL`` for the GPU profiles ('full', 'paper'),
    ``MRI_QUICK`` otherwise."""
    return MRI_FULL if getattr(profile, "name", None) in ("full", "paper") else MRI_QUICK


# ----------------------------------------------------------------------------- chapter 10 (diffusion)
@dataclass(frozen=True)
class DiffusionSettings:
    """The settings of chapter 10 (LE-MMSE inside a diffusion sampler,
    ``lemmse_lite.experiments.diffusion``), per profile: :func:`diffusion_settings`. Sizes are
    chosen so that ``quick`` samples with the analytic estimators and trains the diffusion CNN on 2 CPU cores in a few minutes.

    ``dataset``/``image_size``/``n_train``: the grey training crops; ``n_samples``: samples per
    sampler and seed; ``n_steps``, ``sigma_min``, ``sigma_max``, ``rho``: the EDM schedule (Heun);
    ``patch_size``: P of the LE-MMSE sampler and receptive field of the CNN; ``patch_size_max``: P at
    σ_max of the σ-dependent sampler; ``model_width``/``model_depth``/``train_steps``/``batch_size``/
    ``lr``: the CNN and its training (log-uniform σ over the schedule's range); the thresholds (dB)
    of the chapter's claims: ``min_memorised`` (MMSE samples to the nearest training image),
    ``max_novel`` (LE-MMSE samples, over shifts), ``min_mosaic_margin`` (median nearest-patch PSNR
    over a Gaussian image's), ``min_tracking_margin`` (CNN vs LE-MMSE, same noise over another seed)."""

    dataset: str = "photos"
    image_size: int = 16
    n_train: int = 100
    n_samples: int = 6
    n_steps: int = 16
    sigma_min: float = 0.01
    sigma_max: float = 40.0
    rho: float = 7.0
    patch_size: int = 5
    patch_size_max: int = 9
    model_width: int = 32
    model_depth: int = 2
    train_steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    min_memorised: float = 40.0
    max_novel: float = 25.0
    min_mosaic_margin: float = 10.0
    min_tracking_margin: float = 3.0

    def __post_init__(self):
        for name in ("image_size", "n_train", "n_samples", "n_steps", "model_width", "train_steps", "batch_size"):
            check_positive_int(getattr(self, name), f"DiffusionSettings.{name}")
        for p in (self.patch_size, self.patch_size_max):
            if isinstance(p, bool) or not isinstance(p, int) or p < 1 or p % 2 == 0 or p > self.image_size:
                raise ValueError(f"DiffusionSettings patch sizes must be odd ints <= image_size, got {p!r}")
        check_sigma_range((self.sigma_min, self.sigma_max), "DiffusionSettings (sigma_min, sigma_max)")
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"DiffusionSettings needs sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")


#: Chapter 10 per profile (``full`` is sized for a GPU and has not been timed here).
DIFFUSION = {
    "quick": DiffusionSettings(),
    "full": DiffusionSettings(dataset="fashionmnist", image_size=28, n_train=1000, n_samples=16, n_steps=18,
                              patch_size_max=13, model_width=64, model_depth=4, train_steps=5000,
                              batch_size=128, lr=1e-3),
}


def diffusion_settings(profile: Profile | str | None = None) -> DiffusionSettings:
    """The chapter-10 settings of ``profile`` (a :class:`Profile`, a name, or ``None``: as
    :func:`get_profile`)."""
    return DIFFUSION["quick"] if get_profile(profile).name == "quick" else DIFFUSION["full"]


# ----------------------------------------------------------------------------- chapters 00-05 (part I)
@dataclass(frozen=True)
class PartOneSettings:
    """The inverse problems and sizes of chapters 00-05 (``course/00_inverse_problems.md`` ..
    ``course/05_closed_form.md``), in one place: :func:`part_one_settings`. The image size H = W,
    N, P and the noise levels σ stay in :class:`Profile`; these are the problems built on them.

    - ``box_divisor``: the centred box hole has side ``H // box_divisor`` (:meth:`box_side`); the
      named problems of ``problems.forward_operator`` (``h // 3`` rounded to odd) serve chapters 06+.
    - ``missing_fraction``: the random mask of chapter 05, the paper's 30 % missing pixels.
    - ``missing_fraction_demo``: the random mask of chapter 00, half the pixels missing: there it only
      shows what a mask does, so it is the most visible setting rather than the paper's.
    - ``blur_std``: std (pixels) of the Gaussian blur kernel ``operators.gaussian_kernel``.
    - ``disk_radius``: radius (pixels) of chapter 00's disk kernel (the transfer function with zeros).
    - ``tikhonov_eps``: ε of the Tikhonov pre-inverse (AᵀA + εI)⁻¹Aᵀ.
    - ``eps_mask``: ε of the ε-mask of chapters 00-01: for the whole-image MMSE any
      information-preserving B gives the same estimate, so the value is arbitrary.
    - ``eps_mask_local``: ε of the ε-mask of chapter 05's ex-05-2 (LE-MMSE, B = ε-mask against
      B = mask): small enough that the other patterns' cost (order x²/(2ε²σ²)) dwarfs the bonus
      log(1/ε), so both estimates agree.
    - ``eps_mask_mixed``: ε of chapter 05's check against ``reference.le_mmse_reference``: large
      enough that the determinant term −Σ log|b| and the other patterns weigh in the softmax, so
      the check covers them.
    - ``shift_divisors``: (a, b), the shift g₀ = (H // a, W // b) of chapters 03-04 (:meth:`shift`).
    - ``subset_divisor``: chapters 02, 04 and 05 use the first ``N // subset_divisor`` training
      images where the full set is too slow or not needed (:meth:`subset`).
    - ``sigma_small``, ``sigma_large``: the noise levels of the σ → 0 and σ → ∞ limits (01, 04).
    """

    box_divisor: int = 4
    missing_fraction: float = 0.3
    missing_fraction_demo: float = 0.5
    blur_std: float = 1.0
    disk_radius: float = 2.0
    tikhonov_eps: float = 1e-2
    eps_mask: float = 1e-2
    eps_mask_local: float = 1e-1
    eps_mask_mixed: float = 0.3
    shift_divisors: tuple = (6, 3)
    subset_divisor: int = 4
    sigma_small: float = 0.01
    sigma_large: float = 1e3

    def __post_init__(self):
        _validate_part_one(self)

    def box_side(self, size: int) -> int:
        """Side ``size // box_divisor`` of the centred box hole in a ``size × size`` image."""
        side = size // self.box_divisor
        if side < 1:
            raise ValueError(f"size must be at least box_divisor = {self.box_divisor}, got {size!r}")
        return side

    def shift(self, h: int, w: int) -> tuple:
        """The shift g₀ = (h // a, w // b), (a, b) = ``shift_divisors``."""
        return h // self.shift_divisors[0], w // self.shift_divisors[1]

    def subset(self, n: int) -> int:
        """Size ``max(1, n // subset_divisor)`` of the reduced training set."""
        return max(1, n // self.subset_divisor)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_part_one(s: PartOneSettings) -> None:
    """One-line ValueErrors naming the field of :class:`PartOneSettings` that is wrong."""
    for name in ("box_divisor", "subset_divisor"):
        check_positive_int(getattr(s, name), f"PartOneSettings.{name}")
    if not isinstance(s.shift_divisors, tuple) or len(s.shift_divisors) != 2:
        raise ValueError(f"PartOneSettings.shift_divisors must be a pair of positive ints, got {s.shift_divisors!r}")
    for d in s.shift_divisors:
        check_positive_int(d, "PartOneSettings.shift_divisors")
    for name in ("missing_fraction", "missing_fraction_demo", "eps_mask", "eps_mask_local", "eps_mask_mixed"):
        value = getattr(s, name)
        if not _is_number(value) or not 0 < value < 1:
            raise ValueError(f"PartOneSettings.{name} must be a number in (0, 1), got {value!r}")
    for name in ("blur_std", "disk_radius", "tikhonov_eps"):
        value = getattr(s, name)
        if not _is_number(value) or not 0 < value < float("inf"):
            raise ValueError(f"PartOneSettings.{name} must be a positive finite number, got {value!r}")
    for name in ("sigma_small", "sigma_large"):
        check_sigma_value(getattr(s, name), f"PartOneSettings.{name}")
    if not s.sigma_small < s.sigma_large:
        raise ValueError(f"PartOneSettings.sigma_large must exceed sigma_small = {s.sigma_small!r}, got {s.sigma_large!r}")


#: Chapters 00-05 under every profile: the same problems; H, N and P scale through :class:`Profile`.
PART_ONE = PartOneSettings()


def part_one_settings(profile: Profile | str | None = None) -> PartOneSettings:
    """The :class:`PartOneSettings` of ``profile`` (a :class:`Profile`, a name, or ``None``: as
    :func:`get_profile`, which also rejects unknown names): :data:`PART_ONE` for every profile."""
    get_profile(profile)
    return PART_ONE


# ----------------------------------------------------------------------------- chapters 06-08 (part II)
@dataclass(frozen=True)
class PartTwoSettings:
    """How chapters 06-08 train their networks and measure them against the theory
    (``course/06_training.md`` .. ``course/08_generalisation.md``): :func:`part_two_settings`.

    - ``train_crop``: side of the training crops (``training.TrainConfig.crop``; ``None``: whole
      images) and ``train_batch_size`` the crops per step (``None``: ``Profile.batch_size``).
    - ``train_compile``: ``torch.compile`` the networks while training; ``train_amp``: bfloat16
      autocast of their forward pass (``training.TrainConfig.amp``).
    - ``n_agreement``: test (and training) measurements of the agreement tables; ``n_boot``: the
      bootstrap resamples of their 95 % intervals.
    - ``curve_steps``: the steps at which the agreement-against-training-steps curve of chapter 07
      reads the EMA weights of a run of ``2 * Profile.train_steps`` steps.
    - ``effective_sizes``: the patch sizes P' of the effective patch size ``P_eff(sigma)``.
    - ``n_agreement_train``: training measurements of the agreement tables (the test ones set the
      intervals the claims are read from).
    """

    train_crop: int | None = None
    train_batch_size: int | None = None
    train_compile: bool = False
    train_amp: bool = False
    n_agreement: int = 32
    n_boot: int = 1000
    curve_steps: tuple = ()
    effective_sizes: tuple = (1, 3, 5, 7, 9)
    n_agreement_train: int = 16

    def __post_init__(self):
        for name in ("n_agreement", "n_boot", "n_agreement_train"):
            check_positive_int(getattr(self, name), f"PartTwoSettings.{name}")
        for name in ("train_crop", "train_batch_size"):
            check_positive_int(getattr(self, name), f"PartTwoSettings.{name}", allow_none=True)
        for v in self.curve_steps:
            check_positive_int(v, "PartTwoSettings.curve_steps")
        if any(isinstance(p, bool) or not isinstance(p, int) or p < 1 or p % 2 == 0 for p in self.effective_sizes):
            raise ValueError(f"PartTwoSettings.effective_sizes must hold odd positive ints, got {self.effective_sizes!r}")


#: quick: whole 32x32 images (crops measured no faster per pixel, benchmarks/train_speed.py),
#: torch.compile and bfloat16 autocast (2.7x per step on 2 CPU cores with AVX512-BF16).
PART_TWO = {
    "quick": PartTwoSettings(train_crop=None, train_batch_size=None, train_compile=True, train_amp=True,
                             n_agreement=32, n_agreement_train=16, n_boot=1000, curve_steps=(100, 300, 1000, 3000),
                             effective_sizes=(1, 3, 5, 7, 9)),
    "full": PartTwoSettings(train_crop=None, train_compile=True, train_amp=True, n_agreement=64, n_agreement_train=32,
                            curve_steps=(300, 1000, 3000, 10_000)),
}


def part_two_settings(profile) -> PartTwoSettings:
    """The :class:`PartTwoSettings` of ``profile`` (a :class:`Profile` or a name); ``paper`` uses ``full``'s."""
    name = get_profile(profile).name
    return PART_TWO["quick"] if name == "quick" else PART_TWO["full"]
