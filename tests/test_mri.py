"""Accelerated MRI (course/09_mri.md, eq-kspace): the k-space operator against an explicit
float64 DFT matrix, its mask factories and input checks, and MMSE / E-MMSE / LE-MMSE with
``B = A⁺ = K`` against the dense oracles of tests/oracles.py (8×8 and 16×16, including masks with
fewer kept columns than P, where the patch covariance S is singular).

Error budget as for the other problems (course/05_closed_form.md, numerics): max abs error
≤ 1e-5 at σ ≥ 0.05 and ≤ 1e-4 at σ = 0.01.
"""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
import torch

from lemmse_lite import data, experiments, operators, problems, profiles
from lemmse_lite.cli import main
from lemmse_lite.estimators import equivariant_mmse, le_mmse, mmse
from lemmse_lite.operators import KSpaceSampling, kspace_acceleration, line_mask

SIGMAS = (0.01, 0.05, 0.1, 0.3)
N_TRAIN = 5


def tolerance(sigma: float) -> float:
    return 1e-4 if sigma < 0.05 else 1e-5


def kept_columns(mask: torch.Tensor) -> list:
    return torch.nonzero(mask[0]).flatten().tolist()


# ------------------------------------------------------------------------------------------
# The operator against the explicit matrix
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,R,fc,kind", [
    ((1, 8, 8), 2.0, 0.25, "random"),
    ((1, 8, 12), 3.0, 0.1, "equispaced"),
    ((2, 16, 16), 4.0, 0.08, "random"),
    ((1, 9, 7), 2.0, 0.0, "random"),
])
def test_kspace_operator_is_the_dft_projector(shape, R, fc, kind):
    _C, H, W = shape
    mask = line_mask(H, W, R, fc, kind, seed=3)
    K = KSpaceSampling(mask)
    Kd = O.kspace_matrix(mask, shape)
    assert np.abs(K.matrix(shape).numpy() - Kd).max() < 1e-12
    assert np.abs(Kd - Kd.T).max() < 1e-12  # symmetric
    assert np.abs(Kd @ Kd - Kd).max() < 1e-12  # idempotent: an orthogonal projector
    assert np.abs(K.T.matrix(shape).numpy() - Kd).max() < 1e-12
    assert np.abs(K.pinv().matrix(shape).numpy() - Kd).max() < 1e-12
    assert np.abs(O.pinv_matrix(Kd) - Kd).max() < 1e-9  # A⁺ = K, by SVD
    assert K.is_equivariant and K.kind == "fourier"


def test_measure_is_projected_image_plus_white_noise():
    mask = line_mask(8, 8, 2.0, 0.25, seed=1)
    K = KSpaceSampling(mask)
    x = O.smooth_images(2, 1, 8, 8, seed=4).double()
    y = operators.measure(K, x, 0.1, 7)
    e = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    Kd = O.kspace_matrix(mask, (1, 8, 8))
    expect = np.stack([O.apply(Kd, xb) for xb in x]) + 0.1 * e.numpy()
    assert np.abs(y.numpy() - expect).max() < 1e-12


# ------------------------------------------------------------------------------------------
# Mask factories
# ------------------------------------------------------------------------------------------
def test_equispaced_masks_by_hand():
    # W = 32, R = 4, f_c = 0.08: band round(2.56) = 3 columns {0, ±1}; target 32 / 4 = 8 kept;
    # pairs ±4, ±8, ±12 (multiples of 4) bring 5, 7, 9 >= 8 columns.
    m = line_mask(32, 32, 4, 0.08, "equispaced")
    assert kept_columns(m) == [0, 1, 4, 8, 12, 20, 24, 28, 31]
    assert kspace_acceleration(m) == pytest.approx(32 / 9)
    # R = 8, f_c = 0.04: band round(1.28) = 1 column {0}; target 4; ±8 gives 3, then 16 (its own mirror).
    m = line_mask(32, 32, 8, 0.04, "equispaced")
    assert kept_columns(m) == [0, 8, 16, 24]
    assert KSpaceSampling(m).acceleration == 8.0


