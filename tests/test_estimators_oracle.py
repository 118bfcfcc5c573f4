"""The fast estimators of lemmse_lite (float32) against the float64 dense oracles of
tests/oracles.py, for every estimator × operator × pre-inverse × σ, grey and colour.

Error budget (course/05_closed_form.md, numerics): max abs error ≤ 1e-5 at σ ≥ 0.05 and ≤ 1e-4 at σ = 0.01; the
physics-aware blur with B = Aᵀ (a badly conditioned patch covariance) gets 1e-4 at every σ.

The case builders here are also used by tests/report_errors.py, which prints the measured errors.
"""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import pytest
import torch

from lemmse_lite.estimators import equivariant_mmse, le_mmse, mmse
from lemmse_lite.operators import (
    Blur,
    Denoising,
    Inpainting,
    center_box_mask,
    eps_mask,
    random_mask,
)

SIGMAS = (0.01, 0.05, 0.1, 0.3)
ASYM_KERNEL = [[0.02, 0.10, 0.0], [0.08, 0.40, 0.20], [0.0, 0.04, 0.16]]  # min |K̂| = 0.08
EPS_MASK = 0.1
EPS_TIKHONOV = 0.01
N_TRAIN = 5

# (operator, pre-inverse) pairs; pre-inverse None = physics-agnostic (B = I)
CASES = [
    ("denoise", None),
    ("box", None),
    ("random", None),
    ("blur", None),
    ("box", "mask"),
    ("box", "eps"),
    ("random", "mask"),
    ("random", "eps"),
    ("blur", "tikhonov"),
    ("blur", "adjoint"),
    ("blur", "pinv"),
]
CASE_IDS = [f"{op}-B={b or 'I'}" for op, b in CASES]
ESTIMATORS = ("mmse", "emmse", "le")


def tolerance(op: str, pre: str | None, sigma: float) -> float:
    if op == "blur" and pre == "adjoint":
        return 1e-4
    return 1e-4 if sigma < 0.05 else 1e-5


def build_operators(op: str, pre: str | None, shape):
    """(A_pkg, A_dense, B_pkg, B_dense); the dense matrices come from the oracle module only."""
    _C, H, W = shape
    if op == "denoise":
        A, Ad = Denoising(), O.identity_matrix(shape)
    elif op in ("box", "random"):
        mask = center_box_mask(H, W, 3) if op == "box" else random_mask(H, W, 0.3, seed=1)
        A, Ad = Inpainting(mask), O.mask_matrix(mask, shape)
    elif op == "blur":
        k = torch.tensor(ASYM_KERNEL, dtype=torch.float32)
        A, Ad = Blur(k), O.blur_matrix(k, shape)
    else:
        raise AssertionError(op)
    if pre is None:
        return A, Ad, None, None
    if pre == "mask":
        return A, Ad, A, Ad
    if pre == "eps":
        return A, Ad, Inpainting(eps_mask(mask, EPS_MASK)), O.eps_mask_matrix(mask, EPS_MASK, shape)
    if pre == "tikhonov":
        return A, Ad, A.tikhonov(EPS_TIKHONOV), O.tikhonov_matrix(Ad, EPS_TIKHONOV)
    if pre == "adjoint":
        return A, Ad, A.T, O.adjoint_matrix(Ad)
    if pre == "pinv":
        return A, Ad, A.pinv(), O.pinv_matrix(Ad)
    raise AssertionError(pre)


def make_data(shape, sigma, Ad, seed=0, n_train=N_TRAIN):
    """float32 training set (N,C,H,W), clean batch (2,C,H,W) = [a test image, training image 2]
    (repeated when σ has more than 2 entries), and the float32 raw measurements y = A x + σ e
    (noise from a fixed torch Generator)."""
    C, H, W = shape
    train = O.smooth_images(n_train, C, H, W, seed=100 + 7 * C + seed)
    test = O.smooth_images(1, C, H, W, seed=200 + 7 * C + seed)
    x = torch.cat([test, train[2:3]])
    sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1, 1)
    if sig.shape[0] > 2:  # one σ per measurement: the pair repeated, σ = [s1, s1, s2, s2, ...]
        x = x.repeat(sig.shape[0] // 2, 1, 1, 1)
    g = torch.Generator().manual_seed(300 + seed)
    e = torch.randn(x.shape, generator=g, dtype=torch.float64)
    Ax = torch.stack([torch.from_numpy(O.apply(Ad, xb)) for xb in x])
    y = (Ax + sig * e).float()
    return train, x, y


def run_package(est: str, y, train, sigma, P, A, B, **kw):
    if est == "mmse":
        return mmse(y, train, sigma, A=A, B=B, **kw)
    if est == "emmse":
        return equivariant_mmse(y, train, sigma, A=A, B=B, **kw)
    return le_mmse(y, train, sigma, P, A=A, B=B, **kw)


def run_oracle(est: str, y, train, sigma, P, Ad, Bd):
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (y.shape[0],))
    outs = []
    for b in range(y.shape[0]):
        if est == "mmse":
            outs.append(O.oracle_mmse(y[b], train, sig[b], Ad, Bd))
        elif est == "emmse":
            outs.append(O.oracle_emmse(y[b], train, sig[b], Ad, Bd))
        else:
            outs.append(O.oracle_le_mmse(y[b], train, sig[b], P, Ad, Bd))
    return np.stack(outs)


