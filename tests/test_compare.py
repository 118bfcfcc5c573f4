"""compare(): networks vs LE-MMSE tables, saving, figures (THEORY §7)."""

import csv
import json
import math

import pytest
import torch

from lemmse_lite.compare import compare, format_table, save_comparison_figure, save_results
from lemmse_lite.models import LocalResNet


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _images(n, seed, size=16):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, size // 4, size // 4, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")


ROWS = [
    {
        "architecture": "resnet",
        "patch_size": 5,
        "split": "train",
        "sigma": 0.1,
        "n": 4,
        "psnr_net_lemmse": 30.123,
        "psnr_net_x": 25.5,
        "psnr_lemmse_x": 26.25,
    },
    {
        "architecture": "unet",
        "patch_size": 5,
        "split": "test",
        "sigma": 0.2,
        "n": 4,
        "psnr_net_lemmse": 28.0,
        "psnr_net_x": 22.0,
        "psnr_lemmse_x": 21.0,
    },
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


class OracleNet(torch.nn.Module):
    """A 'network' that is the LE-MMSE itself (denoising): PSNR(net, LE-MMSE) must be huge."""

    def __init__(self, train_images, patch_size):
        super().__init__()
        self.train_images, self.patch_size = train_images, patch_size

    def forward(self, z, sigma):
        from lemmse_lite.estimators import le_mmse

        return le_mmse(z, self.train_images, sigma, self.patch_size)


def test_compare_on_tiny_data(tmp_path):
    pytest.importorskip("lemmse_lite.estimators")
    train_images, test_images = _images(8, 0), _images(6, 1)
    torch.manual_seed(0)
    models = {"resnet": LocalResNet(3, width=8, depth=1), "oracle": OracleNet(train_images, 3)}
    table = compare(
        models,
        train_images,
        test_images,
        None,
        None,
        sigmas=(0.1, 0.2),
        patch_size=3,
        n_measurements=3,
        seed=0,
        progress=False,
        keep_images=True,
    )
    assert len(table) == 2 * 2 * 2
    assert {(r["split"], r["sigma"], r["architecture"]) for r in table} == {
        (s, g, a) for s in ("train", "test") for g in (0.1, 0.2) for a in ("resnet", "oracle")
    }
    for r in table:
        assert r["n"] == 3 and r["patch_size"] == 3
        assert all(math.isfinite(r[k]) for k in ("psnr_net_x", "psnr_lemmse_x"))
        if r["architecture"] == "oracle":
            assert r["psnr_net_lemmse"] > 80  # may be inf (identical outputs)
            assert r["psnr_net_x"] == pytest.approx(r["psnr_lemmse_x"], abs=1e-3)
        else:
            assert 5 < r["psnr_net_lemmse"] < 80
    again = compare(
        models,
        train_images,
        test_images,
        sigmas=(0.1, 0.2),
        patch_size=3,
        n_measurements=3,
        seed=0,
        progress=False,
    )
    assert list(again) == list(table)  # seeded
    imgs = table.images[("test", 0.2)]
    assert imgs["truth"].shape == imgs["networks"]["resnet"].shape == (3, 1, 16, 16)
    assert "oracle" in str(table)
    with pytest.raises(ValueError, match="n_measurements"):
        compare(models, train_images, test_images, n_measurements=7, progress=False)
