"""LE-MMSE as an analytic diffusion model (`course/10_diffusion.md`, `eq-tweedie`, `eq-pf-ode`,
`eq-edm-schedule`).

A variance-exploding diffusion needs one object, a denoiser ``D(x, σ) ≈ E[x_0 | x_0 + σ ε = x]``.
Tweedie's formula turns it into the score ``∇ log p_σ(x) = (D(x, σ) − x) / σ²`` and sampling
integrates the probability-flow ODE ``dx/dσ = (x − D(x, σ)) / σ`` from ``x = σ_max ε`` down to
``σ_min``, then returns ``D(x, σ_min)`` (the last step, to σ = 0).

* :class:`Schedule` — EDM's noise levels ``σ_i = (σ_max^{1/ρ} + i/(n−1)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ``;
* :func:`sample` — Euler or Heun steps along the schedule, for any denoiser, batched, with a
  progress bar; :func:`initial_noise` — the seeded ``ε``;
* denoisers: :class:`MMSEDenoiser` (the ideal MMSE of `course/01_ideal_mmse.md`, `eq-mmse`: it
  memorises), :class:`LEMMSEDenoiser` (`course/04_locality.md`, `eq-lemmse`, with a patch size
  that may depend on σ: it creates mosaics), :class:`NetworkDenoiser` (any ``net(z, σ)``);
* :class:`EDMPreconditioner` — EDM's input/output scaling around a local network, trained with
  log-uniform σ over the sampler's range (:func:`diffusion_train_config`,
  :func:`trained_diffusion_network`, cached like the networks of :mod:`lemmse_lite.experiments`);
* :func:`nearest_patch_psnr` — per patch of a sample, the PSNR to the nearest training patch (the
  mosaic measure of `course/10_diffusion.md`).

The estimators are the package's own (:func:`lemmse_lite.estimators.mmse`,
:func:`lemmse_lite.estimators.le_mmse`): no second softmax lives here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import estimators, store
from ..checks import check_odd, check_positive_int, check_sigma
from ..estimators.patches import check_patch_size, extract_patches
from ..estimators.streaming import training_chunks
from ..networks import models, training
from ..operators import check_images

__all__ = [
    "METHODS",
    "Denoiser",
    "EDMPreconditioner",
    "LEMMSEDenoiser",
    "MMSEDenoiser",
    "NetworkDenoiser",
    "Schedule",
    "diffusion_train_config",
    "growing_patch_size",
    "initial_noise",
    "nearest_patch_psnr",
    "sample",
    "trained_diffusion_network",
]

METHODS = ("euler", "heun")
SIGMA_DATA = 0.5  # EDM's data scale: the root mean square of [0, 1] images is about 0.5


@runtime_checkable
class Denoiser(Protocol):
    """What the sampler needs (`eq-tweedie`): ``D(x, σ) ≈ E[x_0 | x_0 + σ ε = x]``, ``x`` (B, C, H, W)
    and ``σ`` a float -> (B, C, H, W). :class:`MMSEDenoiser`, :class:`LEMMSEDenoiser`,
    :class:`NetworkDenoiser`, :class:`EDMPreconditioner` and the restoration networks of
    :mod:`lemmse_lite.networks.models` (``net(z, σ)``) all are one."""

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        ...


# ----------------------------------------------------------------------------- the schedule

def _check_level(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Schedule:
    """EDM's noise levels (`course/10_diffusion.md`, `eq-edm-schedule`)::

        σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ,   i = 0, …, n−1,

    decreasing from ``sigma_max`` to ``sigma_min``; ``ρ > 0`` (EDM: 7) packs the steps at low σ.
    ``n_steps`` ≥ 2 levels; the sampler adds the last step to σ = 0."""

    n_steps: int = 18
    sigma_min: float = 0.01
    sigma_max: float = 40.0
    rho: float = 7.0

    def __post_init__(self):
        check_positive_int(self.n_steps, "n_steps")
        if self.n_steps < 2:
            raise ValueError(f"n_steps must be at least 2 (sigma_max and sigma_min), got {self.n_steps}")
        lo, hi = _check_level(self.sigma_min, "sigma_min"), _check_level(self.sigma_max, "sigma_max")
        if not lo < hi:
            raise ValueError(f"sigma_min must be below sigma_max, got sigma_min={lo}, sigma_max={hi}")
        _check_level(self.rho, "rho")

    def sigmas(self) -> torch.Tensor:
        """(n_steps,) float64, ``σ_0 = sigma_max > … > σ_{n−1} = sigma_min``."""
        i = torch.arange(self.n_steps, dtype=torch.float64) / (self.n_steps - 1)
        a, b = self.sigma_max ** (1 / self.rho), self.sigma_min ** (1 / self.rho)
        s = (a + i * (b - a)) ** self.rho
        s[0], s[-1] = self.sigma_max, self.sigma_min  # exact ends (no rounding of the powers)
        return s


# ----------------------------------------------------------------------------- the sampler

def initial_noise(n: int, shape, seed: int = 0, device=None) -> torch.Tensor:
    """Seeded standard normal ``ε`` of shape (n, C, H, W) (float32; the sampler starts at
    ``σ_max ε``). The same ``seed`` gives the same noise on every call."""
    check_positive_int(n, "n")
    if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) positive ints, got {shape!r}")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, *shape, generator=gen).to(device or "cpu")


def _drift(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``dx/dσ = (x − D(x, σ)) / σ`` (`eq-pf-ode`), checked to keep the shape of ``x``."""
    d = denoiser(x, sigma)
    if not isinstance(d, torch.Tensor) or d.shape != x.shape:
        got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
        raise ValueError(f"denoiser must return a tensor of shape {tuple(x.shape)}, got {got}")
    return (x - d.to(x.dtype)) / sigma