def max_error(est, op, pre, C, sigma, H=8, W=8, P=3, seed=0):
    """Max abs error of one estimator on a batch of 2 measurements at one (scalar) σ."""
    shape = (C, H, W)
    A, Ad, B, Bd = build_operators(op, pre, shape)
    train, _, y = make_data(shape, sigma, Ad, seed=seed)
    out = run_package(est, y, train, sigma, P, A, B)
    assert out.shape == y.shape and out.dtype == torch.float32
    ref = run_oracle(est, y, train, sigma, P, Ad, Bd)
    return float(np.abs(out.double().numpy() - ref).max())


def grid_errors(est, op, pre, C, sigmas=SIGMAS, H=8, W=8, P=3, seed=0):
    """Max abs error per σ, all σ in one call: the batch holds the 2 clean images at every σ
    (σ passed as a per-measurement tensor), so each case costs one package call."""
    shape = (C, H, W)
    A, Ad, B, Bd = build_operators(op, pre, shape)
    sig = torch.tensor(sigmas, dtype=torch.float64).repeat_interleave(2)
    train, _, y = make_data(shape, sig, Ad, seed=seed)
    out = run_package(est, y, train, sig.float(), P, A, B)
    assert out.shape == y.shape and out.dtype == torch.float32
    ref = run_oracle(est, y, train, sig.numpy(), P, Ad, Bd)
    err = np.abs(out.double().numpy() - ref).reshape(len(sigmas), -1).max(axis=1)
    return {s: float(e) for s, e in zip(sigmas, err)}


