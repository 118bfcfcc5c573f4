"""Interactive explorers for the course, each with a static fallback that draws the same figure.

:class:`SigmaPatchExplorer` (``course/04_locality.md``, section "Explore σ and P") shows, for one
test image ``x``, the measurement ``y = x + σ e`` (:func:`lemmse_lite.operators.measure`, one seed:
the same ``e`` at every σ, so the sliders change σ only) and its LE-MMSE with patch size ``P``
(``eq-lemmse``). :meth:`SigmaPatchExplorer.figure` is the static path (no ipywidgets needed; what
the book shows); :func:`interact_sigma_patch` adds two sliders when ipywidgets is installed (the
``[course]`` extra) and raises an ``ImportError`` saying so otherwise. Estimates are cached per
``(σ, P)``, so the callback that nbval runs once with the defaults costs one figure, not one
estimate, once the default has been computed (or :meth:`SigmaPatchExplorer.remember`-ed).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .. import estimators, operators, plotting
from ..checks import check_odd, check_sigma
from ..estimators import metrics

__all__ = ["SigmaPatchExplorer", "interact_sigma_patch"]


class SigmaPatchExplorer:
    """LE-MMSE of one test image over noise levels σ and patch sizes ``P``, cached.

    Args:
        clean: the test image ``x``, ``(1, C, H, W)`` or ``(C, H, W)``, values in [0, 1].
        train: training images ``(N, C, H, W)`` (used by the default ``estimate``).
        seed: seed of the noise ``e`` (the same ``e`` for every σ).
        estimate: ``estimate(y, sigma, patch_size) -> x_hat`` on ``(1, C, H, W)``; default
            :func:`lemmse_lite.estimators.le_mmse` with ``train`` (pass your own to choose the
            device or the chunk size). Called only for settings not yet cached.
    """

    def __init__(self, clean: torch.Tensor, train: torch.Tensor, seed: int = 0, estimate=None):
        clean = clean[None] if clean.dim() == 3 else clean
        operators.check_images(clean, "clean")
        if clean.shape[0] != 1:
            raise ValueError(f"clean must be one image (1, C, H, W), got shape {tuple(clean.shape)}")
        self.clean, self.train, self.seed = clean, train, seed
        self._estimate = estimate or (lambda y, s, p: estimators.le_mmse(y, train, s, p))
        self.cache: dict = {}

    def measurement(self, sigma: float) -> torch.Tensor:
        """``y = x + σ e`` ``(1, C, H, W)``, with the explorer's seed."""
        return operators.measure(None, self.clean, sigma, self.seed)

    def remember(self, sigma: float, patch_size: int, x_hat: torch.Tensor, y: torch.Tensor) -> None:
        """Cache an estimate computed elsewhere, after checking that it was computed from this
        explorer's measurement ``y`` (same image, same noise) -- otherwise ``ValueError``."""
        if y.shape != self.clean.shape or not torch.allclose(y.cpu(), self.measurement(sigma).cpu(), atol=1e-6):
            raise ValueError("y is not this explorer's measurement at this sigma (other image or noise)")
        self.cache[(float(sigma), int(patch_size))] = x_hat.detach().cpu()

    def estimate(self, sigma: float, patch_size: int) -> torch.Tensor:
        """The LE-MMSE ``(1, C, H, W)`` (on the CPU) at ``(σ, P)``, computed once per setting."""
        check_sigma(sigma, 1)
        check_odd(patch_size, "patch_size")
        key = (float(sigma), int(patch_size))
        if key not in self.cache:
            self.cache[key] = self._estimate(self.measurement(sigma), sigma, patch_size).detach().cpu()
        return self.cache[key]

    def figure(self, sigma: float, patch_size: int, size: float = 1.8):
        """The static figure: clean, noisy (clipped to [0, 1]) and LE-MMSE with its PSNR (dB)."""
        x_hat = self.estimate(sigma, patch_size)
        clean = self.clean.cpu()
        psnr = float(metrics.psnr(x_hat, clean))
        return plotting.image_grid(
            [clean[0], self.measurement(sigma)[0].cpu().clamp(0, 1), x_hat[0]],
            titles=["clean", f"noisy, sigma={sigma:g}", f"LE-MMSE P={patch_size}, {psnr:.1f} dB"],
            size=size,
        )


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError as exc:  # optional dependency: the [course] extra
        raise ImportError(
            "the interactive explorer needs ipywidgets (pip install 'lemmse_lite[course]'); "
            "SigmaPatchExplorer.figure(sigma, patch_size) draws the same figure without it"
        ) from exc
    return ipywidgets


def interact_sigma_patch(explorer: SigmaPatchExplorer, sigmas, patch_sizes, sigma=None, patch_size=None):
    """Two sliders (σ over ``sigmas``, ``P`` over ``patch_sizes``) redrawing
    :meth:`SigmaPatchExplorer.figure`; defaults: the first of each. Needs ipywidgets (a clear
    ``ImportError`` otherwise). Returns the ``ipywidgets.interact`` result."""
    ipywidgets = _ipywidgets()
    sigmas, patch_sizes = [float(s) for s in sigmas], [int(p) for p in patch_sizes]
    sigma = sigmas[0] if sigma is None else float(sigma)
    patch_size = patch_sizes[0] if patch_size is None else int(patch_size)

    def show(sigma=sigma, patch_size=patch_size):
        explorer.figure(sigma, patch_size)
        plt.show()

    return ipywidgets.interact(
        show,
        sigma=ipywidgets.SelectionSlider(options=sigmas, value=sigma, description="sigma"),
        patch_size=ipywidgets.SelectionSlider(options=patch_sizes, value=patch_size, description="P"),
    )