@pytest.mark.parametrize("W,R,fc", [(32, 4, 0.08), (32, 8, 0.04), (320, 4, 0.08), (368, 8, 0.04), (31, 2.5, 0.3)])
@pytest.mark.parametrize("kind", ["random", "equispaced"])
def test_mask_structure_and_acceleration(W, R, fc, kind):
    m = line_mask(16, W, R, fc, kind, seed=5)
    cols = set(kept_columns(m))
    assert (m == m[0:1]).all(), "whole columns (phase-encoding lines)"
    assert all((-k) % W in cols for k in cols), "conjugate pairs"
    operators.check_kspace_mask(m)  # accepted as conjugate-symmetric in both directions
    n_c = round(fc * W)
    band = [0] + [s * k % W for k in range(1, W // 2 + 1) for s in (1, -1)]
    assert set(band[:n_c]) <= cols, "the fully sampled centre"
    assert len(cols) >= W / R  # the kept fraction reaches 1/R ...
    assert len(cols) - 2 < W / R or len(cols) <= n_c + 1  # ... and one pair fewer would not
    assert kspace_acceleration(m) == pytest.approx(16 * W / m.sum().item())


def test_random_masks_are_seeded():
    a, b = line_mask(32, 64, 4, 0.08, seed=0), line_mask(32, 64, 4, 0.08, seed=0)
    assert torch.equal(a, b)
    assert not torch.equal(a, line_mask(32, 64, 4, 0.08, seed=1))
    assert torch.equal(line_mask(8, 32, 4, 0.08, "equispaced", seed=0), line_mask(8, 32, 4, 0.08, "equispaced", seed=9))


def test_no_acceleration_and_full_centre_sample_everything():
    assert line_mask(8, 10, 1.0, 0.0).all()
    assert line_mask(8, 10, 6.0, 1.0).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"acceleration": 0.5}, "acceleration"),
    ({"acceleration": float("nan")}, "acceleration"),
    ({"acceleration": True}, "acceleration"),
    ({"center_fraction": -0.1}, "center_fraction"),
    ({"center_fraction": 1.5}, "center_fraction"),
    ({"kind": "spiral"}, "kind"),
])
def test_line_mask_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        line_mask(8, 8, **kwargs)


def test_bad_kspace_masks():
    m = torch.zeros(8, 8)
    m[:, [0, 1]] = 1  # column 1 without its mirror 7
    with pytest.raises(ValueError, match="conjugate-symmetric"):
        KSpaceSampling(m)
    with pytest.raises(ValueError, match="0 .* and 1"):
        KSpaceSampling(0.5 * line_mask(8, 8, 2.0, 0.25))
    with pytest.raises(ValueError, match="samples no"):
        KSpaceSampling(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="2-D"):
        KSpaceSampling(torch.ones(1, 8, 8))
    with pytest.raises(TypeError, match="mask"):
        KSpaceSampling([[1.0]])
    K = KSpaceSampling(line_mask(8, 8, 2.0, 0.25))
    with pytest.raises(ValueError, match="does not match"):
        K(torch.zeros(1, 1, 8, 10))
    assert torch.equal(KSpaceSampling(line_mask(8, 8, 2.0, 0.25).bool()).mask, K.mask)


def test_named_problem():
    assert "mri" in problems.PROBLEMS
    A = problems.forward_operator("mri", 32, 32, acceleration=8, center_fraction=0.04, mask_kind="equispaced")
    assert isinstance(A, KSpaceSampling) and A.acceleration == 8.0
    assert operators.pre_inverse(A, "pinv") is A and operators.pre_inverse(A, "adjoint") is A
    default = problems.forward_operator("mri", 32, 32)
    assert torch.equal(default.mask, line_mask(32, 32, 4.0, 0.08, "random", 0))


# ------------------------------------------------------------------------------------------
# Estimators with B = A⁺ = K against the dense oracles
# ------------------------------------------------------------------------------------------
def make_case(H, W, R, fc, seed, sigmas=SIGMAS):
    """(K, K dense, train (N,1,H,W), y (2·len(sigmas),1,H,W) float32, σ per measurement)."""
    mask = line_mask(H, W, R, fc, "random", seed=seed)
    K, Kd = KSpaceSampling(mask), O.kspace_matrix(mask, (1, H, W))
    train = O.smooth_images(N_TRAIN, 1, H, W, seed=500 + seed)
    x = torch.cat([O.smooth_images(1, 1, H, W, seed=600 + seed), train[2:3]]).repeat(len(sigmas), 1, 1, 1)
    sig = torch.tensor(sigmas, dtype=torch.float64).repeat_interleave(2)
    e = torch.randn(x.shape, generator=torch.Generator().manual_seed(700 + seed), dtype=torch.float64)
    Kx = torch.stack([torch.from_numpy(O.apply(Kd, xb)) for xb in x])
    return K, Kd, train, (Kx + sig[:, None, None, None] * e).float(), sig