# ------------------------------------------------------------------------------------------
# The main grid: estimator × operator × pre-inverse × channels, every σ of SIGMAS
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("op,pre", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("est", ESTIMATORS)
def test_estimator_matches_oracle(est, op, pre, C):
    errs = grid_errors(est, op, pre, C)
    bad = {s: e for s, e in errs.items() if not e <= tolerance(op, pre, s)}
    assert not bad, f"{est} {op} B={pre} C={C}: errors over budget {bad} (all: {errs})"


@pytest.mark.parametrize("est", ESTIMATORS)
@pytest.mark.parametrize("op,pre", [("denoise", None), ("box", "mask"), ("blur", "tikhonov")])
def test_scalar_sigma(est, op, pre):
    err = max_error(est, op, pre, 3, 0.05, seed=6)
    assert err <= 1e-5, err


@pytest.mark.parametrize(
    "op,pre",
    [("denoise", None), ("box", "mask"), ("random", "eps"), ("blur", "tikhonov"), ("blur", None)],
)
@pytest.mark.parametrize("shape", [(1, 10, 12), (3, 9, 7)])
def test_le_mmse_non_square_larger_patch(op, pre, shape):
    C, H, W = shape
    sigma = 0.1
    err = max_error("le", op, pre, C, sigma, H=H, W=W, P=5, seed=1)
    assert err <= 1e-5, err


@pytest.mark.parametrize("est", ["mmse", "emmse"])
@pytest.mark.parametrize("op,pre", [("box", "mask"), ("blur", "pinv"), ("random", None)])
def test_non_square_mmse_emmse(est, op, pre):
    err = max_error(est, op, pre, 3, 0.1, H=6, W=9, seed=2)
    assert err <= 1e-5, err


@pytest.mark.parametrize("op,pre", [("denoise", None), ("box", "mask")])
def test_le_mmse_16x16(op, pre):
    err = max_error("le", op, pre, 1, 0.05, H=16, W=16, P=5, seed=3)
    assert err <= 1e-5, err


@pytest.mark.parametrize("est", ESTIMATORS)
@pytest.mark.parametrize("op,pre", [("denoise", None), ("box", "mask"), ("blur", "tikhonov")])
def test_per_measurement_sigma_and_streaming(est, op, pre):
    """σ as a (B,) tensor, train streamed as an iterable of chunks and with chunk_size."""
    shape = (3, 8, 8)
    sig = torch.tensor([0.05, 0.2])
    A, Ad, B, Bd = build_operators(op, pre, shape)
    train, _, y = make_data(shape, sig, Ad, seed=4)
    ref = run_oracle(est, y, train, sig.double().numpy(), 3, Ad, Bd)
    outs = {
        "tensor-sigma": run_package(est, y, train, sig, 3, A, B),
        "chunk_size=2": run_package(est, y, train, sig, 3, A, B, chunk_size=2),
        "iterable": run_package(est, y, iter([train[:2], train[2:3], train[3:]]), sig, 3, A, B),
    }
    for name, out in outs.items():
        err = float(np.abs(out.double().numpy() - ref).max())
        assert err <= 1e-5, (name, err)


@pytest.mark.parametrize("est", ESTIMATORS)
@pytest.mark.parametrize(
    "op,pre", [("denoise", None), ("random", "mask"), ("box", "eps"), ("blur", "adjoint")]
)
def test_near_duplicate_training_images(est, op, pre):
    """Training images 3% apart: the weights spread over several images even at σ = 0.05, so
    float32 cancellation in the scores is really exercised (well-separated images give one-hot
    weights at small σ, where any score error is invisible)."""
    shape = (3, 8, 8)
    A, Ad, B, Bd = build_operators(op, pre, shape)
    base = O.smooth_images(1, *shape, seed=400)
    var = O.smooth_images(N_TRAIN, *shape, seed=401) - 0.5
    train = (base + 0.03 * var).clamp(0, 1)
    sig = torch.tensor([0.05, 0.05, 0.1, 0.1], dtype=torch.float64)
    x = torch.cat([base, train[:1]]).repeat(2, 1, 1, 1)
    e = torch.randn(x.shape, generator=torch.Generator().manual_seed(402), dtype=torch.float64)
    Ax = torch.stack([torch.from_numpy(O.apply(Ad, xb)) for xb in x])
    y = (Ax + sig.reshape(-1, 1, 1, 1) * e).float()
    out = run_package(est, y, train, sig.float(), 3, A, B)
    ref = run_oracle(est, y, train, sig.numpy(), 3, Ad, Bd)
    err = float(np.abs(out.double().numpy() - ref).max())
    assert err <= tolerance(op, pre, 0.05), err


# ------------------------------------------------------------------------------------------
# Diagnostics (course/08_generalisation.md, eq-n-eff, eq-log-density).
# CONTRACT NAMES — the lead may adapt: le_mmse(..., return_diagnostics=True) -> (x_hat, diag),
# diag.log_density (B,H,W), diag.source_image / diag.source_location (B,H,W) long (m = i*W + j),
# diag.effective_patches(tau) (B,H,W), diag.rank (B,H,W), diag.top_weights (B,H,W,k) descending.
# ------------------------------------------------------------------------------------------
DIAG_CASES = [
    ("denoise", None),
    ("box", None),
    ("blur", None),
    ("box", "mask"),
    ("random", "mask"),
    ("box", "eps"),
    ("blur", "tikhonov"),
    ("blur", "adjoint"),
    ("blur", "pinv"),
]


def diagnostics_pair(op, pre, C, sigma, H=8, W=8, P=3, seed=5):
    shape = (C, H, W)
    A, Ad, B, Bd = build_operators(op, pre, shape)
    train, _, y = make_data(shape, sigma, Ad, seed=seed)
    x_hat, diag = le_mmse(y, train, sigma, P, A=A, B=B, return_diagnostics=True)
    refs = [
        O.oracle_le_mmse(y[b], train, sigma, P, Ad, Bd, return_diagnostics=True)
        for b in range(y.shape[0])
    ]
    return x_hat, diag, refs


def log_density_tolerance(sigma: float, C: int, P: int) -> float:
    """float32 squared patch distances carry an error of about one float32 ulp of the patch
    scale k = C·P² (pixel values in [0, 1]), divided by 2σ² in the log-density: we allow four
    float32 epsilons of k/(2σ²) (0.07 nats at σ = 0.01, C = 3, P = 3; 3e-5 at σ = 0.3, C = 1).
    Measured: at most 1.2e-7·k/(2σ²)."""
    return 1e-5 + 4 * 1.2e-7 * C * P * P / (2 * sigma**2)


def _sorted_weights(dr, H, W):
    return -np.sort(-dr.weights.reshape(H * W, -1), axis=1)


@pytest.mark.parametrize("C,sigma", [(1, 0.01), (3, 0.1), (1, 0.3)])
@pytest.mark.parametrize("op,pre", DIAG_CASES, ids=[f"{o}-B={b or 'I'}" for o, b in DIAG_CASES])
def test_diagnostics_match_oracle(op, pre, C, sigma):
    """log-density, rank of the kept stratum, source map and top-k weights."""
    x_hat, diag, refs = diagnostics_pair(op, pre, C, sigma)
    H, W = x_hat.shape[-2:]
    for b, (xr, dr) in enumerate(refs):
        np.testing.assert_allclose(x_hat[b].double().numpy(), xr, atol=tolerance(op, pre, sigma))
        # log-density in nats
        ld = diag.log_density[b].double().numpy()
        tol = log_density_tolerance(sigma, C, 3)
        err = np.abs(ld - dr.log_density).max()
        assert err <= tol, f"log_density err {err:.3g} > {tol:.3g}"
        # rank of the kept stratum
        np.testing.assert_array_equal(diag.rank[b].numpy(), dr.rank)
        # source map where the largest weight is unique by a clear margin
        clear = dr.top_log_gap() > 1e-3
        assert clear.mean() > 0.5
        np.testing.assert_array_equal(diag.source_image[b].numpy()[clear], dr.source_image[clear])
        np.testing.assert_array_equal(
            diag.source_location[b].numpy()[clear], dr.source_location[clear]
        )
        # top-k weights, descending
        k = diag.top_weights.shape[-1]
        w_sorted = _sorted_weights(dr, H, W)[:, :k].reshape(H, W, k)
        np.testing.assert_allclose(
            diag.top_weights[b].double().numpy(), w_sorted, atol=10 * tolerance(op, pre, sigma)
        )


NEFF_CASES = [
    ("denoise", None),
    ("box", "mask"),
    ("random", "mask"),
    ("box", "eps"),
    ("blur", "tikhonov"),
    ("blur", "adjoint"),
]


@pytest.mark.parametrize("C,sigma", [(1, 0.05), (3, 0.2)])
@pytest.mark.parametrize("op,pre", NEFF_CASES, ids=[f"{o}-B={b or 'I'}" for o, b in NEFF_CASES])
def test_diagnostics_effective_patches_match_oracle(op, pre, C, sigma):
    """N_eff(τ) at τ ∈ {0.5, 0.99} where not numerically ambiguous, and τ = 1 (non-zero weights)
    where no oracle weight lies in the float32 underflow zone."""
    x_hat, diag, refs = diagnostics_pair(op, pre, C, sigma)
    H, W = x_hat.shape[-2:]
    for tau in (0.5, 0.99):
        got = diag.effective_patches(tau).numpy()
        for b, (_, dr) in enumerate(refs):
            ok = dr.cumsum_margin(tau) > 1e-4
            assert ok.mean() > 0.5
            np.testing.assert_array_equal(
                got[b][ok], dr.effective_patches(tau)[ok], err_msg=f"τ={tau}"
            )
    got = diag.effective_patches(1.0).numpy()
    for b, (_, dr) in enumerate(refs):
        wflat = dr.weights.reshape(H * W, -1)
        ok = np.all((wflat == 0) | (wflat > 1e-30), axis=1).reshape(H, W)
        np.testing.assert_array_equal(got[b][ok], dr.effective_patches(1.0)[ok])


def test_diagnostics_source_map_of_a_training_image():
    """A noiseless training measurement at small σ: every pixel's source is itself (B = I)."""
    shape = (3, 8, 8)
    train = O.smooth_images(N_TRAIN, *shape, seed=9)
    y = train[1:2].clone()
    _, diag = le_mmse(y, train, 0.01, 3, return_diagnostics=True)
    assert torch.all(diag.source_image == 1)
    assert torch.equal(diag.source_location[0], torch.arange(64).reshape(8, 8))
    assert torch.all(diag.effective_patches(0.99) == 1)
    _, dr = O.oracle_le_mmse(y[0], train, 0.01, 3, None, None, return_diagnostics=True)
    ld = diag.log_density[0].double().numpy()
    assert np.abs(ld - dr.log_density).max() <= log_density_tolerance(0.01, 3, 3)
    # the nats of a perfect match: −(r/2) log(2πσ²) − log(N·HW) when one patch dominates
    r = 3 * 9
    peak = -0.5 * r * math.log(2 * math.pi * 0.01**2) - math.log(N_TRAIN * 64)
    assert np.all(dr.log_density >= peak - 1e-9) and np.all(dr.log_density < peak + 1.0)
