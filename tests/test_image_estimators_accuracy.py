"""MMSE and E-MMSE at realistic sizes against the float64 oracles of tests/oracles.py.

The image estimators screen every (query, key) pair with float32 scores and compute the log-weights
of the candidates in float64 (`course/01_ideal_mmse.md`, `eq-mmse-b`; `course/03_equivariance.md`,
`eq-emmse-b`). Budget (the one of every estimator): max abs error ≤ 1e-5 at σ ≥ 0.05, ≤ 1e-4 at
σ = 0.01. The cases are chosen so that a screening or rescoring bug shows: grey 32×32 photo crops
(n = 1024, where whole-image float32 distances cancel badly), near-duplicate training images (the
weights spread over several keys at every σ), a large σ (most keys are candidates: the dense
rescoring path), the ε-mask (keys scaled by 1/ε on the hole) and a streamed training set.
"""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
import torch

from lemmse_lite.data import load
from lemmse_lite.estimators import equivariant_mmse, mmse, rounding_slack
from lemmse_lite.estimators.engine import augment_keys, augment_queries
from lemmse_lite.operators import Inpainting, center_box_mask, eps_mask, measure

SIGMAS = (0.01, 0.05, 0.2)


def budget(sigma: float) -> float:
    return 1e-4 if sigma < 0.05 else 1e-5


def photo_set(n_train: int, n_test: int, size: int = 32, seed: int = 0):
    """Training crops plus near duplicates of the test crops (amplitudes 0.001, 0.003, 0.01 of
    smooth perturbations): ``(train (N, 1, s, s), test (n_test, 1, s, s))``."""
    train = load("photos", "train", n=n_train, size=size)
    test = load("photos", "test", n=n_test, size=size)
    bumps = O.smooth_images(3 * n_test, 1, size, size, seed=seed) - 0.5
    amp = torch.tensor([0.001, 0.003, 0.01]).repeat(n_test)[:, None, None, None]
    near = (test.repeat_interleave(3, 0) + amp * bumps).clamp(0, 1)
    return torch.cat([train, near]), test


def tied_pairs(y: torch.Tensor, sig: torch.Tensor, seed: int) -> torch.Tensor:
    """Two training images ``y_b ± d_b`` per measurement, ``d_b`` a smooth bump of per-pixel rms
    0.7 σ_b: exactly tied, nearer to ``y_b`` than any crop, and different from each other by
    ~σ per pixel, so that a score error δ moves the estimate by ~δσ/2 (what float32 whole-image
    scores get wrong: δ ~ 1e-3 nats at σ = 0.05)."""
    b, c, h, w = y.shape
    bump = O.smooth_images(b, c, h, w, seed=seed) - 0.5
    bump = bump / bump.flatten(1).std(1)[:, None, None, None]
    d = 0.7 * sig[:, None, None, None] * bump
    return torch.cat([y + d, y - d])


def oracle(est, y, train, sig, A=None, B=None):
    fn = O.oracle_mmse if est == "mmse" else O.oracle_emmse
    return np.stack([fn(y[b], train, float(sig[b]), A, B) for b in range(len(y))])


def errors_per_sigma(out, ref, sig):
    """Max abs error over the measurements of each σ (``sig``: one σ per measurement)."""
    err = np.abs(out.double().numpy() - ref).reshape(len(sig), -1).max(1)
    worst: dict = {}
    for s, e in zip(sig.tolist(), err.tolist()):
        worst[s] = max(worst.get(s, 0.0), e)
    return worst


def over_budget(errs):
    return {s: e for s, e in errs.items() if not e <= budget(s)}


def test_mmse_32x32_photos_with_near_duplicates():
    train, test = photo_set(300, 2)
    sig = torch.tensor(SIGMAS).repeat_interleave(2)
    x = test.repeat(len(SIGMAS), 1, 1, 1)
    y = measure(None, x, sig, 1)
    train = torch.cat([train, tied_pairs(y, sig, 10)])
    out = mmse(y, train, sig)
    assert out.dtype == torch.float32 and out.shape == y.shape
    errs = errors_per_sigma(out, oracle("mmse", y, train, sig), sig)
    assert not over_budget(errs), errs