def errors(est, H, W, R, fc, P, seed, dtype=torch.float32, sigmas=None):
    """Max abs error per σ of the package (inputs and computation in ``dtype``) against the oracle;
    ``sigmas`` default: all of SIGMAS, (0.01, 0.05, 0.1) for LE-MMSE on 16×16 (its oracle is slow)."""
    sigmas = sigmas or ((0.01, 0.05, 0.1) if est == "le" and H == 16 else SIGMAS)
    K, Kd, train, y, sig = make_case(H, W, R, fc, seed, sigmas)
    B = K.pinv()
    y, train, s = y.to(dtype), train.to(dtype), sig.to(dtype)
    if est == "mmse":
        out = mmse(y, train, s, A=K, B=B)
        ref = [O.oracle_mmse(y[b], train, sig[b].item(), Kd, Kd) for b in range(len(y))]
    elif est == "emmse":
        out = equivariant_mmse(y, train, s, A=K, B=B)
        ref = [O.oracle_emmse(y[b], train, sig[b].item(), Kd, Kd) for b in range(len(y))]
    else:
        out = le_mmse(y, train, s, P, A=K, B=B)
        ref = [O.oracle_le_mmse(y[b], train, sig[b].item(), P, Kd, Kd) for b in range(len(y))]
    assert out.dtype == dtype and out.shape == y.shape
    err = np.abs(out.double().numpy() - np.stack(ref)).reshape(len(sigmas), -1).max(1)
    return dict(zip(sigmas, err.tolist()))


# (H, W, R, f_c, P): 8×8 R=2 keeps 5 columns (S invertible); 8×8 R=8 f_c=0 keeps 2 < P = 3 and
# 16×16 R=8 keeps 3 < P = 5 (S singular); 16×16 R=4 keeps 4 (singular, λ_min/λ_max = 0.4 on range).
GRID = [(8, 8, 2.0, 0.25, 3), (8, 8, 8.0, 0.0, 3), (16, 16, 4.0, 0.08, 5), (16, 16, 8.0, 0.04, 5)]
# E-MMSE at 16×16 runs once (R = 8): the dense shift oracle is slow.
CASES = [(e, *g) for e in ("mmse", "emmse", "le") for g in GRID if not (e == "emmse" and g[:3] == (16, 16, 4.0))]


def budget(est, H, sigma):
    """The float32 budget: 1e-5 (σ ≥ 0.05) and 1e-4 (σ = 0.01), as for every problem (the
    whitened LE-MMSE scores with float64 dot products: in float32 they measured 2.5e-4 at σ = 0.01)."""
    return tolerance(sigma)


@pytest.mark.parametrize("est,H,W,R,fc,P", CASES, ids=[f"{e}-{h}x{w}-R{r:g}-P{p}" for e, h, w, r, _, p in CASES])
def test_estimators_match_oracle(est, H, W, R, fc, P):
    errs = errors(est, H, W, R, fc, P, seed=int(R))
    bad = {s: e for s, e in errs.items() if not e <= budget(est, H, s)}
    assert not bad, f"{est} {H}x{W} R={R}: errors over budget {bad} (all: {errs})"


@pytest.mark.parametrize("R,fc", [(4.0, 0.08), (8.0, 0.04)])
def test_float32_le_mmse_on_the_worst_mask(R, fc):
    """The seed-1 masks, whose float32 LE-MMSE with float32 dot products was furthest from the
    oracle (2.5e-4 at σ = 0.01), within the common budget."""
    errs = errors("le", 16, 16, R, fc, 5, seed=1, sigmas=(0.01, 0.05))
    bad = {s: e for s, e in errs.items() if not e <= budget("le", 16, s)}
    assert not bad, f"le 16x16 R={R} seed 1: errors over budget {bad} (all: {errs})"


@pytest.mark.parametrize("est,H,W,R,fc,P", [("le", 16, 16, 4.0, 0.08, 5), ("le", 8, 8, 8.0, 0.0, 3),
                                            ("mmse", 16, 16, 8.0, 0.04, 5)])
