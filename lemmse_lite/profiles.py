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

__all__ = ["FIELD_DOCS", "FULL", "PAPER", "PAPER_PROBLEMS", "PROFILES", "QUICK", "Profile", "get_profile"]

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
    "model_width": "`width` of lemmse_lite.models: channels of the hidden layers",
    "model_depth": "`depth` of lemmse_lite.models: blocks beyond those setting the receptive field",
    "train_steps": "optimisation steps per trained network",
    "batch_size": "images per training step",
    "lr": "Adam learning rate",
    "chunk_size": "training images per streamed chunk inside the estimators",
    "seed": "seed of data order, masks, noise and initialisation",
    "sweep_steps": "optimisation steps of the sweep networks of chapters 07-08 (other problems, P, N)",
    "sweep_width": "`width` of the sweep networks of chapters 07-08",
    "agreement_sigmas": "noise levels of the network-vs-theory agreement tables (chapters 07-08)",
    "n_sweep": "training-set sizes N of the N sweep (chapter 08; at least 3; n_train reuses the main network)",
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
        value = getattr(p, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Profile.{field} must be a positive int, got {value!r}")
    if p.device not in ("cpu", "cuda") and not p.device.startswith("cuda:"):
        raise ValueError(f"Profile.device must be 'cpu' or 'cuda', got {p.device!r}")
    for size in (p.patch_size, *p.patch_sizes):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise ValueError(f"patch sizes must be odd positive ints, got {size!r}")
    if not p.sigmas or any(not s > 0 for s in p.sigmas):
        raise ValueError(f"Profile.sigmas must be positive, got {p.sigmas!r}")
    if len(p.sigma_range) != 2 or not 0 <= p.sigma_range[0] < p.sigma_range[1]:
        raise ValueError(
            f"Profile.sigma_range must be (min, max), 0 <= min < max, got {p.sigma_range!r}"
        )
    if not p.agreement_sigmas or any(not s > 0 for s in p.agreement_sigmas):
        raise ValueError(f"Profile.agreement_sigmas must be positive, got {p.agreement_sigmas!r}")
    if len(p.n_sweep) < 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in p.n_sweep):
        raise ValueError(f"Profile.n_sweep must hold at least 3 positive ints, got {p.n_sweep!r}")
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
    train_steps=500,
    batch_size=32,
    lr=2e-3,
    chunk_size=100,
    seed=0,
    sweep_steps=300,
    sweep_width=32,
    agreement_sigmas=(0.05, 0.2),
    n_sweep=(50, 150, 400),
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
