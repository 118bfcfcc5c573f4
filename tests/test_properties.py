"""Property tests of the three estimators (course/01–05 and 08: eq-mmse, eq-emmse, eq-lemmse, eq-le-general, eq-n-eff) on tiny images.

Each property is checked against a brute-force computation or an exact invariance, never against
the package itself: weights sum to one, σ → 0 limits, shift equivariance, locality, streaming =
one shot, batching, device/dtype, diagnostics and metrics. Inputs are float32 unless stated.
"""

from __future__ import annotations

import pytest
import torch

from lemmse_lite.estimators import equivariant_mmse, le_mmse, mmse
from lemmse_lite.estimators.metrics import nearest_training, psnr
from lemmse_lite.operators import Blur, Denoising, Inpainting, center_box_mask, eps_mask

H = W = 8
# Asymmetric 3×3 kernel (sum 1, centre weight 0.6 so |K̂| ≥ 0.2: the blur is invertible).
ASYM = [[0.00, 0.10, 0.00], [0.05, 0.60, 0.15], [0.00, 0.00, 0.10]]


def rand_images(n, c=1, h=H, w=W, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, w, generator=g, dtype=torch.float64).to(dtype)


def noise(shape, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def kernel():
    return torch.tensor(ASYM, dtype=torch.float32)


def mask(h=H, w=W, size=2):
    """A 2×2 centre hole: with P = 3 every patch still sees an observed pixel. Holes with a
    patch entirely inside (rank-0 stratum) are tested separately below."""
    return center_box_mask(h, w, size)


def make_A(name, h=H, w=W):
    if name == "denoise":
        return Denoising()
    if name == "inpaint":
        return Inpainting(mask(h, w))
    if name == "blur":
        return Blur(kernel())
    raise AssertionError(name)


def make_B(A_name, B_name, A):
    """Pre-inverses (course/00_inverse_problems.md, eq-pre-inverse) for each problem."""
    if B_name is None:
        return None
    if B_name == "adjoint":
        return A.T
    if B_name == "tikhonov":
        return A.tikhonov(0.05)
    if B_name == "epsmask":
        return Inpainting(eps_mask(mask(), 0.1))
    raise AssertionError(B_name)


PROBLEMS = [
    ("denoise", None),
    ("inpaint", None),
    ("inpaint", "adjoint"),  # the mask itself
    ("inpaint", "epsmask"),
    ("blur", None),
    ("blur", "adjoint"),
    ("blur", "tikhonov"),
]

ESTIMATORS = {
    "mmse": lambda y, t, s, A=None, B=None, **kw: mmse(y, t, s, A=A, B=B, **kw),
    "emmse": lambda y, t, s, A=None, B=None, **kw: equivariant_mmse(y, t, s, A=A, B=B, **kw),
    "le": lambda y, t, s, A=None, B=None, **kw: le_mmse(y, t, s, 3, A=A, B=B, **kw),
}


def roll(x, g):
    """(T_g x)[n] = x[n − g], circular (course/00_inverse_problems.md)."""
    return torch.roll(x, shifts=(g[0], g[1]), dims=(-2, -1))


def far_from(n, P, h=H, w=W):
    """(h, w) bool: pixels whose circular offset from n = (i, j) exceeds P//2 in some axis."""
    i = torch.arange(h)[:, None]
    j = torch.arange(w)[None, :]
    di = torch.minimum((i - n[0]) % h, (n[0] - i) % h)
    dj = torch.minimum((j - n[1]) % w, (n[1] - j) % w)
    return (di > P // 2) | (dj > P // 2)


# ----------------------------------------------------------------------------- weights sum to one


@pytest.mark.parametrize("est", list(ESTIMATORS))
@pytest.mark.parametrize("A_name,B_name", PROBLEMS)
def test_constant_training_set_gives_constant(est, A_name, B_name):
    """All training images equal the constant c → every weight multiplies c → output is c exactly
    iff the weights sum to one (whatever they are)."""
    A = make_A(A_name)
    B = make_B(A_name, B_name, A)
    c = 0.37
    train = torch.full((4, 2, H, W), c)
    y = A(rand_images(2, c=2, seed=1)) + 0.1 * noise((2, 2, H, W), 2)
    out = ESTIMATORS[est](y, train, 0.1, A=A, B=B)
    assert out.shape == y.shape
    torch.testing.assert_close(out, torch.full_like(out, c), atol=1e-5, rtol=0)


@pytest.mark.parametrize("est", list(ESTIMATORS))
@pytest.mark.parametrize("B_name", [None, "adjoint", "epsmask"])
def test_big_hole_constant_training_set(est, B_name):
    """A 4×4 hole with P = 3: the patches at the 2×2 interior pixels are entirely missing, so with
    B = mask their query is 0 and the kept stratum has rank 0 (every pair equally likely). The
    output there must still be a weighted average of training pixels (here the constant c)."""
    big = center_box_mask(H, W, 4)
    A = Inpainting(big)
    B = {None: None, "adjoint": A, "epsmask": Inpainting(eps_mask(big, 0.1))}[B_name]
    c = 0.37
    train = torch.full((4, 1, H, W), c)
    y = A(rand_images(2, seed=1)) + 0.1 * noise((2, 1, H, W), 2)
    out = ESTIMATORS[est](y, train, 0.1, A=A, B=B)
    torch.testing.assert_close(out, torch.full_like(out, c), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "A_name,B_name", [("denoise", None), ("inpaint", "adjoint"), ("blur", "tikhonov")]
)
def test_le_mmse_all_weights_sum_to_one(A_name, B_name):
    """With top_k ≥ number of (i, m) pairs the diagnostics hold every weight: they sum to 1."""
    A = make_A(A_name)
    B = make_B(A_name, B_name, A)
    train = rand_images(2, seed=3)
    y = A(rand_images(1, seed=4)) + 0.2 * noise((1, 1, H, W), 5)
    _, diag = le_mmse(y, train, 0.3, 3, A=A, B=B, return_diagnostics=True, top_k=2 * H * W)
    total = diag.top_weights.double().sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)
    # the weights are not degenerate: several pairs carry mass
    assert (diag.top_weights[..., 1] > 1e-3).any()


# ----------------------------------------------------------------------------- σ → 0 limits


@pytest.mark.parametrize("A_name", ["denoise", "inpaint", "blur"])
def test_mmse_small_sigma_returns_nearest_in_measurement_space(A_name):
    A = make_A(A_name)
    dt = torch.float64
    train = rand_images(6, c=1, seed=10, dtype=dt)
    y = A(rand_images(3, seed=11, dtype=dt)) + 0.05 * noise((3, 1, H, W), 12, dt)
    sigma = 1e-3
    out = mmse(y, train, sigma, A=A)
    for b in range(len(y)):
        d2 = torch.stack([((y[b] - A(train[i : i + 1])[0]) ** 2).sum() for i in range(len(train))])
        s = d2.sort().values
        assert (s[1] - s[0]) / (2 * sigma**2) > 50, "test setup: nearest image not separated"
        torch.testing.assert_close(out[b], train[d2.argmin()], atol=1e-8, rtol=0)


@pytest.mark.parametrize("A_name", ["denoise", "inpaint", "blur"])
def test_emmse_small_sigma_returns_best_shift(A_name):
    A = make_A(A_name)
    dt = torch.float64
    train = rand_images(4, seed=20, dtype=dt)
    # a shifted measurement of a training image plus noise, and an unrelated measurement
    y0 = roll(A(train[2:3]), (3, 5)) + 0.02 * noise((1, 1, H, W), 21, dt)
    y1 = A(rand_images(1, seed=22, dtype=dt)) + 0.05 * noise((1, 1, H, W), 23, dt)
    y = torch.cat([y0, y1])
    sigma = 1e-3
    out = equivariant_mmse(y, train, sigma, A=A)
    Ax = A(train)
    for b in range(len(y)):
        best = []
        for gi in range(H):
            for gj in range(W):
                back = roll(y[b], (-gi, -gj))  # T_g⁻¹ y
                for i in range(len(train)):
                    best.append((((back - Ax[i]) ** 2).sum().item(), i, (gi, gj)))
        best.sort()
        assert (best[1][0] - best[0][0]) / (2 * sigma**2) > 50, (
            "test setup: best pair not separated"
        )
        _, i, g = best[0]
        torch.testing.assert_close(out[b], roll(train[i], g), atol=1e-8, rtol=0)
    if A_name != "inpaint":  # the hole moves with the shift; for the others (2, (3, 5)) is exact
        torch.testing.assert_close(out[0], roll(train[2], (3, 5)), atol=1e-8, rtol=0)


# ----------------------------------------------------------------------------- shift equivariance

SHIFTS = [(1, 0), (0, 3), (2, 5)]


@pytest.mark.parametrize(
    "A_name,B_name",
    [
        ("denoise", None),
        ("inpaint", None),
        ("blur", None),
        ("blur", "tikhonov"),
        ("blur", "adjoint"),
    ],
)
def test_le_mmse_shift_equivariant(A_name, B_name):
    """course/04_locality.md, eq-lemmse: keys Π_m A x_i do not depend on y, query at n is Π_n y, so
    le(T_g y)[n] = le(y)[n − g] whatever A is (and for any translation-equivariant B)."""
    A = make_A(A_name)
    B = make_B(A_name, B_name, A)
    train = rand_images(3, c=2, seed=30)
    y = A(rand_images(1, c=2, seed=31)) + 0.1 * noise((1, 2, H, W), 32)
    out = le_mmse(y, train, 0.15, 3, A=A, B=B)
    for g in SHIFTS:
        out_g = le_mmse(roll(y, g), train, 0.15, 3, A=A, B=B)
        torch.testing.assert_close(out_g, roll(out, g), atol=1e-5, rtol=0)


@pytest.mark.parametrize("A_name", ["denoise", "inpaint", "blur"])
def test_emmse_shift_equivariant(A_name):
    A = make_A(A_name)
    train = rand_images(3, seed=40)
    y = A(rand_images(1, seed=41)) + 0.1 * noise((1, 1, H, W), 42)
    out = equivariant_mmse(y, train, 0.5, A=A)
    assert out.std() > 1e-3  # not a trivial (constant) output
    for g in SHIFTS:
        out_g = equivariant_mmse(roll(y, g), train, 0.5, A=A)
        torch.testing.assert_close(out_g, roll(out, g), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- locality


@pytest.mark.parametrize("B_name", [None, "adjoint", "epsmask"])
@pytest.mark.parametrize("n", [(0, 0), (4, 6)])
def test_le_mmse_local_in_y_for_identity_and_diagonal_B(B_name, n):
    P = 3
    A = make_A("inpaint")
    B = make_B("inpaint", B_name, A)
    train = rand_images(3, c=2, seed=50)
    y = A(rand_images(1, c=2, seed=51)) + 0.1 * noise((1, 2, H, W), 52)
    far = far_from(n, P)
    y2 = torch.where(far, rand_images(1, c=2, seed=53), y)
    out1 = le_mmse(y, train, 0.2, P, A=A, B=B)
    out2 = le_mmse(y2, train, 0.2, P, A=A, B=B)
    torch.testing.assert_close(out2[..., n[0], n[1]], out1[..., n[0], n[1]], atol=1e-6, rtol=0)
    assert (out2 - out1).abs().max() > 1e-3  # the perturbation does change far outputs


@pytest.mark.parametrize("B_name", ["tikhonov", "adjoint"])
def test_le_mmse_fourier_B_depends_only_on_patch_of_By(B_name):
    """For an equivariant B, output n depends on y only through Π_n B y: two measurements whose
    B y agree on the patch around n (and differ elsewhere) give the same output at n (float64)."""
    P, n = 3, (2, 6)
    dt = torch.float64
    A = make_A("blur")
    B = make_B("blur", B_name, A)
    train = rand_images(3, seed=60, dtype=dt)
    y1 = A(rand_images(1, seed=61, dtype=dt)) + 0.05 * noise((1, 1, H, W), 62, dt)
    z1 = B(y1)
    d = torch.where(far_from(n, P), 0.3 * noise((1, 1, H, W), 63, dt), torch.zeros_like(z1))
    # y2 = B⁻¹(z1 + d), B's multiplier is invertible for this kernel
    m = B.spectrum(H, W)
    assert m.abs().min() > 1e-3
    y2 = torch.fft.ifft2(torch.fft.fft2(z1 + d) / m).real
    torch.testing.assert_close(B(y2), z1 + d, atol=1e-12, rtol=0)
    out1 = le_mmse(y1, train, 0.1, P, A=A, B=B)
    out2 = le_mmse(y2, train, 0.1, P, A=A, B=B)
    torch.testing.assert_close(out2[..., n[0], n[1]], out1[..., n[0], n[1]], atol=1e-6, rtol=0)
    assert (out2 - out1).abs().max() > 1e-3


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("est", list(ESTIMATORS))
@pytest.mark.parametrize(
    "A_name,B_name", [("denoise", None), ("inpaint", "adjoint"), ("blur", "tikhonov")]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_streaming_equals_one_shot(est, A_name, B_name, dtype):
    """Chunking only changes the order of the online log-sum-exp merges and the shapes of the
    score matmuls. float32: ≤ 2e-6 for LE-MMSE (1.01e-6 measured on one CPU for inpainting +
    adjoint, chunk 3, before and after the float64 whitened scores: matmul kernels differ between
    CPUs, so 1e-6 had no headroom); whole-image scores (MMSE/E-MMSE) are sums over
    C·H·W pixels with a cancelling −‖q‖²/2σ² term, and differ by up to ~2e-6 between key-block
    shapes (measured, E-MMSE + blur), so 5e-6 there. float64: 1e-12 for all."""
    tol = 1e-12 if dtype == torch.float64 else (2e-6 if est == "le" else 5e-6)
    A = make_A(A_name)
    B = make_B(A_name, B_name, A)
    train = rand_images(7, seed=70, dtype=dtype)
    y = A(rand_images(2, seed=71, dtype=dtype)) + 0.1 * noise((2, 1, H, W), 72, dtype)
    f = ESTIMATORS[est]
    ref = f(y, train, 0.1, A=A, B=B, chunk_size=None)
    variants = {
        "chunk1": f(y, train, 0.1, A=A, B=B, chunk_size=1),
        "chunk3": f(y, train, 0.1, A=A, B=B, chunk_size=3),
        "list": f(y, [train[:2], train[2:3], train[3:]], 0.1, A=A, B=B),
        "list+chunk2": f(y, [train[:5], train[5:]], 0.1, A=A, B=B, chunk_size=2),
        "generator": f(y, (train[i : i + 2] for i in range(0, 7, 2)), 0.1, A=A, B=B),
    }
    for name, out in variants.items():
        assert out.dtype == dtype
        torch.testing.assert_close(
            out, ref, atol=tol, rtol=0, msg=lambda m, name=name: f"{name}: {m}"
        )


# ----------------------------------------------------------------------------- batching and sigma


@pytest.mark.parametrize("est", list(ESTIMATORS))
@pytest.mark.parametrize(
    "A_name,B_name", [("denoise", None), ("inpaint", "adjoint"), ("blur", "tikhonov")]
)
def test_batch_equals_one_at_a_time_and_sigma_tensor(est, A_name, B_name):
    A = make_A(A_name)
    B = make_B(A_name, B_name, A)
    train = rand_images(4, c=2, seed=80)
    y = A(rand_images(3, c=2, seed=81)) + 0.1 * noise((3, 2, H, W), 82)
    f = ESTIMATORS[est]
    # whole-image distances are ~C·H·W times larger than patch distances: scale σ so it matters
    sig = [0.05, 0.1, 0.3] if est == "le" else [0.5, 1.0, 3.0]
    batch_float = f(y, train, sig[1], A=A, B=B)
    batch_tensor = f(y, train, torch.tensor(sig), A=A, B=B)
    for b in range(3):
        one = f(y[b : b + 1], train, sig[1], A=A, B=B)
        torch.testing.assert_close(batch_float[b : b + 1], one, atol=1e-5, rtol=0)
        one_s = f(y[b : b + 1], train, sig[b], A=A, B=B)
        torch.testing.assert_close(batch_tensor[b : b + 1], one_s, atol=1e-5, rtol=0)
    # sigma matters (so the per-measurement sigma is really used)
    assert (batch_tensor[0] - batch_float[0]).abs().max() > 1e-4


# ----------------------------------------------------------------------------- device and dtype

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("est", list(ESTIMATORS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_follow_input(est, dtype, device):
    A = make_A("blur")
    # train stays on the CPU in float64 on purpose: chunks are moved to y's device and dtype
    train = rand_images(3, seed=90, dtype=torch.float64)
    y = (A(rand_images(2, seed=91)) + 0.1 * noise((2, 1, H, W), 92)).to(device=device, dtype=dtype)
    out = ESTIMATORS[est](y, train, torch.tensor([0.1, 0.2], device=device), A=A, B=A.T)
    assert out.dtype == dtype
    assert out.device == y.device
    assert out.shape == y.shape
    assert torch.isfinite(out).all()


def test_le_mmse_diagnostics_dtype_and_device():
    y = rand_images(1, seed=93)
    _, diag = le_mmse(y, rand_images(2, seed=94), 0.1, 3, return_diagnostics=True)
    for name in (
        "log_density",
        "source_image",
        "source_location",
        "top_weights",
        "top_images",
        "top_locations",
        "rank",
    ):
        t = getattr(diag, name)
        assert t.device == y.device, name
        assert t.shape[:3] == (1, H, W), name
    assert diag.top_weights.dtype == torch.float32
    assert diag.log_density.dtype == torch.float32


# ----------------------------------------------------------------------------- diagnostics


@pytest.mark.parametrize(
    "A_name,B_name", [("denoise", None), ("inpaint", "adjoint"), ("blur", "tikhonov")]
)
def test_top_weights_sorted_bounded(A_name, B_name):
    A = make_A(A_name)
    B = make_B(A_name, B_name, A)
    train = rand_images(3, seed=100)
    y = A(rand_images(2, seed=101)) + 0.1 * noise((2, 1, H, W), 102)
    _, diag = le_mmse(y, train, 0.2, 3, A=A, B=B, return_diagnostics=True, top_k=5)
    tw = diag.top_weights
    assert tw.shape == (2, H, W, 5)
    assert (tw >= 0).all() and (tw <= 1).all()
    assert (tw[..., :-1] >= tw[..., 1:]).all(), "top weights not sorted in decreasing order"
    assert (tw.double().sum(-1) <= 1 + 1e-6).all()
    real = tw > 0  # a group may hold fewer than top_k pairs: the rest is padding of weight 0
    assert real[..., 0].all()
    assert ((diag.top_images >= 0) & (diag.top_images < 3))[real].all()
    assert ((diag.top_locations >= 0) & (diag.top_locations < H * W))[real].all()


def test_top_k_padding_is_not_a_valid_location():
    """With B = mask a pattern group can hold fewer than top_k (i, m) pairs; the missing entries
    have weight 0 and must not masquerade as a real (image, location): both ids are -1."""
    A = Inpainting(mask())
    train = rand_images(3, seed=100)
    y = A(rand_images(1, seed=101)) + 0.1 * noise((1, 1, H, W), 102)
    _, diag = le_mmse(y, train, 0.2, 3, A=A, B=A, return_diagnostics=True, top_k=8)
    pad = diag.top_weights == 0
    assert pad.any(), "test setup: no padded entries"
    assert (diag.top_images[pad] == -1).all()
    assert (diag.top_locations[pad] == -1).all(), "padding entries report a real-looking location"


def test_source_map_of_training_measurement_points_to_its_image():
    train = rand_images(4, seed=110)
    j = 2
    y = train[j : j + 1] + 1e-4 * noise((1, 1, H, W), 111)
    _, diag = le_mmse(y, train, 0.02, 3, return_diagnostics=True)
    # brute force: the nearest key to every query patch is unique and is image j at location n
    pad = torch.nn.functional.pad(y.double(), (1, 1, 1, 1), mode="circular")
    tpad = torch.nn.functional.pad(train.double(), (1, 1, 1, 1), mode="circular")
    q = torch.nn.functional.unfold(pad, 3)[0].T  # (HW, 9)
    k = torch.nn.functional.unfold(tpad, 3).transpose(1, 2).reshape(-1, 9)  # (N·HW, 9)
    d = torch.cdist(q, k)
    two = d.topk(2, largest=False).values
    assert (two[:, 1] - two[:, 0] > 0.05).all(), "test setup: nearest key not unique"
    nearest = d.argmin(1)
    assert (nearest // (H * W) == j).all()
    assert (diag.source_image == j).all()
    assert (diag.source_location.reshape(-1) == torch.arange(H * W)).all()
    assert (diag.top_weights[..., 0] > 0.99).all()


@pytest.mark.parametrize(
    "A_name,B_name", [("denoise", None), ("inpaint", "adjoint"), ("blur", "tikhonov")]
)
def test_effective_patches_monotone(A_name, B_name):
    A = make_A(A_name)
    B = make_B(A_name, B_name, A)
    train = rand_images(3, seed=120)
    y = A(rand_images(1, seed=121)) + 0.1 * noise((1, 1, H, W), 122)
    _, diag = le_mmse(y, train, 0.3, 3, A=A, B=B, return_diagnostics=True)
    n1, n99, n50 = (diag.effective_patches(t) for t in (1.0, 0.99, 0.5))
    for t in (n1, n99, n50):
        assert t.shape == (1, H, W)
    assert (n1 >= n99).all() and (n99 >= n50).all() and (n50 >= 1).all()
    assert (n1 <= 3 * H * W).all()
    assert (n99 > 1).any()  # not degenerate at σ = 0.3


def test_effective_patches_with_one_shot_generator_raises():
    train = rand_images(3, seed=130)
    y = rand_images(1, seed=131)
    out, diag = le_mmse(y, (t for t in [train[:2], train[2:]]), 0.2, 3, return_diagnostics=True)
    assert out.shape == y.shape
    with pytest.raises(ValueError, match="iterat"):
        diag.effective_patches(0.99)


# ----------------------------------------------------------------------------- metrics


def test_psnr_values():
    x = rand_images(2, c=3, seed=140, dtype=torch.float64)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    torch.testing.assert_close(
        psnr(x + 0.1, x), torch.full((2,), 20.0, dtype=torch.float64), atol=1e-9, rtol=0
    )
    x32 = x.float()
    torch.testing.assert_close(
        psnr(x32 + 0.1, x32).double(),
        torch.full((2,), 20.0, dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )


def test_nearest_training_exact_and_shifted():
    train = rand_images(5, c=2, seed=150)
    x = torch.cat([train[3:4], roll(train[1:2], (2, 5)), rand_images(1, c=2, seed=151)])
    res = nearest_training(x, train)
    assert res.index[0] == 3
    assert res.mse[0] <= 1e-12
    assert torch.isinf(res.psnr[0]) or res.psnr[0] > 100
    assert res.mse[1] > 1e-3  # without shifts the shifted copy is not found exactly
    # brute-force nearest for the unrelated image
    d = ((x[2:3] - train) ** 2).flatten(1).mean(1).double()
    assert res.index[2] == d.argmin()
    assert abs(res.mse[2].item() - d.min().item()) < 1e-6

    res_s = nearest_training(x, train, shifts=True)
    assert res_s.index[1] == 1
    assert tuple(res_s.shift[1].tolist()) == (2, 5)
    assert res_s.mse[1] <= 1e-12
    assert res_s.index[0] == 3 and tuple(res_s.shift[0].tolist()) == (0, 0)
    # brute force over (i, g) for the unrelated image
    best = min(
        (((x[2] - roll(train[i], (gi, gj))) ** 2).mean().item(), i, (gi, gj))
        for i in range(5)
        for gi in range(H)
        for gj in range(W)
    )
    assert res_s.index[2] == best[1] and tuple(res_s.shift[2].tolist()) == best[2]
    assert abs(res_s.mse[2].item() - best[0]) < 1e-6
