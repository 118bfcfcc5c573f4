"""Sanity checks of the float64 oracles themselves (tests/oracles.py), by hand and by identities
that the course's definitions imply. Nothing here imports lemmse_lite."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest

ASYM_KERNEL = np.array([[0.02, 0.10, 0.0], [0.08, 0.40, 0.20], [0.0, 0.04, 0.16]])


def _images(n, C, H, W, seed):
    return O.smooth_images(n, C, H, W, seed).double().numpy()


def _noisy(x, sigma, A, seed):
    rng = np.random.default_rng(seed)
    return O.apply(A, x) + sigma * rng.standard_normal(x.shape)


# ------------------------------------------------------------------------------------------
# Dense operators
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel",
    [
        np.ones((1, 1)),
        np.pad(np.ones((1, 1)), 1),  # 3x3 delta at the centre (1, 1)
        np.array([[0.0, 0.0], [0.0, 1.0]]),  # 2x2: centre (kh//2, kw//2) = (1, 1)
        np.array([[0, 0, 0], [0, 0, 0], [0, 1.0, 0], [0, 0, 0]]),  # 4x3: centre (2, 1)
    ],
)
def test_blur_matrix_of_centred_delta_is_identity(kernel):
    shape = (2, 6, 7)
    assert np.array_equal(O.blur_matrix(kernel, shape), np.eye(2 * 6 * 7))


@pytest.mark.parametrize("kshape", [(3, 3), (2, 3), (4, 4), (3, 5), (6, 7)])
def test_blur_matrix_places_kernel_by_convolution(kshape):
    """A delta at p maps to k[a, b] at p + (a − kh//2, b − kw//2): true convolution."""
    H, W = 6, 7
    rng = np.random.default_rng(1)
    k = rng.random(kshape)
    A = O.blur_matrix(k, (1, H, W))
    p = (2, 5)
    delta = np.zeros((1, H, W))
    delta[0, p[0], p[1]] = 1.0
    out = O.apply(A, delta)[0]
    expected = np.zeros((H, W))
    kh, kw = kshape
    for a in range(kh):
        for b in range(kw):
            expected[(p[0] + a - kh // 2) % H, (p[1] + b - kw // 2) % W] += k[a, b]
    np.testing.assert_array_equal(out, expected)
    # explicitly for the asymmetric 3x3: the tap k[0, 2] lands up-right of p
    if kshape == (3, 3):
        assert out[p[0] - 1, (p[1] + 1) % W] == k[0, 2]


@pytest.mark.parametrize("kshape", [(3, 3), (2, 2), (6, 8)])
def test_blur_matrix_matches_rolls_and_fft(kshape):
    C, H, W = 2, 6, 8
    rng = np.random.default_rng(2)
    k = rng.random(kshape)
    x = rng.random((C, H, W))
    A = O.blur_matrix(k, (C, H, W))
    kh, kw = kshape
    ref = sum(
        k[a, b] * np.roll(x, (a - kh // 2, b - kw // 2), axis=(1, 2))
        for a in range(kh)
        for b in range(kw)
    )
    np.testing.assert_allclose(O.apply(A, x), ref, atol=1e-13)
    # FFT: kernel embedded with its centre at the origin
    kpad = np.zeros((H, W))
    kpad[:kh, :kw] = k
    kpad = np.roll(kpad, (-(kh // 2), -(kw // 2)), axis=(0, 1))
    ref_fft = np.fft.ifft2(np.fft.fft2(x) * np.fft.fft2(kpad)).real
    np.testing.assert_allclose(O.apply(A, x), ref_fft, atol=1e-13)


def test_tikhonov_and_adjoint_equal_fourier_multipliers():
    C, H, W = 1, 8, 8
    eps = 0.05
    A = O.blur_matrix(ASYM_KERNEL, (C, H, W))
    kpad = np.zeros((H, W))
    kpad[:3, :3] = ASYM_KERNEL
    K = np.fft.fft2(np.roll(kpad, (-1, -1), axis=(0, 1)))
    x = np.random.default_rng(3).random((C, H, W))
    tik = np.fft.ifft2(np.fft.fft2(x) * np.conj(K) / (np.abs(K) ** 2 + eps)).real
    adj = np.fft.ifft2(np.fft.fft2(x) * np.conj(K)).real
    np.testing.assert_allclose(O.apply(O.tikhonov_matrix(A, eps), x), tik, atol=1e-12)
    np.testing.assert_allclose(O.apply(O.adjoint_matrix(A), x), adj, atol=1e-12)


def test_pinv_matrix_with_spectral_zeros_and_masks():
    shape = (1, 6, 8)
    A = O.blur_matrix(np.array([[0.5, 0.5]]), shape)  # zero at the horizontal Nyquist frequency
    Ap = O.pinv_matrix(A)
    assert np.linalg.matrix_rank(A) == 6 * 8 - 6
    np.testing.assert_allclose(A @ Ap @ A, A, atol=1e-12)
    np.testing.assert_allclose(Ap @ A @ Ap, Ap, atol=1e-12)
    mask = O.center_box_mask_oracle(6, 8, 2)
    M = O.mask_matrix(mask, (3, 6, 8))
    np.testing.assert_array_equal(O.pinv_matrix(M), M)
    Me = O.eps_mask_matrix(mask, 0.1, (3, 6, 8))
    np.testing.assert_allclose(O.pinv_matrix(Me), np.linalg.inv(Me), atol=1e-12)


def test_svd_pinv_cutoff():
    M = np.diag([1.0, 2e-6, 5e-7, 0.0])
    Mp, r, _s = O.svd_pinv(M)
    assert r == 2
    np.testing.assert_allclose(np.diag(Mp), [1.0, 5e5, 0.0, 0.0])
    _, r0, _ = O.svd_pinv(np.zeros((3, 5)))
    assert r0 == 0


def test_masks_and_broadcasting():
    m = O.center_box_mask_oracle(8, 10, 3)
    assert m.sum() == 80 - 9
    assert np.all(m[3:6, 4:7] == 0)  # starts at (8//2 - 1, 10//2 - 1)
    assert m[2, 4] == 1 and m[6, 4] == 1 and m[3, 3] == 1 and m[3, 7] == 1
    assert O.center_box_mask_oracle(8, 8, 4)[2:6, 2:6].sum() == 0
    shared = O.mask_values(m[None, None], (3, 8, 10))
    assert shared.shape == (3, 8, 10) and np.all(shared == m[None])
    per = np.stack([m, 1 - m, m])
    np.testing.assert_array_equal(O.mask_values(per, (3, 8, 10)), per)
    with pytest.raises(ValueError):
        O.mask_values(np.ones((2, 8, 10)), (3, 8, 10))
    e = O.eps_mask_values(m, 0.1)
    assert np.all(e[m == 0] == 0.1) and np.all(e[m == 1] == 1)


def test_shift_and_patch_matrices():
    C, H, W = 2, 5, 6
    x = np.random.default_rng(4).random((C, H, W))
    for g in [(0, 0), (1, 2), (-2, 5), (4, -1)]:
        np.testing.assert_array_equal(
            O.apply(O.shift_matrix(g, (C, H, W)), x), np.roll(x, g, axis=(1, 2))
        )
    P = 3
    for i, j in [(0, 0), (2, 3), (4, 5)]:
        Pi = O.patch_matrix(i * W + j, P, (C, H, W))
        patch = Pi @ x.reshape(-1)
        by_hand = [
            x[c, (i + di) % H, (j + dj) % W]
            for c in range(C)
            for di in (-1, 0, 1)
            for dj in (-1, 0, 1)
        ]
        np.testing.assert_array_equal(patch, by_hand)
        assert patch[P * P // 2] == x[0, i, j]  # centre of channel 0
    assert O.patch_matrix(7, 5, (1, 5, 6)).shape == (25, 30)


# ------------------------------------------------------------------------------------------
# Estimators
# ------------------------------------------------------------------------------------------
def _problem(kind, shape):
    C, H, W = shape
    if kind == "denoise":
        return np.eye(C * H * W)
    if kind == "inpaint":
        return O.mask_matrix(O.center_box_mask_oracle(H, W, 3), shape)
    if kind == "blur":
        return O.blur_matrix(ASYM_KERNEL, shape)
    raise AssertionError(kind)


@pytest.mark.parametrize("sigma", [0.02, 0.2])
@pytest.mark.parametrize("kind", ["denoise", "inpaint", "blur"])
def test_weights_are_a_probability(kind, sigma):
    shape = (1, 8, 8)
    X = _images(4, *shape, seed=10)
    A = _problem(kind, shape)
    y = _noisy(_images(1, *shape, seed=11)[0], sigma, A, seed=0)
    _, w = O.oracle_mmse(y, X, sigma, A, None, return_weights=True)
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    _, w = O.oracle_emmse(y, X, sigma, A, None, return_weights=True)
    assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
    B = A if kind == "inpaint" else None
    _, d = O.oracle_le_mmse(y, X, sigma, 3, A, B, return_diagnostics=True)
    s = d.weights.reshape(64, -1).sum(axis=1)
    assert np.all(d.weights >= 0) and np.abs(s - 1).max() < 1e-12


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("kind", ["denoise", "inpaint", "blur"])
def test_general_le_mmse_with_identity_equals_direct_formula(kind, sigma, C):
    shape = (C, 8, 8)
    X = _images(4, *shape, seed=20)
    A = _problem(kind, shape)
    y = _noisy(_images(1, *shape, seed=21)[0], sigma, A, seed=1)
    xg, dg = O.oracle_le_mmse(y, X, sigma, 3, A, None, return_diagnostics=True)
    xd, dd = O.oracle_le_mmse_identity(y, X, sigma, 3, A, return_diagnostics=True)
    np.testing.assert_allclose(xg, xd, atol=1e-12)
    np.testing.assert_allclose(dg.weights, dd.weights, atol=1e-12)
    np.testing.assert_allclose(dg.log_density, dd.log_density, rtol=1e-12, atol=1e-9)


def _pre_inverses(kind, A, shape):
    _C, H, W = shape
    if kind == "denoise":
        return {"I": None}
    if kind == "inpaint":
        mask = O.center_box_mask_oracle(H, W, 3)
        return {"I": None, "mask": A, "eps": O.eps_mask_matrix(mask, 0.1, shape)}
    return {"I": None, "adj": A.T, "tik": O.tikhonov_matrix(A, 0.05), "pinv": O.pinv_matrix(A)}


@pytest.mark.parametrize("kind", ["denoise", "inpaint", "blur"])
def test_le_mmse_with_full_size_patches_equals_emmse(kind):
    """P = H = W (odd): the patch at n is the whole measurement shifted by n, so LE-MMSE is E-MMSE
    (§3 vs §4.2), for every pre-inverse: feasibility, ranks and determinants all match."""
    shape = (1, 5, 5)
    X = _images(3, *shape, seed=30)
    A = _problem(kind, shape)
    y = _noisy(_images(1, *shape, seed=31)[0], 0.1, A, seed=2)
    for name, B in _pre_inverses(kind, A, shape).items():
        for sigma in (0.05, 0.3):
            xe = O.oracle_emmse(y, X, sigma, A, B)
            xl = O.oracle_le_mmse(y, X, sigma, 5, A, B)
            np.testing.assert_allclose(xl, xe, atol=1e-10, err_msg=f"{kind} B={name} σ={sigma}")


@pytest.mark.parametrize("kind", ["inpaint", "blur"])
def test_mmse_is_unchanged_by_invertible_or_mask_pre_inverse(kind):
    """‖B⁻¹(By − BAx)‖ = ‖y − Ax‖ for invertible B; for the 0/1 mask the holes only add a constant."""
    shape = (3, 8, 8)
    X = _images(5, *shape, seed=40)
    A = _problem(kind, shape)
    y = _noisy(_images(1, *shape, seed=41)[0], 0.2, A, seed=3)
    ref = O.oracle_mmse(y, X, 0.2, A, None)
    for name, B in _pre_inverses(kind, A, shape).items():
        np.testing.assert_allclose(O.oracle_mmse(y, X, 0.2, A, B), ref, atol=1e-10, err_msg=name)


def test_emmse_with_box_mask_pre_inverse_keeps_only_zero_shift():
    shape = (1, 8, 8)
    X = _images(4, *shape, seed=50)
    A = _problem("inpaint", shape)
    y = _noisy(_images(1, *shape, seed=51)[0], 0.1, A, seed=4)
    xe, w = O.oracle_emmse(y, X, 0.1, A, A, return_weights=True)
    assert np.all(w[:, 1:, :] == 0) and np.all(w[:, :, 1:] == 0)
    np.testing.assert_allclose(xe, O.oracle_mmse(y, X, 0.1, A, A), atol=1e-12)
    # physics-agnostic E-MMSE (B = I) uses every shift
    _, w0 = O.oracle_emmse(y, X, 3.0, A, None, return_weights=True)
    assert np.all(w0 > 0)


def test_small_sigma_limits_reproduce_training_images():
    shape = (3, 8, 8)
    X = _images(4, *shape, seed=60)
    y = X[2]
    np.testing.assert_allclose(O.oracle_mmse(y, X, 1e-3), X[2], atol=1e-12)
    ys = np.roll(X[1], (3, -2), axis=(1, 2))
    np.testing.assert_allclose(O.oracle_emmse(ys, X, 1e-3), ys, atol=1e-12)
    xl, d = O.oracle_le_mmse(y, X, 1e-3, 3, None, None, return_diagnostics=True)
    np.testing.assert_allclose(xl, X[2], atol=1e-12)
    assert np.all(d.source_image == 2)
    np.testing.assert_array_equal(d.source_location, np.arange(64).reshape(8, 8))
    np.testing.assert_array_equal(d.effective_patches(0.99), np.ones((8, 8)))


def test_large_sigma_limits_are_means():
    shape = (3, 6, 7)
    X = _images(4, *shape, seed=61)
    A = _problem("blur", shape)
    y = _noisy(_images(1, *shape, seed=62)[0], 0.1, A, seed=5)
    s = 1e4
    np.testing.assert_allclose(O.oracle_mmse(y, X, s, A), X.mean(0), atol=1e-6)
    chan_mean = X.mean(axis=(0, 2, 3))[:, None, None] * np.ones(shape)
    np.testing.assert_allclose(O.oracle_emmse(y, X, s, A), chan_mean, atol=1e-6)
    np.testing.assert_allclose(O.oracle_le_mmse(y, X, s, 3, A), chan_mean, atol=1e-6)


def test_box_mask_stratification_by_hand():
    """B = A = 3×3 centre-box mask, P = 3, on 8×8. At the hole centre v = 0 and the rank-0 stratum
    is the single location m = n: output = mean of the training pixels there, at any σ. A pixel
    whose patch partly covers the hole has a pattern no other location shares: a per-pixel MMSE
    over the observed part of its patch. A pixel far from the hole uses every location whose patch
    is fully observed."""
    C, H, W = 1, 8, 8
    shape = (C, H, W)
    mask = O.center_box_mask_oracle(H, W, 3)  # hole rows/cols 3..5
    A = O.mask_matrix(mask, shape)
    X = _images(5, *shape, seed=70)
    y = _noisy(_images(1, *shape, seed=71)[0], 0.1, A, seed=6)
    sigma = 0.1
    xl, d = O.oracle_le_mmse(y, X, sigma, 3, A, A, return_diagnostics=True)
    # hole centre (4, 4)
    n = 4 * W + 4
    assert d.rank[4, 4] == 0
    np.testing.assert_allclose(xl[0, 4, 4], X[:, 0, 4, 4].mean(), atol=1e-13)
    np.testing.assert_allclose(d.weights[n][:, n], np.full(5, 0.2), atol=1e-13)
    assert d.weights[n].sum() - d.weights[n][:, n].sum() == 0
    # log-density of a rank-0 stratum: log(N / (N·HW))
    np.testing.assert_allclose(d.log_density[4, 4], np.log(1 / (H * W)), atol=1e-12)
    # (2, 3): patch rows 1..3, cols 2..4 -> row 3, cols 3..4 are in the hole
    i, j = 2, 3
    n = i * W + j
    obs = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if mask[i + di, j + dj] == 1]
    assert len(obs) == 7 and d.rank[i, j] == 7
    dist = np.array(
        [sum((y[0, i + a, j + b] - X[k, 0, i + a, j + b]) ** 2 for a, b in obs) for k in range(5)]
    )
    w = np.exp(-(dist - dist.min()) / (2 * sigma**2))
    w /= w.sum()
    np.testing.assert_allclose(xl[0, i, j], w @ X[:, 0, i, j], atol=1e-12)
    assert np.count_nonzero(d.weights[n].sum(axis=0)) == 1
    # (0, 0): fully observed patch; kept locations = those whose 3x3 patch avoids rows/cols 3..5
    full = [
        m
        for m in range(H * W)
        if all(mask[(m // W + a) % H, (m % W + b) % W] == 1 for a in (-1, 0, 1) for b in (-1, 0, 1))
    ]
    assert len(full) == H * W - 25
    np.testing.assert_array_equal(np.nonzero(d.weights[0].sum(axis=0))[0], full)
    Xp = np.stack([O._patches_by_rolls(X[k], 3) for k in range(5)])
    yp = O._patches_by_rolls(y, 3)[0]
    dd = np.sum((Xp[:, full] - yp) ** 2, axis=2)
    ww = np.exp(-(dd - dd.min()) / (2 * sigma**2))
    ww /= ww.sum()
    np.testing.assert_allclose(
        xl[0, 0, 0], np.sum(ww * X[:, 0].reshape(5, -1)[:, full]), atol=1e-12
    )


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("which", ["mask", "eps", "random"])
def test_diagonal_pre_inverse_formula_equals_general_oracle(which, C):
    """§4.2, diagonal B = diag(b): keep locations whose support equals the query's, divide each
    difference by b, prefactor −Σ log|b| over the support. Written here from that bullet alone."""
    H = W = 8
    shape = (C, H, W)
    P, sigma, N = 3, 0.1, 4
    if which == "random":
        rng = np.random.default_rng(7)
        mask = np.ones(H * W)
        mask[rng.permutation(H * W)[:19]] = 0
        mask = mask.reshape(H, W)
    else:
        mask = O.center_box_mask_oracle(H, W, 4)
    b = O.eps_mask_values(mask, 0.1) if which == "eps" else mask
    A = O.mask_matrix(mask, shape)
    Bm = O.mask_matrix(b, shape)
    X = _images(N, *shape, seed=80)
    y = _noisy(_images(1, *shape, seed=81)[0], sigma, A, seed=8)
    xl, d = O.oracle_le_mmse(y, X, sigma, P, A, Bm, return_diagnostics=True)
    z = O.apply(Bm, y)
    bb = O.mask_values(b, shape)
    zp = np.stack([O._patches_by_rolls(z, P)])[0]  # (HW, k)
    bp = O._patches_by_rolls(bb, P)  # (HW, k)
    mup = np.stack([O._patches_by_rolls(O.apply(Bm @ A, X[k]), P) for k in range(N)])
    vals = X.reshape(N, C, -1)
    for n in range(H * W):
        supp_n = bp[n] != 0
        kept = [m for m in range(H * W) if np.array_equal(bp[m] != 0, supp_n)]
        logp = []
        for m in kept:
            s = bp[m] != 0
            dist = np.sum(((zp[n][s] - mup[:, m][:, s]) / bp[m][s]) ** 2, axis=1)
            logp.append(
                -dist / (2 * sigma**2)
                - np.sum(np.log(np.abs(bp[m][s])))
                - 0.5 * s.sum() * np.log(2 * np.pi * sigma**2)
            )
        logp = np.stack(logp, axis=1)  # (N, kept)
        w = np.exp(logp - logp.max())
        w /= w.sum()
        ref = np.einsum("ik,ick->c", w, vals[:, :, kept])
        np.testing.assert_allclose(xl.reshape(C, -1)[:, n], ref, atol=1e-11)
        ld = logp.max() + np.log(np.exp(logp - logp.max()).sum()) - np.log(N * H * W)
        np.testing.assert_allclose(d.log_density.reshape(-1)[n], ld, atol=1e-9)
    if which == "eps":
        assert np.all(d.rank == C * P * P)  # invertible: every location feasible, one stratum


@pytest.mark.parametrize("bname", ["adj", "tik", "pinv"])
def test_equivariant_pre_inverse_whitening_equals_general_oracle(bname):
    """§4.2, translation-equivariant B: one S = Π B Bᵀ Πᵀ for all m; whiten with L Lᵀ = S⁻¹ and use
    the Euclidean formula on Lᵀ Π_n B y and Lᵀ Π_m B A x_i."""
    shape = (1, 8, 8)
    C, H, W = shape
    A = _problem("blur", shape)
    B = _pre_inverses("blur", A, shape)[bname]
    X = _images(4, *shape, seed=90)
    sigma = 0.05
    y = _noisy(_images(1, *shape, seed=91)[0], sigma, A, seed=9)
    xl = O.oracle_le_mmse(y, X, sigma, 3, A, B)
    Pi0 = O.patch_matrix(0, 3, shape)
    S = Pi0 @ B @ B.T @ Pi0.T
    for m in (5, 27, 63):
        Pim = O.patch_matrix(m, 3, shape)
        np.testing.assert_allclose(Pim @ B @ B.T @ Pim.T, S, atol=1e-12)
    L = np.linalg.cholesky(np.linalg.inv(S))
    q = O._patches_by_rolls(O.apply(B, y), 3) @ L  # rows: (Lᵀ v)ᵀ
    keys = np.stack([O._patches_by_rolls(O.apply(B @ A, X[k]), 3) @ L for k in range(4)])
    xd = np.zeros((C, H * W))
    for n in range(H * W):
        dist = np.sum((keys - q[n]) ** 2, axis=2)
        w = np.exp(-(dist - dist.min()) / (2 * sigma**2))
        w /= w.sum()
        xd[:, n] = np.einsum("im,icm->c", w, X.reshape(4, C, -1))
    np.testing.assert_allclose(xl.reshape(C, -1), xd, atol=1e-10)


@pytest.mark.parametrize("kind", ["denoise", "blur"])
def test_oracles_are_shift_equivariant(kind):
    shape = (3, 6, 8)
    X = _images(3, *shape, seed=100)
    A = _problem(kind, shape)
    y = _noisy(_images(1, *shape, seed=101)[0], 0.1, A, seed=10)
    g = (2, -3)
    roll = lambda u: np.roll(u, g, axis=(1, 2))
    B = None if kind == "denoise" else O.tikhonov_matrix(A, 0.05)
    np.testing.assert_allclose(
        O.oracle_emmse(roll(y), X, 0.1, A, B), roll(O.oracle_emmse(y, X, 0.1, A, B)), atol=1e-12
    )
    np.testing.assert_allclose(
        O.oracle_le_mmse(roll(y), X, 0.1, 3, A, B),
        roll(O.oracle_le_mmse(y, X, 0.1, 3, A, B)),
        atol=1e-12,
    )


# ------------------------------------------------------------------------------------------
# Diagnostics
# ------------------------------------------------------------------------------------------
def test_n_eff_from_weights_by_hand():
    w = np.array([0.2, 0.5, 0.3])
    assert O.n_eff_from_weights(w, 0.5) == 1
    assert O.n_eff_from_weights(w, 0.8) == 2
    assert O.n_eff_from_weights(w, 0.8000005) == 2  # within the 1e-6 slack
    assert O.n_eff_from_weights(w, 0.81) == 3
    assert O.n_eff_from_weights(w, 1.0) == 3
    assert O.n_eff_from_weights(np.array([0.6, 0.0, 0.4, 0.0]), 1.0) == 2


def test_log_density_and_n_eff_for_constant_images():
    """Constant training images c_k and a constant measurement c: every (k, m) has distance
    r (c − c_k)², so p = (2πσ²)^{−r/2} exp(−r (c−c_k)²/(2σ²)) and the weights are uniform in m."""
    C, H, W, P, sigma = 3, 6, 6, 3, 0.2
    r = C * P * P
    cs = np.array([0.3, 0.5])
    X = cs[:, None, None, None] * np.ones((2, C, H, W))
    y = 0.45 * np.ones((C, H, W))
    _, d = O.oracle_le_mmse(y, X, sigma, P, None, None, return_diagnostics=True)
    logp = -0.5 * r * np.log(2 * np.pi * sigma**2) - r * (0.45 - cs) ** 2 / (2 * sigma**2)
    expected = np.log(np.exp(logp).mean())
    np.testing.assert_allclose(d.log_density, expected, rtol=1e-12)
    # weights: image 1 has weight p1/(p0+p1), spread uniformly over the 36 locations
    p1 = np.exp(logp[1]) / np.exp(logp).sum()
    np.testing.assert_allclose(d.weights[:, 1, :], p1 / 36, rtol=1e-12)
    HW = H * W
    for tau in (0.3, 0.5, 0.9):
        k = (
            int(np.ceil((tau - 1e-6 - 1e-12) / (p1 / HW)))
            if tau - 1e-6 <= p1
            else HW + int(np.ceil((tau - 1e-6 - p1) / ((1 - p1) / HW)))
        )
        assert np.all(d.effective_patches(tau) == k), tau
    assert np.all(d.effective_patches(1.0) == 2 * HW)
    # identity pre-inverse version agrees
    _, d2 = O.oracle_le_mmse_identity(y, X, sigma, P, None, return_diagnostics=True)
    np.testing.assert_allclose(d2.log_density, expected, rtol=1e-12)


def test_log_density_eps_mask_determinant_term():
    """ε-mask: every location kept, each with its own −Σ log b over the patch (C copies)."""
    C, H, W, P, sigma, eps = 2, 6, 6, 3, 0.1, 0.1
    mask = O.center_box_mask_oracle(H, W, 2)
    b = O.eps_mask_values(mask, eps)
    Bm = O.eps_mask_matrix(mask, eps, (C, H, W))
    A = O.mask_matrix(mask, (C, H, W))
    X = np.zeros((1, C, H, W))  # all-zero training image and measurement: distances vanish
    y = np.zeros((C, H, W))
    _, d = O.oracle_le_mmse(y, X, sigma, P, A, Bm, return_diagnostics=True)
    # v = 0 is in every range; all Q_m have full rank C·P·P, so every m is kept
    n_holes = np.array(
        [
            sum(mask[(i + a) % H, (j + c) % W] == 0 for a in (-1, 0, 1) for c in (-1, 0, 1))
            for i in range(H)
            for j in range(W)
        ]
    )
    logdet = C * n_holes * np.log(eps)
    logp = -0.5 * C * P * P * np.log(2 * np.pi * sigma**2) - logdet
    expected = np.log(np.exp(logp).sum() / (H * W))
    np.testing.assert_allclose(d.log_density, expected, rtol=1e-12)
    wm = np.exp(-logdet) / np.exp(-logdet).sum()
    np.testing.assert_allclose(d.weights[0, 0], wm, rtol=1e-12)
    assert b.min() == eps
