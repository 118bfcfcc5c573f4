"""compare(): networks against reference estimators (course/07_networks_vs_theory.md, eq-agreement)."""

import csv
import json
import math

import pytest
import torch

from lemmse_lite.estimators import le_mmse, mmse
from lemmse_lite.experiments.compare import (
    compare,
    format_table,
    save_comparison_figure,
    save_results,
)
from lemmse_lite.networks.models import LocalResNet

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n, seed, size=16):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


ROWS = [
    {"architecture": "resnet", "patch_size": 5, "split": "train", "sigma": 0.1, "n": 4,
     "psnr_net_lemmse": 30.123, "psnr_net_x": 25.5, "psnr_lemmse_x": 26.25},
    {"architecture": "unet", "patch_size": 5, "split": "test", "sigma": 0.2, "n": 4,
     "psnr_net_lemmse": 28.0, "psnr_net_x": 22.0, "psnr_lemmse_x": 21.0},
]


def test_format_and_save(tmp_path):
    text = format_table(ROWS)
    assert text.splitlines()[0].split()[:3] == ["architecture", "patch_size", "split"]
    assert "30.12" in text and "0.100" in text and len(text.splitlines()) == 4
    json_path, csv_path = save_results(ROWS, tmp_path / "out")
    assert json.loads(json_path.read_text()) == ROWS
    json_path, _ = save_results([{**ROWS[0], "psnr_net_lemmse": math.inf}], tmp_path, "inf")
    assert json.loads(json_path.read_text())[0]["psnr_net_lemmse"] is None  # strict JSON
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert rows[1]["architecture"] == "unet" and float(rows[0]["psnr_net_x"]) == 25.5


def test_figure(tmp_path):
    x = _images(3, 0)
    path = save_comparison_figure(tmp_path / "fig.png", x, x, x, x)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rgb = torch.rand(2, 3, 8, 8)
    assert save_comparison_figure(tmp_path / "rgb.png", rgb, rgb, rgb, rgb).exists()


class Wrapper(torch.nn.Module):
    """A 'network' that is an estimator: ``fn(z, train, sigma)`` (denoising, so z = y)."""

    def __init__(self, fn, train_images, patch_size):
        super().__init__()
        self.fn, self.train_images, self.patch_size = fn, train_images, patch_size

    def forward(self, z, sigma):
        return self.fn(z, self.train_images, sigma)


def test_a_network_that_is_the_lemmse_agrees_and_another_does_not(tmp_path):
    train_images, test_images = _images(8, 0), _images(6, 1)
    torch.manual_seed(0)
    models = {
        "oracle": Wrapper(lambda z, t, s: le_mmse(z, t, s, 3), train_images, 3),
        "mmse": Wrapper(lambda z, t, s: mmse(z, t, s), train_images, 3),
        "resnet": LocalResNet(3, width=8, depth=1),
    }
    table = compare(models, train_images, test_images, sigmas=(0.1, 0.2), n_measurements=3, seed=0,
                    progress=False, keep_images=True)
    assert len(table) == 2 * 2 * 3
    assert {(r["split"], r["sigma"], r["architecture"]) for r in table} == {
        (s, g, a) for s in ("train", "test") for g in (0.1, 0.2) for a in models}
    for r in table:
        assert r["n"] == 3 and r["patch_size"] == 3 and list(r["psnr_net_refs"]) == ["LE-MMSE(3)"]
        if r["architecture"] == "oracle":
            assert r["psnr_net_lemmse"] > 60  # the same estimator (float32 round-off only)
            assert r["psnr_net_x"] == pytest.approx(r["psnr_lemmse_x"], abs=1e-3)
        elif r["architecture"] == "mmse":  # a different estimator is measurably different
            assert r["psnr_net_lemmse"] < 40
        if r["split"] == "test" and r["architecture"] == "mmse":
            assert r["psnr_net_lemmse"] < 30  # on new images the MMSE returns training images
    again = compare(models, train_images, test_images, sigmas=(0.2,), n_measurements=3, seed=0,
                    progress=False, splits=("test",))
    same = [r for r in table if r["split"] == "test" and r["sigma"] == 0.2]
    assert list(again) == same  # the measurement depends on (seed, split, sigma) only
    imgs = table.images[("test", 0.2)]
    assert imgs["truth"].shape == imgs["networks"]["resnet"].shape == (3, 1, 16, 16)
    assert torch.equal(imgs["lemmse"][3], imgs["references"]["LE-MMSE(3)"])
    assert "oracle" in str(table)
    with pytest.raises(ValueError, match="n_measurements"):
        compare(models, train_images, test_images, n_measurements=7, progress=False)
    with pytest.raises(ValueError, match="splits"):
        compare(models, train_images, test_images, splits=("val",), progress=False)


def test_references_callable_or_precomputed():
    train_images, test_images = _images(8, 0), _images(6, 1)
    net = {"oracle": Wrapper(lambda z, t, s: le_mmse(z, t, s, 3), train_images, 3)}
    calls = []

    def le3(y, sigma):
        calls.append(sigma)
        return le_mmse(y, train_images, sigma, 3)

    refs = {"LE3": le3, "MMSE": lambda y, s: mmse(y, train_images, s)}
    table = compare(net, train_images, test_images, sigmas=(0.2,), n_measurements=2, progress=False,
                    keep_images=True, references=refs)
    assert calls == [0.2, 0.2]  # once per split
    for r in table:
        assert r["psnr_net_refs"]["LE3"] > 60 > r["psnr_net_refs"]["MMSE"]
        assert "psnr_net_lemmse" not in r  # the default reference was not asked for
    pre = {name: {key: im["references"][name] for key, im in table.images.items()} for name in refs}
    table2 = compare(net, train_images, test_images, sigmas=(0.2,), n_measurements=2, progress=False,
                     references=pre)
    assert [r["psnr_net_refs"] for r in table2] == [r["psnr_net_refs"] for r in table]
    with pytest.raises(KeyError, match="precomputed"):
        compare(net, train_images, test_images, sigmas=(0.1,), n_measurements=2, progress=False,
                references=pre)
    with pytest.raises(TypeError, match="references"):
        compare(net, train_images, test_images, progress=False, references={})