def test_float64_estimators_are_exact(est, H, W, R, fc, P):
    """In float64 the package follows the oracle to rounding at σ = 0.01 and 0.3 (the mask of
    seed 1 is the one whose float32 LE-MMSE is furthest from it at σ = 0.01)."""
    errs = errors(est, H, W, R, fc, P, seed=1, dtype=torch.float64, sigmas=(0.01, 0.3))
    assert max(errs.values()) < 1e-9, errs


@pytest.mark.parametrize("H,W,R,fc,P,singular", [(8, 8, 8.0, 0.0, 3, True), (16, 16, 8.0, 0.04, 5, True),
                                                 (8, 8, 2.0, 0.25, 3, False)])
def test_patch_covariance_rank(H, W, R, fc, P, singular):
    """rank Π K Πᵀ = P·min(P, kept columns) (course/09_mri.md), from the oracle's explicit matrices."""
    mask = line_mask(H, W, R, fc, "random", seed=int(R))
    Kd = O.kspace_matrix(mask, (1, H, W))
    Pi = O.patch_matrix(0, P, (1, H, W))
    s = np.linalg.svd(Pi @ Kd @ Pi.T, compute_uv=False)
    rank = int((np.sqrt(s) > O.RANK_RTOL * np.sqrt(s.max())).sum())
    cols = len(kept_columns(mask))
    assert rank == P * min(P, cols)
    assert (rank < P * P) == singular
    lam = torch.linalg.eigvalsh(KSpaceSampling(mask).patch_covariance(H, W, P))
    assert np.abs(np.sort(lam.numpy()) - np.sort(s)).max() < 1e-10


# ------------------------------------------------------------------------------------------
# Settings and the command line
# ------------------------------------------------------------------------------------------
def test_mri_settings_and_problem_names():
    quick = profiles.get_profile("quick")
    assert profiles.mri_settings(quick) == profiles.MRI_QUICK
    kw = experiments.problem_settings("mri:8", quick)
    assert kw == {"acceleration": 8.0, "center_fraction": 0.08, "mask_kind": "random"}
    assert experiments.problem_settings("denoising", quick) == {}
    A, B = experiments.problem_operators("mri:8", "pinv", quick)
    assert torch.equal(A.mask, line_mask(32, 32, 8.0, 0.08, "random", quick.seed)) and B is A
    assert experiments.network_settings("resnet", "mri:8", quick)["acceleration"] == 8.0
    assert "R = " in experiments.problem_description("mri", quick)
    with pytest.raises(ValueError, match="mri:R"):
        experiments.problem_settings("mri:fast", quick)
    for bad, match in [({"acceleration": 0.5}, "accelerations"), ({"center_fraction": 2.0}, "center_fraction"),
                       ({"mask_kind": "radial"}, "mask_kind"), ({"sigma": 0.0}, "sigma")]:
        with pytest.raises(ValueError, match=match):
            profiles.MRISettings(**{**vars(profiles.MRI_QUICK), **bad})


def test_cli_estimate_mri(tmp_path, capsys, one_thread):
    out = tmp_path / "est.pt"
    assert main(["estimate", "--profile", "quick", "--problem", "mri", "--B", "pinv", "--n-train", "8",
                 "--n-test", "1", "--patch-size", "3", "--sigma", "0.1", "--out", str(out)]) == 0
    assert "LE-MMSE (mri, B = pinv" in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    train = data.load("photos", "train", n=8, seed=0)
    K = problems.forward_operator("mri", 32, 32)
    assert torch.equal(saved["y"], operators.measure(K, saved["x"], 0.1, 0 + 1 + 1 + 2 * 100_000))  # seed + 1 + test + 2·σ·1e6
    assert torch.allclose(saved["x_hat"], le_mmse(saved["y"], train, 0.1, 3, A=K, B=K), atol=1e-6)


def test_random_masks_of_one_seed_are_nested():
    """The pairs are drawn in one seeded order, so a higher R keeps a prefix: its lines are among
    those of every lower R (course/09_mri.md, the R sweep)."""
    cols = [set(kept_columns(line_mask(8, 32, R, 0.08, "random", 0))) for R in (2, 4, 8)]
    assert cols[2] < cols[1] < cols[0]
