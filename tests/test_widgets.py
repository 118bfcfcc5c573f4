"""lemmse_lite.course.widgets: the σ/P explorer's static path (the figure the book shows), its cache and
its measurement, and the optional ipywidgets layer."""

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lemmse_lite import estimators  # noqa: E402
from lemmse_lite.course import widgets  # noqa: E402
from lemmse_lite.estimators import metrics  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _data():
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 1, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g)


class Counting:
    """A stand-in estimator that records its calls and returns a known image."""

    def __init__(self):
        self.calls = []

    def __call__(self, y, sigma, patch_size):
        self.calls.append((float(sigma), patch_size, y.clone()))
        return torch.full_like(y, 0.5)


def test_measurement_is_x_plus_sigma_e_with_one_e_for_every_sigma():
    clean, train = _data()
    ex = widgets.SigmaPatchExplorer(clean, train, seed=7)
    e = torch.randn(clean.shape, generator=torch.Generator().manual_seed(7))
    for sigma in (0.05, 0.3):
        assert torch.allclose(ex.measurement(sigma), clean + sigma * e, atol=1e-7)


def test_static_figure_and_cache():
    clean, train = _data()
    fake = Counting()
    ex = widgets.SigmaPatchExplorer(clean[0], train, seed=1, estimate=fake)  # (C, H, W) accepted
    fig = ex.figure(0.2, 3)
    ex.figure(0.2, 3)
    assert len(fake.calls) == 1 and fake.calls[0][:2] == (0.2, 3)  # cached per (sigma, P)
    assert torch.equal(fake.calls[0][2], ex.measurement(0.2))
    psnr = float(metrics.psnr(torch.full_like(clean, 0.5), clean))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["clean", "noisy, sigma=0.2", f"LE-MMSE P=3, {psnr:.1f} dB"]
    shown = fig.axes[1].get_images()[0].get_array()
    assert float(shown.min()) >= 0 and float(shown.max()) <= 1  # noisy image clipped for display
    ex.figure(0.1, 3)
    assert len(fake.calls) == 2
    plt.close("all")


def test_default_estimator_is_le_mmse_and_remember_checks_the_measurement():
    clean, train = _data()
    ex = widgets.SigmaPatchExplorer(clean, train, seed=0)
    y = ex.measurement(0.2)
    assert torch.allclose(ex.estimate(0.2, 3), estimators.le_mmse(y, train, 0.2, 3), atol=1e-6)
    other = widgets.SigmaPatchExplorer(clean, train, seed=0, estimate=Counting())
    other.remember(0.1, 5, torch.zeros_like(clean), other.measurement(0.1))
    assert torch.equal(other.estimate(0.1, 5), torch.zeros_like(clean))
    with pytest.raises(ValueError, match="not this explorer's measurement"):
        other.remember(0.1, 3, clean, clean)  # the clean image is not the measurement


def test_bad_inputs():
    clean, train = _data()
    with pytest.raises(ValueError, match="one image"):
        widgets.SigmaPatchExplorer(torch.rand(2, 1, 8, 8), train)
    ex = widgets.SigmaPatchExplorer(clean, train, estimate=Counting())
    with pytest.raises(ValueError, match="sigma"):
        ex.estimate(0.0, 3)
    with pytest.raises(ValueError, match="patch_size"):
        ex.estimate(0.1, 4)


def test_without_ipywidgets_the_error_says_what_to_do(monkeypatch):
    clean, train = _data()
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    with pytest.raises(ImportError, match=r"needs ipywidgets.*\[course\].*figure\(sigma, patch_size\)"):
        widgets.interact_sigma_patch(widgets.SigmaPatchExplorer(clean, train), [0.1], [3])


def test_interact_runs_the_callback_once_with_the_defaults():
    pytest.importorskip("ipywidgets")
    clean, train = _data()
    fake = Counting()
    ex = widgets.SigmaPatchExplorer(clean, train, estimate=fake)
    widgets.interact_sigma_patch(ex, [0.05, 0.2], [3, 5], sigma=0.2, patch_size=5)
    assert [c[:2] for c in fake.calls] == [(0.2, 5)]
    plt.close("all")
