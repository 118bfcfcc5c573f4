"""lemmse_lite.operators against their definitions (course/00_inverse_problems.md, eq-forward) and the dense float64
matrices of tests/oracles.py (built independently by explicit loops)."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
import torch

from lemmse_lite.operators import (
    Blur,
    Denoising,
    DenseOperator,
    Diagonal,
    Inpainting,
    center_box_mask,
    disk_kernel,
    eps_mask,
    gaussian_kernel,
    random_mask,
)

ASYM_3x3 = [[0.02, 0.10, 0.0], [0.08, 0.40, 0.20], [0.0, 0.04, 0.16]]


def _kernel(kind, H=8, W=8):
    """Asymmetric kernels normalised to sum 1 (no symmetry hides a convolution/correlation swap)."""
    g = torch.Generator().manual_seed(sum(map(ord, kind)))
    if kind == "asym3x3":
        k = torch.tensor(ASYM_3x3, dtype=torch.float64)
    elif kind == "asym2x3":
        k = torch.tensor([[0.1, 0.5, 0.05], [0.0, 0.25, 0.1]], dtype=torch.float64)
    elif kind == "asym4x4":
        k = torch.rand(4, 4, generator=g, dtype=torch.float64)
    elif kind == "full":
        k = torch.rand(H, W, generator=g, dtype=torch.float64) ** 3
    elif kind == "box2tap":
        k = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    elif kind == "box2x2":
        k = torch.full((2, 2), 0.25, dtype=torch.float64)
    else:
        raise AssertionError(kind)
    return k / k.sum()


def _rand(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def _apply(op, x):
    """The operator applied to a single (C, H, W) float64 image through a batch of one."""
    return op(x[None])[0]


def _operators(shape):
    """(name, package operator, dense oracle matrix) for a (C, H, W) shape."""
    C, H, W = shape
    box = center_box_mask(H, W, 3)
    rnd = random_mask(H, W, 0.3, seed=3)
    per_channel = (_rand((C, H, W), seed=5) > 0.3).double()
    out = [
        ("identity", Denoising(), O.identity_matrix(shape)),
        ("box", Inpainting(box), O.mask_matrix(box, shape)),
        ("random", Inpainting(rnd), O.mask_matrix(rnd, shape)),
        ("per-channel", Inpainting(per_channel), O.mask_matrix(per_channel, shape)),
        ("eps-mask", Inpainting(eps_mask(box, 0.1)), O.eps_mask_matrix(box.numpy(), 0.1, shape)),
    ]
    for kind in ("asym3x3", "asym2x3", "asym4x4", "full"):
        k = _kernel(kind, H, W)
        out.append((f"blur-{kind}", Blur(k), O.blur_matrix(k, shape)))
    return out


SHAPES = [(1, 8, 8), (3, 6, 8), (2, 7, 5)]


# ------------------------------------------------------------------------------------------
# Dense matrices and the FFT blur
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_operators_equal_dense_matrices(shape):
    x = _rand(shape, seed=1)
    for name, op, M in _operators(shape):
        np.testing.assert_allclose(_apply(op, x).numpy(), O.apply(M, x), atol=1e-12, err_msg=name)
        np.testing.assert_allclose(op.matrix(shape).numpy(), M, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(
            _apply(op.T, x).numpy(), O.apply(M.T, x), atol=1e-12, err_msg=name
        )


@pytest.mark.parametrize("kind", ["asym3x3", "asym2x3", "asym4x4", "full", "box2tap", "box2x2"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 10), (1, 7, 7)])
def test_fft_blur_is_true_convolution(kind, shape):
    """(A x)[n] = Σ_j k[j] x[n − j], kernel centred at (kh//2, kw//2): a delta image returns the
    kernel itself placed around the delta, not its flip (that would be a correlation)."""
    C, H, W = shape
    k = _kernel(kind, H, W)
    kh, kw = k.shape
    op = Blur(k)
    delta = torch.zeros(shape, dtype=torch.float64)
    p = (H // 2 - 1, W // 2 + 1)
    delta[:, p[0], p[1]] = 1.0
    out = _apply(op, delta).numpy()
    expected = np.zeros((H, W))
    for a in range(kh):
        for b in range(kw):
            expected[(p[0] + a - kh // 2) % H, (p[1] + b - kw // 2) % W] += float(k[a, b])
    for c in range(C):
        np.testing.assert_allclose(out[c], expected, atol=1e-12)
    x = _rand((2,) + shape, seed=2)
    M = O.blur_matrix(k, shape)
    for b in range(2):
        np.testing.assert_allclose(op(x)[b].numpy(), O.apply(M, x[b]), atol=1e-12)


def test_blur_float32_input():
    x = _rand((2, 3, 8, 8), seed=3)
    k = _kernel("asym3x3")
    out = Blur(k.float())(x.float())
    assert out.dtype == torch.float32
    M = O.blur_matrix(k, (3, 8, 8))
    np.testing.assert_allclose(out[1].double().numpy(), O.apply(M, x[1]), atol=1e-6)


# ------------------------------------------------------------------------------------------
# Adjoints and derived pre-inverses
# ------------------------------------------------------------------------------------------
def _non_symmetric_operators(shape):
    """Operators whose matrix is far from symmetric (an asymmetric blur, a dense random matrix), so
    that an adjoint returning the operator itself would fail the checks below."""
    n = int(np.prod(shape))
    M = torch.from_numpy(np.random.default_rng(3).standard_normal((n, n)))
    return [("blur-asym3x3", Blur(_kernel("asym3x3"))), ("blur-asym2x3", Blur(_kernel("asym2x3"))),
            ("dense-random", DenseOperator(M, shape))]


@pytest.mark.parametrize("shape", SHAPES)
def test_adjointness_of_operators_and_derived(shape):
    """<d x, y> = <x, dᵀ y> and dᵀ's matrix is the transpose of d's, for every operator and its
    derived pre-inverses, including non-symmetric (non-diagonal) ones."""
    x = _rand((2,) + shape, seed=4)
    y = _rand((2,) + shape, seed=5)
    ops = [(name, op) for name, op, _ in _operators(shape)] + _non_symmetric_operators(shape)
    for name, op in ops:
        for dname, d in [("op", op), ("pinv", op.pinv()), ("tikhonov", op.tikhonov(0.05))]:
            lhs = torch.sum(d(x) * y).item()
            rhs = torch.sum(x * d.T(y)).item()
            assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), (name, dname, lhs, rhs)
            torch.testing.assert_close(d.T.matrix(shape), d.matrix(shape).T, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_adjoint_check_can_fail(shape):
    """The checks above separate an operator from its adjoint: for the non-symmetric operators the
    inner-product identity with d in place of dᵀ is off by far more than the tolerance."""
    x = _rand((2,) + shape, seed=4)
    y = _rand((2,) + shape, seed=5)
    for name, op in _non_symmetric_operators(shape):
        M = op.matrix(shape)
        assert (M - M.T).abs().max() > 0.05, name
        lhs = torch.sum(op(x) * y).item()
        wrong = torch.sum(x * op(y)).item()
        assert abs(lhs - wrong) > 1e-4 * max(1.0, abs(lhs)), name


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 10)])
def test_tikhonov_equals_dense_formula(shape):
    x = _rand(shape, seed=6)
    for eps in (0.01, 0.3):
        for name, op, M in _operators(shape):
            ref = O.apply(O.tikhonov_matrix(M, eps), x)
            np.testing.assert_allclose(
                _apply(op.tikhonov(eps), x).numpy(), ref, atol=1e-10, err_msg=name
            )


@pytest.mark.parametrize("kind", ["box2tap", "box2x2", "asym3x3", "full"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (2, 6, 10)])
def test_blur_pinv_is_exact_pseudo_inverse(kind, shape):
    """A A⁺ A = A and A⁺ A A⁺ = A⁺, also with exact zeros in the spectrum (2-tap box, even size)."""
    _C, H, W = shape
    k = _kernel(kind, H, W)
    op = Blur(k)
    A = op.matrix(shape).numpy()
    Ap = op.pinv().matrix(shape).numpy()
    np.testing.assert_allclose(A @ Ap @ A, A, atol=1e-10)
    np.testing.assert_allclose(Ap @ A @ Ap, Ap, atol=1e-8 * max(1.0, np.abs(Ap).max()))
    ref = O.pinv_matrix(O.blur_matrix(k, shape))
    np.testing.assert_allclose(Ap, ref, atol=1e-8 * max(1.0, np.abs(ref).max()))
    if kind in ("box2tap", "box2x2"):
        assert np.linalg.matrix_rank(A) < A.shape[0]  # the spectral zeros are really there


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 6, 10)])
def test_mask_pinv(shape):
    _C, H, W = shape
    for name, op, M in _operators(shape)[:5]:
        P = op.pinv().matrix(shape).numpy()
        np.testing.assert_allclose(M @ P @ M, M, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(P, O.pinv_matrix(M), atol=1e-12, err_msg=name)
    box = center_box_mask(H, W, 3)
    np.testing.assert_array_equal(
        Inpainting(box).pinv().matrix(shape).numpy(), O.mask_matrix(box, shape)
    )


# ------------------------------------------------------------------------------------------
# Masks and kernels
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w,size", [(8, 8, 3), (8, 10, 4), (9, 7, 2), (16, 16, 5), (6, 6, 1)])
def test_center_box_mask(h, w, size):
    m = center_box_mask(h, w, size)
    assert m.shape == (h, w) and m.is_floating_point()
    np.testing.assert_array_equal(m.numpy(), O.center_box_mask_oracle(h, w, size))
    i0, j0 = h // 2 - size // 2, w // 2 - size // 2
    assert m[i0, j0] == 0 and m[i0 - 1, j0] == 1 and m[i0, j0 - 1] == 1
    assert m[i0 + size - 1, j0 + size - 1] == 0 and m[i0 + size, j0] == 1


@pytest.mark.parametrize(
    "h,w,f", [(8, 8, 0.3), (10, 12, 0.5), (7, 9, 0.1), (8, 8, 0.0), (5, 5, 1.0)]
)
def test_random_mask_count_and_seeds(h, w, f):
    m = random_mask(h, w, f, seed=11)
    assert m.shape == (h, w) and m.is_floating_point()
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    assert int((m == 0).sum()) == round(f * h * w)
    assert torch.equal(m, random_mask(h, w, f, seed=11))
    if 0 < round(f * h * w) < h * w:
        assert not torch.equal(m, random_mask(h, w, f, seed=12))


def test_random_mask_uses_randperm_under_seed():
    """One convention (`course/00_inverse_problems.md`): the missing flat indices i·W + j are the
    first round(f·H·W) entries of torch.randperm(H·W) drawn from a CPU torch.Generator seeded with
    ``seed``; the global generator plays no part."""
    h, w, f, seed = 8, 10, 0.35, 7
    k = round(f * h * w)
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    expected = torch.ones(h * w)
    expected[perm[:k]] = 0.0
    state = torch.random.get_rng_state()
    torch.manual_seed(seed + 1)  # a different global state must not matter
    m = random_mask(h, w, f, seed=seed)
    torch.random.set_rng_state(state)
    assert torch.equal(m, expected.reshape(h, w))
    assert not torch.equal(perm[:k].sort().values, torch.randperm(h * w, generator=torch.Generator().manual_seed(seed + 1))[:k].sort().values)


def test_eps_mask():
    m = random_mask(8, 8, 0.4, seed=0)
    e = eps_mask(m, 0.05)
    np.testing.assert_allclose(e.numpy(), O.eps_mask_values(m, 0.05))
    assert torch.equal(m, random_mask(8, 8, 0.4, seed=0))  # input untouched


@pytest.mark.parametrize("mask_shape", [(8, 8), (1, 8, 8), (3, 8, 8), (1, 1, 8, 8), (1, 3, 8, 8)])
def test_inpainting_mask_shapes(mask_shape):
    shape = (3, 8, 8)
    mask = (_rand(mask_shape, seed=8) > 0.4).double()
    np.testing.assert_array_equal(
        Inpainting(mask).matrix(shape).numpy(), O.mask_matrix(mask, shape)
    )


def test_kernel_factories_are_normalised():
    for k in (gaussian_kernel(1.0), gaussian_kernel(0.7, 5), disk_kernel(2.0), disk_kernel(1.5, 7)):
        assert k.ndim == 2 and k.is_floating_point()
        assert torch.all(k >= 0)
        assert abs(float(k.sum()) - 1.0) < 1e-6
    assert gaussian_kernel(0.7, 5).shape == (5, 5)
    assert disk_kernel(1.5, 7).shape == (7, 7)


# ------------------------------------------------------------------------------------------
# Bad input: a clear error that names the argument
# ------------------------------------------------------------------------------------------
def test_bad_masks():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="mask"):
        Inpainting(torch.ones(6, 6))(x)  # wrong spatial size
    with pytest.raises(ValueError, match="mask"):
        Inpainting(torch.ones(2, 8, 8))(x)  # 2 channels for a 3-channel image
    with pytest.raises(ValueError, match="mask"):
        Inpainting(torch.ones(8))
    with pytest.raises(ValueError, match="mask"):
        Inpainting(torch.ones(2, 1, 8, 8))  # a batch of masks is not one mask
    with pytest.raises(TypeError, match="mask"):
        Inpainting(torch.ones(8, 8, dtype=torch.int64))
    bad = torch.ones(8, 8)
    bad[2, 3] = -0.5
    with pytest.raises(ValueError, match="mask must have non-negative"):
        Inpainting(bad)
    with pytest.raises(ValueError, match="mask must have non-negative"):
        eps_mask(bad, 0.1)
    with pytest.raises(ValueError, match=r"\bb\b.*non-negative"):
        Diagonal(bad)
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="mask contains NaN"):
        Inpainting(bad)
    with pytest.raises(ValueError, match="mask contains NaN"):
        eps_mask(bad, 0.1)


def test_non_binary_masks_stay_valid():
    """A non-negative non-binary mask (the ε-mask, a soft weighting) is a valid diagonal operator."""
    soft = torch.full((8, 8), 0.5)
    soft[0, 0] = 0.0
    x = torch.rand(1, 1, 8, 8)
    torch.testing.assert_close(Inpainting(soft)(x), x * soft)
    e = eps_mask(center_box_mask(8, 8, 3), 0.1)
    torch.testing.assert_close(Inpainting(e)(x), x * e)
    assert set(torch.unique(e).tolist()) == {0.1, 1.0} or torch.allclose(torch.unique(e), torch.tensor([0.1, 1.0]))


def test_bad_kernels():
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.tensor([[0.5, -0.1], [0.3, 0.3]]))
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.tensor([[0.5, float("nan")], [0.3, 0.3]]))
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.tensor([[0.5, float("inf")], [0.3, 0.3]]))
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.ones(9, 9) / 81)(x)  # larger than the image
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.ones(3, 9) / 27)(x)  # wider than the image
    with pytest.raises(TypeError, match="kernel"):
        Blur(torch.ones(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.ones(3))


@pytest.mark.parametrize(
    "make",
    [
        Denoising,
        lambda: Inpainting(center_box_mask(8, 8, 2)),
        lambda: Blur(gaussian_kernel(1.0, 3)),
    ],
)
def test_integer_images_are_rejected(make):
    with pytest.raises(TypeError):
        make()(torch.ones(1, 1, 8, 8, dtype=torch.int32))