def sample(denoiser: Denoiser, noise: torch.Tensor, schedule: Schedule | None = None,
           method: str = "heun", progress: bool = False) -> torch.Tensor:
    """Integrate the probability-flow ODE (`course/10_diffusion.md`, `eq-pf-ode`)::

        dx/dσ = (x − D(x, σ)) / σ,   x(σ_max) = σ_max ε,

    along ``schedule.sigmas()`` with Euler steps ``x ← x + (σ_{i+1} − σ_i) d_i`` or Heun steps (the
    trapezoid of ``d_i`` and the drift at the Euler prediction), then return ``D(x, σ_min)``.

    Args:
        denoiser: ``D(x, sigma) -> (B, C, H, W)`` with ``sigma`` a float (one level per call).
        noise: (B, C, H, W) standard normal ``ε`` (:func:`initial_noise`); samples are batched.
        schedule: a :class:`Schedule` (default ``Schedule()``: 18 levels from 40 to 0.01).
        method: ``"euler"`` (n denoiser calls for n levels) or ``"heun"`` (2n − 1 calls).
        progress: a tqdm bar over the steps.
    Returns:
        (B, C, H, W) samples.
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be a callable D(x, sigma), got {type(denoiser).__name__}")
    noise = check_images(noise, "noise")
    schedule = Schedule() if schedule is None else schedule
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    sig = schedule.sigmas().tolist()
    x = noise * sig[0]
    for s, s_next in tqdm(list(itertools.pairwise(sig)), disable=not progress, desc=method, leave=False):
        d = _drift(denoiser, x, s)
        x_next = x + (s_next - s) * d
        if method == "heun":
            x_next = x + (s_next - s) * 0.5 * (d + _drift(denoiser, x_next, s_next))
        x = x_next
    return denoiser(x, sig[-1]).to(x.dtype)


# ----------------------------------------------------------------------------- the denoisers

class MMSEDenoiser:
    """``D(x, σ)`` = the ideal MMSE of the empirical prior (`course/01_ideal_mmse.md`, `eq-mmse`):
    ``Σ_i softmax_i(−‖x − x_i‖²/2σ²) x_i``, :func:`lemmse_lite.estimators.mmse` with ``A = I``.
    ``train``: (N, C, H, W) or an iterable; x: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, train, chunk_size: int | None = None):
        self.train, self.chunk_size = train, chunk_size

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return estimators.mmse(x, self.train, sigma, chunk_size=self.chunk_size)


