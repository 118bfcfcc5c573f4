"""Receptive fields (measured) and shift equivariance of the three network families (course/06_training.md, eq-receptive-field)."""

import pytest
import torch

from lemmse_lite.networks.models import (
    MODELS,
    LocalUNet,
    make_model,
    receptive_field,
    receptive_field_all_parities,
)

PATCH_SIZES = (3, 5, 7, 9)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is much faster


def _model(family, P, channels=1):
    torch.manual_seed(0)
    return make_model(family, patch_size=P, channels=channels, width=6, depth=1)


@pytest.mark.parametrize("family", sorted(MODELS))
@pytest.mark.parametrize("P", PATCH_SIZES)
def test_receptive_field_is_P_at_every_parity(family, P):
    model = _model(family, P)
    S = 2 * P + 2  # even (U-Net) and large enough that the circular wrap hides nothing
    fields = receptive_field_all_parities(model, (1, S, S), stride=2)
    assert len(fields) == 4
    for parity, rf in fields.items():
        assert rf.within(P), (parity, rf.size)  # never outside the centred window
    assert max(rf.size for rf in fields.values()) == (P, P)
    if family == "unet":
        # symmetric radius r at odd coordinates, r - 1 at even ones (see LocalUNet docstring)
        r = P // 2
        for (a, b), rf in fields.items():
            assert (rf.top, rf.bottom) == (r - 1 + a,) * 2
            assert (rf.left, rf.right) == (r - 1 + b,) * 2
        assert fields[(1, 1)].is_full_window(P) == (P >= 5)
        if P == 3:  # centre + the 4 diagonal neighbours
            assert int(fields[(1, 1)].support.sum()) == 5
    else:
        assert all(rf.is_full_window(P) for rf in fields.values())


def test_receptive_field_rgb_and_offcentre_position():
    model = _model("resnet", 5, channels=3)
    rf = receptive_field(model, (3, 12, 12), position=(0, 11))  # wraps around the corner
    assert rf.is_full_window(5) and rf.position == (0, 11)


def _shift_error(model, shift, channels=1, size=16):
    model = model.double().eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.rand(2, channels, size, size, generator=gen, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.3], dtype=torch.float64)
    with torch.no_grad():
        a = model(torch.roll(z, shift, dims=(2, 3)), sigma)
        b = torch.roll(model(z, sigma), shift, dims=(2, 3))
    return float((a - b).abs().max())


ALL_SHIFTS = [(1, 0), (0, 1), (3, 5), (7, 2), (15, 15)]
EVEN_SHIFTS = [(2, 0), (0, 2), (4, 6), (14, 8)]


@pytest.mark.parametrize("family", ["resnet", "patchmlp"])
def test_equivariant_to_every_shift(family):
    model = _model(family, 5, channels=3)
    assert model.shift_stride == 1
    for g in ALL_SHIFTS:
        assert _shift_error(model, g, channels=3) <= 1e-10, g


@pytest.mark.parametrize("P", [3, 5, 7])
def test_unet_equivariant_to_even_shifts_only(P):
    model = _model("unet", P)
    assert model.shift_stride == 2  # the claim: multiples of 2 only
    for g in EVEN_SHIFTS:
        assert _shift_error(model, g) <= 1e-10, g
    # not claimed for odd shifts -- and indeed not true (so the test above is not vacuous)
    for g in [(1, 0), (0, 1), (1, 1), (3, 2)]:
        assert _shift_error(model, g) > 1e-4, g


def test_sigma_float_and_tensor_agree_and_shapes():
    model = _model("resnet", 3)
    z = torch.rand(3, 1, 8, 8)
    out = model(z, 0.2)
    assert out.shape == z.shape
    assert torch.allclose(out, model(z, torch.full((3,), 0.2)))
    for block in model.blocks:  # FiLM starts at the identity; perturb it so sigma matters
        torch.nn.init.normal_(block.film.weight, std=0.1)
    assert not torch.allclose(model(z, 0.2), model(z, 0.05))  # sigma is used
    with pytest.raises(ValueError, match="sigma"):
        model(z, torch.ones(2))
    with pytest.raises(ValueError, match="z must be"):
        model(torch.rand(3, 3, 8, 8), 0.1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="patch_size"):
        make_model("resnet", patch_size=4)
    with pytest.raises(ValueError, match="patch_size"):
        LocalUNet(patch_size=1)
    with pytest.raises(ValueError, match="channels"):
        make_model("patchmlp", channels=2)
    with pytest.raises(ValueError, match="family"):
        make_model("transformer")
    with pytest.raises(ValueError, match="even"):
        _model("unet", 3)(torch.rand(1, 1, 9, 9), 0.1)
    with pytest.raises(ValueError, match="smaller"):
        _model("resnet", 7)(torch.rand(1, 1, 5, 5), 0.1)


@pytest.mark.parametrize("sigma", [0.0, -0.1, float("nan"), float("inf")])
def test_sigma_is_validated_not_clamped(sigma):
    """The networks accept exactly the noise levels the estimators accept (checks.check_sigma)."""
    model = _model("resnet", 3)
    z = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="sigma must be positive and finite"):
        model(z, sigma)
    with pytest.raises(ValueError, match="sigma must be positive and finite"):
        model(z, torch.tensor([0.1, sigma]))
    with pytest.raises(TypeError, match="sigma"):
        model(z, True)


def test_width_depth_and_patch_size_types():
    with pytest.raises(ValueError, match="width must be a positive integer"):
        make_model("resnet", patch_size=3, width=0)
    with pytest.raises(ValueError, match="depth must be an integer >= 0"):
        make_model("resnet", patch_size=3, depth=-1)
    with pytest.raises(TypeError, match="patch_size must be an int"):
        make_model("unet", patch_size=5.0)
