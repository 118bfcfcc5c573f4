"""Smoke tests of the schematic figures: each returns a figure with titled, labelled axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
import torch

from lemmse_lite.course import schematics

IMG = torch.rand(9, 9, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _titled(fig):
    return [ax for ax in fig.axes if ax.get_title()]


def test_forward_models():
    fig = schematics.forward_models(IMG, {"denoising": IMG, "blur": IMG * 0.5})
    assert len(fig.axes) == 6 and len(_titled(fig)) == 4 and fig._suptitle is not None


def test_softmax_toy_weights_follow_sigma():
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    fig = schematics.softmax_toy(pts, torch.tensor([0.2, 0.1]), [0.05, 10.0])
    titles = [ax.get_title() for ax in fig.axes]
    assert (
        titles[0].endswith("1.00") and float(titles[1].split("=")[-1]) < 0.4
    )  # one-hot, then uniform


def test_shift_pairs_and_lookup():
    assert len(_titled(schematics.shift_pairs(IMG, IMG, [(0, 0), (2, 3)]))) == 4
    fig = schematics.patch_lookup(IMG, torch.stack([IMG, IMG]), 3)
    assert len(fig.axes) == 3 and len(fig.axes[1].patches) == 3


def test_attention_map_panels():
    w = torch.rand(10, 81)
    fig = schematics.attention_map(w / w.sum(), 9)
    assert len(_titled(fig)) == 10


def test_category_map_legend():
    _, ax = plt.subplots()
    labels = torch.tensor([[0, 0, 5], [7, 7, 7], [9, 1, 2]])
    schematics.category_map(ax, labels, n_colours=2, label="train")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["train 7", "train 0", "other"]


def test_degenerate_gaussians():
    fig = schematics.degenerate_gaussians()
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