def growing_patch_size(p_min: int, p_max: int, sigma_min: float, sigma_max: float) -> Callable:
    """A patch size that grows with the noise level: σ -> the odd P nearest to
    ``p_min + (p_max − p_min) · (log σ − log σ_min) / (log σ_max − log σ_min)`` (clamped), the
    σ-dependent locality of Kamb & Ganguli (`course/10_diffusion.md`)."""
    check_odd(p_min, "p_min")
    check_odd(p_max, "p_max")
    if p_max < p_min:
        raise ValueError(f"p_max must be at least p_min, got p_min={p_min}, p_max={p_max}")
    lo, hi = math.log(_check_level(sigma_min, "sigma_min")), math.log(_check_level(sigma_max, "sigma_max"))
    if not lo < hi:
        raise ValueError(f"sigma_min must be below sigma_max, got {sigma_min}, {sigma_max}")

    def patch_size(sigma: float) -> int:
        t = min(1.0, max(0.0, (math.log(sigma) - lo) / (hi - lo)))
        half = round((p_min - 1) / 2 + t * (p_max - p_min) / 2)
        return 2 * half + 1

    return patch_size


class LEMMSEDenoiser:
    """``D(x, σ)`` = the LE-MMSE (`course/04_locality.md`, `eq-lemmse`) with ``A = B = I``::

        D(x, σ)[n] = Σ_{i,m} softmax_{i,m}(−‖Π_n x − Π_m x_i‖² / 2σ²) x_i[m],

    :func:`lemmse_lite.estimators.le_mmse` with patch size ``P(σ)``: ``patch_size`` is an odd int
    or a callable σ -> odd int (e.g. :func:`growing_patch_size`), capped at min(H, W) less one
    when even. x: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, train, patch_size, chunk_size: int | None = None):
        if not callable(patch_size):
            check_odd(patch_size, "patch_size")
        self.train, self.patch_size, self.chunk_size = train, patch_size, chunk_size

    def size_at(self, sigma: float, h: int, w: int) -> int:
        """The patch size used at noise level σ on an H×W image."""
        p = self.patch_size(sigma) if callable(self.patch_size) else self.patch_size
        check_odd(p, "patch_size(sigma)")
        cap = min(h, w) if min(h, w) % 2 else min(h, w) - 1
        return min(p, cap)

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        p = self.size_at(sigma, *x.shape[-2:])
        return estimators.le_mmse(x, self.train, sigma, p, chunk_size=self.chunk_size)


class NetworkDenoiser:
    """``D(x, σ) = net(x, σ)`` without gradients, in the network's dtype and device (a trained
    local CNN, e.g. an :class:`EDMPreconditioner`). x: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, net: nn.Module):
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        p = next(self.net.parameters())
        return self.net(x.to(p.device, p.dtype), sigma).to(x.device, x.dtype)


# ----------------------------------------------------------------------------- a trained denoiser

class EDMPreconditioner(nn.Module):
    """EDM's input/output scaling around a local network ``F`` (`course/10_diffusion.md`,
    `eq-edm-scaling`)::

        D(z, σ) = c_skip z + c_out F̃(c_in z, σ),   c_in = 1/√(σ² + σ_d²),
        c_skip = σ_d² / (σ² + σ_d²),   c_out = σ σ_d / √(σ² + σ_d²),

    with ``F̃(u, σ) = F(u, s) − u`` the residual branch of the package's networks (they return
    ``u + …``), so ``D ≈ c_skip z`` at initialisation, and ``F`` conditioned on
    ``s = σ/√(σ² + σ_d²) ∈ (0, 1)`` (its log-σ embedding then sees a bounded input over σ ∈
    [0.01, 40]). :meth:`loss_weight` is EDM's ``λ(σ) = 1/c_out²``, read by
    :func:`lemmse_lite.networks.training.train_step`. The receptive field is the one of ``F``.
    z: (B, C, H, W), sigma: float or (B,) -> (B, C, H, W)."""

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA):
        super().__init__()
        self.net, self.sigma_data = net, _check_level(sigma_data, "sigma_data")
        self.channels, self.patch_size = net.channels, net.patch_size
        self.config = {"family": "EDMPreconditioner", "sigma_data": self.sigma_data, "net": dict(net.config)}

    def forward(self, z: torch.Tensor, sigma) -> torch.Tensor:
        sig = check_sigma(sigma, z.shape[0], z.device, z.dtype)[:, None, None, None]
        sd2 = self.sigma_data**2
        norm = torch.sqrt(sig**2 + sd2)
        u = z / norm
        s = (sig / norm).flatten()
        return (sd2 / norm**2) * z + (sig * self.sigma_data / norm) * (self.net(u, s) - u)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM's ``λ(σ) = (σ² + σ_d²) / (σ σ_d)²``: (B,) -> (B,)."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


