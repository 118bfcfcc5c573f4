"""Bad input gets a clear ValueError/TypeError that names the argument (DESIGN.md, "Performance and
reliability"): never a crash deep inside torch, nothing silently broadcast or truncated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lemmse_lite.estimators import equivariant_mmse, le_mmse, mmse
from lemmse_lite.estimators.engine import (
    CPU_ENGINE,
    EngineConfig,
    SoftmaxState,
    default_engine,
    stream_scores,
)
from lemmse_lite.estimators.metrics import nearest_training, psnr
from lemmse_lite.operators import (
    Blur,
    Denoising,
    DenseOperator,
    Inpainting,
    center_box_mask,
    disk_kernel,
    eps_mask,
    gaussian_kernel,
    random_mask,
)

H = W = 8
NAN = float("nan")
INF = float("inf")


def images(n=3, c=1, h=H, w=W, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def call(est, y, train, sigma, patch_size=3, **kw):
    if est == "le":
        return le_mmse(y, train, sigma, patch_size, **kw)
    if est == "mmse":
        return mmse(y, train, sigma, **kw)
    return equivariant_mmse(y, train, sigma, **kw)


EST = ["mmse", "emmse", "le"]
Y = images(2, seed=1)
TRAIN = images(3, seed=2)


# ----------------------------------------------------------------------------- y


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (Y.numpy(), TypeError, r"\by\b.*torch\.Tensor"),
        ([[0.0]], TypeError, r"\by\b"),
        (Y[0], ValueError, r"\by\b.*4 dimensions"),
        (Y[None], ValueError, r"\by\b.*4 dimensions"),
        ((Y * 10).long(), TypeError, r"\by\b.*floating"),
        (Y > 0.5, TypeError, r"\by\b.*floating"),
        (Y.to(torch.complex64), TypeError, r"\by\b.*floating"),
        (torch.where(torch.arange(H * W).reshape(H, W) == 5, NAN, Y), ValueError, r"\by\b.*NaN"),
        (torch.where(torch.arange(H * W).reshape(H, W) == 5, INF, Y), ValueError, r"\by\b.*Inf"),
    ],
)
def test_bad_y(est, bad, exc, match):
    with pytest.raises(exc, match=match):
        call(est, bad, TRAIN, 0.1)


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (
            torch.where(torch.arange(H * W).reshape(H, W) == 3, NAN, TRAIN),
            ValueError,
            r"train.*NaN",
        ),
        (
            torch.where(torch.arange(H * W).reshape(H, W) == 3, -INF, TRAIN),
            ValueError,
            r"train.*Inf",
        ),
        ([TRAIN[:1], torch.full((1, 1, H, W), NAN)], ValueError, r"train.*NaN"),
        (images(3, c=2), ValueError, r"train.*shape"),  # channel mismatch
        (images(3, h=H, w=W - 1), ValueError, r"train.*shape"),  # size mismatch
        (images(3, h=H + 2, w=W + 2), ValueError, r"train.*shape"),
        ([TRAIN, images(1, c=3)], ValueError, r"train.*shape"),  # a later element mismatched
        (TRAIN[0], ValueError, r"train.*4 dimensions"),
        (TRAIN[:0], ValueError, r"train.*empty"),
        ([], ValueError, r"train.*empty"),
        ([TRAIN[:0]], ValueError, r"train.*empty"),
        (lambda: iter([]), ValueError, r"train.*empty"),
        ([1.0, 2.0], TypeError, r"train"),
        ([TRAIN[0].numpy()], TypeError, r"train"),
        (lambda: (x for x in ["a"]), TypeError, r"train"),
        ("train", TypeError, r"train"),
        (None, TypeError, r"train"),
        (3, TypeError, r"train"),
        (TRAIN.long(), TypeError, r"train.*floating"),
    ],
)
def test_bad_train(est, bad, exc, match):
    if callable(bad):  # one-shot iterators are built fresh for every case
        bad = bad()
    with pytest.raises(exc, match=match):
        call(est, Y, bad, 0.1)


@pytest.mark.parametrize("est", [mmse, equivariant_mmse])
def test_train_nan_where_the_measurement_hides_it(est):
    """MMSE / E-MMSE read a chunk's finiteness off its keys' norms only when the keys are the
    chunk itself; behind a mask the NaN pixel is not in the keys, and is still refused."""
    mask = center_box_mask(H, W, 3)
    hidden = int(torch.nonzero(mask.flatten() == 0)[0])
    bad = torch.where(torch.arange(H * W).reshape(H, W) == hidden, NAN, TRAIN)
    with pytest.raises(ValueError, match=r"train.*NaN"):
        est(Y, bad, 0.1, A=Inpainting(mask))


@pytest.mark.parametrize("est", [mmse, equivariant_mmse])
def test_train_too_large_for_float32_scores(est):
    """Finite training images whose squared norms overflow float32 get their own error, not the
    NaN/Inf one."""
    with pytest.raises(ValueError, match=r"train images 0\.\.\d+ are too large"):
        est(Y, TRAIN * 1e20, 0.1)


# ----------------------------------------------------------------------------- sigma


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize(
    "bad,exc",
    [
        (0.0, ValueError),
        (-0.1, ValueError),
        (0, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        (torch.tensor([0.1, -0.1]), ValueError),
        (torch.tensor([0.1, NAN]), ValueError),
        (torch.tensor([0.1, 0.0]), ValueError),
        (torch.tensor([0.1, 0.2, 0.3]), ValueError),  # wrong length: B = 2
        (torch.tensor([0.1]), ValueError),  # not silently broadcast
        (torch.tensor([[0.1, 0.2]]), ValueError),
        (torch.full((2, 1), 0.1), ValueError),
        (True, TypeError),
        (False, TypeError),
        ("0.1", TypeError),
        (None, TypeError),
        ([0.1, 0.2], TypeError),
        (torch.tensor([True, True]), TypeError),  # a bool tensor is not a noise level
    ],
)
def test_bad_sigma(est, bad, exc):
    with pytest.raises(exc, match="sigma"):
        call(est, Y, TRAIN, bad)


# ----------------------------------------------------------------------------- patch_size


@pytest.mark.parametrize(
    "bad,exc",
    [
        (2, ValueError),
        (4, ValueError),
        (0, ValueError),
        (-1, ValueError),
        (-3, ValueError),
        (9, ValueError),  # > min(H, W) = 8
        (11, ValueError),
        (3.0, TypeError),
        ("3", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_bad_patch_size(bad, exc):
    with pytest.raises(exc, match="patch_size"):
        le_mmse(Y, TRAIN, 0.1, bad)


def test_patch_size_larger_than_short_side():
    y = images(1, h=5, w=9)
    with pytest.raises(ValueError, match=r"patch_size.*5"):
        le_mmse(y, images(2, h=5, w=9), 0.1, 7)


# ----------------------------------------------------------------------------- chunk_size, flags


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", True])
def test_bad_chunk_size(est, bad):
    with pytest.raises(ValueError, match="chunk_size"):
        call(est, Y, TRAIN, 0.1, chunk_size=bad)


@pytest.mark.parametrize("bad", [1, 0, None, "yes", np.bool_(True)])
def test_bad_return_diagnostics(bad):
    with pytest.raises(TypeError, match="return_diagnostics"):
        le_mmse(Y, TRAIN, 0.1, 3, return_diagnostics=bad)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_top_k(bad):
    """top_k is only used with diagnostics; a non-positive or non-int value must be refused
    clearly (not an AttributeError/RuntimeError from inside the engine)."""
    with pytest.raises((ValueError, TypeError), match="top_k"):
        le_mmse(Y, TRAIN, 0.1, 3, return_diagnostics=True, top_k=bad)


@pytest.mark.parametrize("bad", [0, -1.5, 1.01, NAN, "0.9"])
def test_bad_tau(bad):
    _, diag = le_mmse(Y, TRAIN, 0.1, 3, return_diagnostics=True)
    with pytest.raises(ValueError, match="tau"):
        diag.effective_patches(bad)


def test_bad_max_memory():
    with pytest.raises((ValueError, TypeError), match="max_memory"):
        le_mmse(Y, TRAIN, 0.1, 3, max_memory="1GB")


# ----------------------------------------------------------------------------- A and B


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize("arg", ["A", "B"])
@pytest.mark.parametrize("bad", ["blur", 3, torch.eye(H * W)])
def test_operator_not_an_operator(est, arg, bad):
    with pytest.raises(TypeError, match=rf"\b{arg}\b"):
        call(est, Y, TRAIN, 0.1, **{arg: bad})


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize("fn", [lambda z: z**2, lambda z: z + 1.0, lambda z: torch.abs(z - 0.5)])
def test_nonlinear_B(est, fn):
    with pytest.raises(ValueError, match=r"\bB\b.*linear"):
        call(est, Y, TRAIN, 0.1, B=fn)


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize(
    "fn", [lambda z: z[..., : H // 2, :], lambda z: 1.0], ids=["cropped", "float"]
)
def test_B_with_wrong_output_shape(est, fn):
    """The message must say that it is B whose output has the wrong shape."""
    with pytest.raises(ValueError, match=r"\bB\b"):
        call(est, Y, TRAIN, 0.1, B=fn)


@pytest.mark.parametrize("est", EST)
def test_A_with_wrong_output_shape(est):
    with pytest.raises(ValueError, match=r"\bA\b"):
        call(est, Y, TRAIN, 0.1, A=lambda z: z[..., : H // 2, :])


@pytest.mark.parametrize("est", EST)
def test_dense_B_for_other_shape(est):
    B = DenseOperator(torch.eye(16), (1, 4, 4))
    with pytest.raises(ValueError, match=r"\bB\b"):
        call(est, Y, TRAIN, 0.1, B=B)


@pytest.mark.parametrize("est", EST)
def test_general_B_beyond_dense_limit(est):
    y = images(1, h=65, w=65)  # C·H·W = 4225 > 4096
    with pytest.raises(ValueError, match=r"4096"):
        call(est, y, images(1, h=65, w=65), 0.1, B=lambda z: 2.0 * z)


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (torch.ones(H), ValueError, "mask"),
        (torch.ones(1, 1, 1, H, W), ValueError, "mask"),
        (torch.ones(2, 1, H, W), ValueError, "mask"),
        (torch.full((H, W), NAN), ValueError, r"mask.*NaN"),
        (torch.where(torch.eye(H, dtype=torch.bool), INF, 1.0), ValueError, r"mask.*Inf"),
        (torch.ones(H, W, dtype=torch.int64), TypeError, r"mask.*floating"),
        (torch.ones(H, W).numpy(), TypeError, r"mask.*torch\.Tensor"),
        ([[1.0]], TypeError, "mask"),
    ],
)
def test_bad_mask_construction(bad, exc, match):
    with pytest.raises(exc, match=match):
        Inpainting(bad)


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize("arg", ["A", "B"])
@pytest.mark.parametrize(
    "m", [torch.ones(H - 1, W), torch.ones(H, W + 1), torch.ones(3, H, W), torch.ones(1, 2, H, W)]
)
def test_mask_not_matching_images(est, arg, m):
    with pytest.raises(ValueError, match="mask"):
        call(est, Y, TRAIN, 0.1, **{arg: Inpainting(m)})


def test_mask_not_matching_images_direct():
    with pytest.raises(ValueError, match="mask"):
        Inpainting(torch.ones(H - 1, W))(Y)


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        (torch.ones(3), ValueError, r"kernel.*2-D"),
        (torch.ones(1, 3, 3), ValueError, r"kernel.*2-D"),
        (torch.tensor([[0.5, -0.1], [0.3, 0.3]]), ValueError, r"kernel.*non-negative"),
        (torch.tensor([[0.5, NAN], [0.3, 0.3]]), ValueError, r"kernel.*NaN"),
        (torch.tensor([[0.5, INF], [0.3, 0.3]]), ValueError, r"kernel.*Inf"),
        (torch.zeros(3, 3), ValueError, r"kernel"),
        (torch.ones(3, 3, dtype=torch.int64), TypeError, r"kernel.*floating"),
        ([[1.0]], TypeError, r"kernel"),
    ],
)
def test_bad_kernel(bad, exc, match):
    with pytest.raises(exc, match=match):
        Blur(bad)


@pytest.mark.parametrize("est", EST)
@pytest.mark.parametrize("shape", [(H + 1, 3), (3, W + 1), (H + 1, W + 1)])
def test_kernel_larger_than_image(est, shape):
    k = torch.ones(*shape) / (shape[0] * shape[1])
    with pytest.raises(ValueError, match="kernel"):
        call(est, Y, TRAIN, 0.1, A=Blur(k))


def test_kernel_larger_than_image_direct():
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.ones(H + 1, H + 1))(Y)


@pytest.mark.parametrize(
    "fn,args,match",
    [
        (gaussian_kernel, (0.0,), "std"),
        (gaussian_kernel, (-1.0,), "std"),
        (gaussian_kernel, (NAN,), "std"),
        (gaussian_kernel, (1.0, 0), "size"),
        (gaussian_kernel, (1.0, 2.5), "size"),
        (disk_kernel, (-1.0,), "radius"),
        (disk_kernel, (INF,), "radius"),
        (disk_kernel, (1.0, -3), "size"),
    ],
)
def test_bad_kernel_factories(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(*args)


# ----------------------------------------------------------------------------- mask factories, eps


@pytest.mark.parametrize(
    "args,match",
    [
        ((8, 8, 9), "size"),
        ((8, 6, 7), "size"),
        ((8, 8, 0), "size"),
        ((8, 8, -2), "size"),
        ((8, 8, 2.0), "size"),
        ((0, 8, 2), r"\bh\b"),
        ((8, 8.0, 2), r"\bw\b"),
    ],
)
def test_bad_center_box_mask(args, match):
    with pytest.raises(ValueError, match=match):
        center_box_mask(*args)


@pytest.mark.parametrize("frac", [-0.1, 1.5, NAN, "0.5", None])
def test_bad_random_mask_fraction(frac):
    with pytest.raises((ValueError, TypeError), match="missing_fraction"):
        random_mask(8, 8, frac)


def test_bad_random_mask_seed():
    with pytest.raises((ValueError, TypeError), match="seed"):
        random_mask(8, 8, 0.5, seed="abc")


@pytest.mark.parametrize("eps", [0, 0.0, -1e-3, NAN, INF, "0.1", None])
@pytest.mark.parametrize(
    "make",
    [
        lambda e: Inpainting(center_box_mask(8, 8, 2)).tikhonov(e),
        lambda e: Blur(gaussian_kernel(1.0)).tikhonov(e),
        lambda e: Denoising().tikhonov(e),
        lambda e: eps_mask(center_box_mask(8, 8, 2), e),
    ],
)
def test_bad_eps(make, eps):
    with pytest.raises(ValueError, match="eps"):
        make(eps)


# ----------------------------------------------------------------------------- metrics


def test_psnr_bad_inputs():
    with pytest.raises(ValueError, match=r"x and ref.*shape"):
        psnr(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(TypeError, match="x and ref"):
        psnr([0.5], torch.rand(1))


def test_psnr_one_dimensional_input():
    """psnr documents (B, …) -> (B,): a 1-D input must get a clear error, not an IndexError."""
    with pytest.raises(ValueError, match=r"\bx\b"):
        psnr(torch.rand(3), torch.rand(3))


def test_nearest_training_bad_inputs():
    with pytest.raises(ValueError, match="train"):
        nearest_training(Y, images(2, c=2))
    with pytest.raises(ValueError, match="train.*empty"):
        nearest_training(Y, TRAIN[:0])
    with pytest.raises(TypeError, match=r"\bx\b"):
        nearest_training(Y.numpy(), TRAIN)


def test_nearest_training_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_training(Y, TRAIN, chunk_size=0)


# ----------------------------------------------------------------------------- engine configuration

@pytest.mark.parametrize("est", EST)
def test_bad_engine(est):
    with pytest.raises(TypeError, match="engine"):
        call(est, Y, TRAIN, 0.1, engine={"query_block": 8})


@pytest.mark.parametrize("field,bad", [("query_block", 0), ("key_block", -4), ("query_block", 2.0)])
def test_bad_engine_config(field, bad):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: bad})
    with pytest.raises(TypeError, match="fused"):
        EngineConfig(fused=1)


@pytest.mark.parametrize("est", EST)
def test_engine_blocks_do_not_change_results(est):
    a = call(est, Y, TRAIN, 0.1)
    b = call(est, Y, TRAIN, 0.1, engine=EngineConfig(query_block=7, key_block=13))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_stream_scores_uses_the_given_blocks():
    """Every block a consumer sees is at most query_block × key_block of the config passed."""
    seen = []

    class Recorder(SoftmaxState):
        def update(self, rows, scores, values_t, key_ids):
            seen.append(tuple(scores.shape))
            super().update(rows, scores, values_t, key_ids)

    q, k = torch.randn(50, 6), torch.randn(90, 6)
    state = Recorder(50, 1, "cpu")
    stream_scores(state, slice(0, 50), q, k, torch.randn(90, 1), engine=EngineConfig(16, 32))
    assert max(s[0] for s in seen) == 16 and max(s[1] for s in seen) == 32 and len(seen) == 4 * 3


def test_default_engine_per_device(monkeypatch):
    monkeypatch.setenv("LEMMSE_FUSED", "1")
    assert default_engine("cpu") == CPU_ENGINE and not default_engine("cpu").fused
    assert default_engine("cuda").fused and default_engine("cuda").query_block > CPU_ENGINE.query_block
    monkeypatch.setenv("LEMMSE_FUSED", "0")
    assert not default_engine("cuda").fused


# ----------------------------------------------------------------------------- masks in the estimators

@pytest.mark.parametrize("bad", [-1.0, NAN])
def test_bad_mask_values_name_the_mask(bad):
    mask = center_box_mask(H, W, 3)
    mask[0, 0] = bad
    with pytest.raises(ValueError, match="mask"):
        le_mmse(Y, TRAIN, 0.1, 3, A=Inpainting(mask))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_one_bad_value_anywhere(bad):
    from lemmse_lite.checks import all_finite

    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    assert all_finite(x) and all_finite(x[:0])
    for i in (0, 77, x.numel() - 1):
        y = x.clone()
        y.view(-1)[i] = bad
        assert not all_finite(y)
