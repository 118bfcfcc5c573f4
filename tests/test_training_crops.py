"""Training on crops (training.TrainConfig.crop) and bfloat16 autocast on the CPU.

A local network of receptive field P gives, on the inner (c - P + 1)^2 pixels of a c x c crop, exactly
the outputs it gives on the whole image: the crop loss is an unbiased estimate of eq-training-loss."""

import pytest
import torch

from lemmse_lite.networks import models, training

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", ["resnet", "unet", "patchmlp"])
def test_inner_crop_pixels_equal_the_whole_image_outputs(family):
    net = models.make_model(family, patch_size=5, width=8, depth=1).double()
    s = getattr(net, "shift_stride", 1)
    z = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    sigma = torch.full((3,), 0.1, dtype=torch.float64)
    zc, _ = training.random_crops(z, z, 12, torch.Generator().manual_seed(4), s)
    with torch.no_grad():
        whole, cropped = net(z, sigma), net(zc, sigma)
    _, expected = training.random_crops(z, whole, 12, torch.Generator().manual_seed(4), s)
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert (cropped[inner] - expected[inner]).abs().max() < 1e-12
    assert (cropped - expected).abs().max() > 1e-6  # the border pixels wrap inside the crop: excluded


def test_crops_wrap_and_respect_the_stride():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(200, 1, 1, 1)
    _, c = training.random_crops(x, x, 5, torch.Generator().manual_seed(0), stride=2)
    first = c[:, 0, 0, 0].long()
    assert (first // 8 % 2 == 0).all() and (first % 8 % 2 == 0).all()  # offsets are even
    assert len(set(first.tolist())) == 16  # all 16 even offsets are drawn
    oy, ox = first // 8, first % 8
    rows = (oy[:, None] + torch.arange(5)) % 8
    cols = (ox[:, None] + torch.arange(5)) % 8
    assert torch.equal(c[:, 0].long(), rows[:, :, None] * 8 + cols[:, None, :])  # wrapped windows


def _train(**kw):
    torch.manual_seed(0)
    net = models.LocalResNet(patch_size=3, width=8, depth=1)
    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.interpolate(torch.rand(16, 1, 4, 4, generator=gen), size=(16, 16), mode="bilinear")
    return training.train(net, images, sigma_range=(0.1, 0.3), steps=120, batch_size=8, lr=3e-3, progress=False, log_every=40,
                          device="cpu", **kw)


@pytest.mark.parametrize("kw", [{"crop": 8}, {"amp": True}])
def test_crop_and_bf16_training_learn(kw):
    hist = _train(**kw)
    assert hist.loss[-1] < 0.5 * hist.loss[0], hist.loss
    assert training.TrainConfig(**kw).hyper().get("crop") == kw.get("crop")


def test_crop_must_fit_the_network_and_its_grid():
    images = torch.rand(4, 1, 16, 16)
    with pytest.raises(ValueError, match=r"crop must be an integer in .* = \[7, 16\], got 6"):
        training.train(models.LocalResNet(patch_size=5, width=4, depth=0), images, steps=1, crop=6, progress=False)
    with pytest.raises(ValueError, match="multiple of 2"):
        training.train(models.make_model("unet", patch_size=5, width=4, depth=0), images, steps=1, crop=9,
                       progress=False)