def diffusion_train_config(schedule: Schedule, steps: int, batch_size: int, lr: float, seed: int = 0,
                           device: str = "cpu") -> training.TrainConfig:
    """A :class:`lemmse_lite.networks.training.TrainConfig` over the sampler's σ range: log-uniform σ from
    ``schedule.sigma_min`` to ``schedule.sigma_max`` (not the restoration range of part II)."""
    return training.TrainConfig(sigma_range=(schedule.sigma_min, schedule.sigma_max), sigma_law="log-uniform",
                                steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device)


def trained_diffusion_network(images: torch.Tensor, patch_size: int, width: int, depth: int,
                              config: training.TrainConfig, cache=None, progress: bool = False):
    """An :class:`EDMPreconditioner` around a ``LocalResNet`` of receptive field ``patch_size``,
    trained on ``images`` (N, C, H, W) with ``config`` (:func:`diffusion_train_config`), loaded from
    the cache of :mod:`lemmse_lite.experiments` when the same settings, data and code were trained
    before. Returns the model in eval mode on ``config.device`` with ``.history`` (dict) and
    ``.from_cache``."""
    images = check_images(images, "images")
    if not isinstance(config, training.TrainConfig):
        raise TypeError(f"config must be a TrainConfig (diffusion_train_config), got {type(config).__name__}")
    settings = {"kind": "diffusion", "data": store.tensor_digest(images), "patch_size": patch_size,
                "width": width, "depth": depth, "config": vars(config)}
    with torch.random.fork_rng(devices=[]):  # the initial weights from config.seed; the caller's RNG untouched
        torch.manual_seed(config.seed)
        net = EDMPreconditioner(models.make_model("resnet", patch_size=patch_size, channels=images.shape[1],
                                                  width=width, depth=depth))
    state = {}

    def compute():
        hist = training.train(net, images, config=config, progress=progress)
        state["trained"] = True
        return {"state_dict": {k: v.cpu() for k, v in net.state_dict().items()}, "history": hist.as_dict()}

    payload = store.cached("diffusion-networks", settings, compute, cache, roots=("diffusion",))
    net.load_state_dict(payload["state_dict"])
    net = net.to(config.device or "cpu").eval()
    net.history, net.from_cache = payload["history"], not state
    return net


# ----------------------------------------------------------------------------- the mosaic measure

def nearest_patch_psnr(x: torch.Tensor, train, patch_size: int, chunk_size: int = 64) -> torch.Tensor:
    """For each circular ``C×P×P`` patch ``Π_n x[b]`` of a sample, the PSNR to its nearest patch
    among all patches ``Π_m x_i`` of the training set: ``−10 log10(min_{i,m} ‖Π_n x − Π_m x_i‖²/(C P²))``
    (float64). x: (B, C, H, W); train: (N, C, H, W) or an iterable; returns (B, H, W) in dB."""
    x = check_images(x, "x")
    check_positive_int(chunk_size, "chunk_size")
    bsz, c, h, w = x.shape
    check_patch_size(patch_size, h, w)
    q = extract_patches(x.double(), patch_size).reshape(bsz * h * w, -1)
    best = torch.full((len(q),), math.inf, dtype=torch.float64, device=x.device)
    for _, chunk in training_chunks(train, (c, h, w), chunk_size, x.device, torch.float64):
        keys = extract_patches(chunk, patch_size).reshape(-1, q.shape[1])
        d2 = (q * q).sum(1)[:, None] + (keys * keys).sum(1)[None] - 2 * q @ keys.T
        best = torch.minimum(best, d2.min(1).values)
    mse = best.clamp_min(1e-30) / q.shape[1]
    return (-10 * torch.log10(mse)).reshape(bsz, h, w)