def test_mmse_32x32_streamed_and_large_sigma():
    """Chunks of 64 (the candidates of several chunks merged) and σ = 1, where most keys are
    candidates and blocks are rescored densely."""
    train, test = photo_set(200, 2, seed=1)
    sig = torch.tensor([0.05, 1.0])
    y = measure(None, test, sig, 2)
    train = torch.cat([train[:100], tied_pairs(y[:1], sig[:1], 11), train[100:]])  # σ = 1: crops only
    out = mmse(y, iter(train.split(64)), sig)
    ref = oracle("mmse", y, train, sig)
    errs = errors_per_sigma(out, ref, sig)
    assert not over_budget(errs), errs


def test_mmse_32x32_inpainting_eps_mask():
    """Centre-box inpainting with B = the ε-mask (ε = 0.01: B⁺ scales the hole by 100, the key
    norms and the rounding bound with it)."""
    train, test = photo_set(200, 1, seed=2)
    mask = center_box_mask(32, 32, 8)
    A, B = Inpainting(mask), Inpainting(eps_mask(mask, 0.01))
    Ad, Bd = O.mask_matrix(mask, (1, 32, 32)), O.eps_mask_matrix(mask, 0.01, (1, 32, 32))
    sig = torch.tensor([0.01, 0.05, 0.2])
    x = test.repeat(3, 1, 1, 1)
    y = measure(A, x, sig, 3)
    train = torch.cat([train, A(tied_pairs(y, sig, 12))])
    out = mmse(y, train, sig, A=A, B=B)
    errs = errors_per_sigma(out, oracle("mmse", y, train, sig, Ad, Bd), sig)
    assert not over_budget(errs), errs


def test_equivariant_mmse_16x16_photos_with_near_duplicates():
    """Every circular shift of the query (256 per measurement): the shifted near duplicates
    compete across shifts as well as across images."""
    train, test = photo_set(40, 1, size=16, seed=3)
    train = torch.cat([train, torch.roll(train[-3:], (3, 5), (-2, -1))])
    sig = torch.tensor(SIGMAS)
    y = measure(None, test.repeat(3, 1, 1, 1), sig, 4)
    train = torch.cat([train, torch.roll(tied_pairs(y, sig, 13), (2, 7), (-2, -1))])
    out = equivariant_mmse(y, train, sig)
    errs = errors_per_sigma(out, oracle("emmse", y, train, sig), sig)
    assert not over_budget(errs), errs


@pytest.mark.parametrize("sigma", [0.01, 0.2])
def test_rounding_slack_bounds_the_float32_scores(sigma):
    """The bound used to pick the candidates holds for the engine's float32 scores of centred
    32×32 crops (q·k − ‖k‖²/2)/σ², against the same quantity in float64; and it is not vacuous."""
    train = load("photos", "train", n=500).flatten(1)
    y = measure(None, load("photos", "test", n=8), sigma, 5).flatten(1)
    centre = train[0]
    q, k = y - centre, train - centre
    iv = torch.full((len(q),), 1.0 / sigma**2)
    s32 = (augment_queries(q, iv, torch.zeros(len(q))) @ augment_keys(k).T).double()
    q64, k64 = q.double(), k.double()
    s64 = (q64 @ k64.T - 0.5 * (k64 * k64).sum(1)[None]) / sigma**2
    slack = rounding_slack(q.shape[1], q64.norm(dim=1), float(k64.norm(dim=1).max()), iv.double())
    err = (s32 - s64).abs().amax(1)
    assert torch.all(err <= slack), (err, slack)
    assert torch.all(slack < 1e4 * err.clamp_min(1e-12)), "the bound is far looser than the error"


def test_mmse_keeps_every_key_of_non_negligible_weight():
    """Keys ``y + a_j e_{p_j}`` (one pixel each) with log-weights exactly ``−t_j``, t_j = 0, 2, …,
    30 nats: a key at −10 nats still moves its pixel by ~4e-5, so a screening that drops keys
    within a few tens of nats of the best fails the budget."""
    sigma = 0.2
    y = measure(None, load("photos", "test", n=1), sigma, 6)
    t = torch.arange(0.0, 31.0, 2.0)
    a = (2 * sigma**2 * t).sqrt()
    train = y.repeat(len(t), 1, 1, 1)
    pixels = torch.arange(len(t)) * 37
    train.view(len(t), -1)[torch.arange(len(t)), pixels] += a
    out = mmse(y, torch.cat([train, load("photos", "train", n=100)]), sigma)
    ref = oracle("mmse", y, torch.cat([train, load("photos", "train", n=100)]), torch.tensor([sigma]))
    err = float(np.abs(out.double().numpy() - ref).max())
    assert err <= budget(sigma), err
