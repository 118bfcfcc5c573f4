"""N_eff (course/08_generalisation.md, eq-n-eff) by the histogram-and-collect passes of
lemmse_lite.estimators.diagnostics against a brute-force sort.

The passes see score blocks through a consumer; here a synthetic ``run`` feeds them known float32
scores, and the reference sorts the same weights ``w = exp(s − log Σ exp s)`` (float32 weights, the
package's definition; τ = 1 counts the non-zero ones) in descending order and sums them in float64.
Cases: spread, peaked, heavy-tailed weights, exact ties (many equal scores), near-ties (split by a
second histogram level), τ = 1, and the end-to-end ``le_mmse`` diagnostics on tiny images with
duplicated training images against the float64 oracle's weights.
"""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
import torch

from lemmse_lite.estimators import diagnostics as D
from lemmse_lite.estimators import le_mmse

TAUS = (0.1, 0.5, 0.9, 0.99, 0.999)


def brute_force(scores: torch.Tensor, log_norm: torch.Tensor, tau: float):
    """(Q, K) float32 scores -> (N_eff (Q,), margin (Q,)): the fewest largest float32 weights whose
    float64 sum reaches τ − 1e-6; margin = distance of the sorted cumsums to that target."""
    w = (scores - log_norm[:, None]).exp().double()
    if tau >= 1:
        return (w > 0).sum(1), torch.full((len(w),), np.inf, dtype=torch.float64)
    cs = torch.sort(w, dim=1, descending=True).values.cumsum(1)
    target = tau - 1e-6
    n = (cs < target).sum(1) + 1
    return torch.minimum(n, torch.tensor(w.shape[1])), (cs - target).abs().amin(1)


def synthetic_run(scores: torch.Tensor, key_block: int = 37, query_block: int = 5):
    """A ``run(consumer, progress)`` feeding ``scores`` (Q, K) in blocks, like the engine does."""
    def run(consumer, progress=None):
        q, k = scores.shape
        for k0 in range(0, k, key_block):
            for q0 in range(0, q, query_block):
                block = scores[q0 : q0 + query_block, k0 : k0 + key_block].clone()
                rows = slice(q0, min(q0 + query_block, q)) if q0 % 2 == 0 else torch.arange(q0, min(q0 + query_block, q))
                consumer.update(rows, block, None, None)
        return 1
    return run


def package(scores: torch.Tensor, tau: float) -> torch.Tensor:
    log_norm = torch.logsumexp(scores.double(), 1).float()
    top = scores.amax(1) - log_norm
    n_keys = torch.full((len(scores),), float(scores.shape[1]), dtype=torch.float64)
    return D.effective_patches_pass(synthetic_run(scores), log_norm, top, n_keys, tau), log_norm


def score_sets():
    g = torch.Generator().manual_seed(0)
    q, k = 12, 900
    spread = -torch.rand(q, k, generator=g) * 3  # N_eff near K
    peaked = -torch.randn(q, k, generator=g).abs() * 40  # a few keys carry the mass
    tail = -torch.log1p(torch.rand(q, k, generator=g) * 1e6)  # heavy tail over many decades
    ties = torch.zeros(q, k)  # every weight equal
    ties[:, :100] = 2.0  # ... with a block of larger equal weights
    ties[3] = torch.linspace(0, -5, k).round()  # six tie levels
    near = -(torch.arange(k).float() * 1e-5).repeat(q, 1)  # near-ties, 1e-5 nats apart
    return {"spread": spread, "peaked": peaked, "tail": tail, "ties": ties, "near-ties": near}


@pytest.mark.parametrize("tau", TAUS + (1.0,))
@pytest.mark.parametrize("name", list(score_sets()))
def test_neff_passes_match_brute_force(name, tau):
    scores = score_sets()[name]
    got, log_norm = package(scores, tau)
    ref, margin = brute_force(scores, log_norm, tau)
    ok = margin > 1e-5
    assert ok.float().mean() >= 0.5, "the case must not be ambiguous at most queries"
    torch.testing.assert_close(got[ok], ref[ok], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ties", "near-ties", "spread"])
def test_neff_split_and_tie_paths(name, monkeypatch):
    """A collection budget too small for the critical bin forces the second histogram level (near
    ties: split exactly) and the tie rule (exact ties: the gap divided by the common weight)."""
    monkeypatch.setattr(D, "COLLECT_BUDGET", 1)
    monkeypatch.setattr(D, "MIN_COLLECT", 4)
    scores = score_sets()[name]
    for tau in (0.5, 0.99):
        got, log_norm = package(scores, tau)
        ref, margin = brute_force(scores, log_norm, tau)
        ok = margin > 1e-5
        assert ok.any()
        torch.testing.assert_close(got[ok], ref[ok], rtol=0, atol=0)


def counting_run(scores):
    run, calls = synthetic_run(scores), []

    def counted(consumer, progress=None):
        calls.append(type(consumer).__name__)
        return run(consumer, progress)
    return counted, calls


@pytest.mark.parametrize("tau", (0.5, 0.99))
def test_neff_one_pass_when_few_weights_pass_the_floor(tau, monkeypatch):
    """Queries with at most ``cap`` weights above the floor are counted from the first pass; the
    others (here: a mixed set, half peaked, half spread) take the histogram path; all are exact."""
    sets = score_sets()
    monkeypatch.setattr(D, "COLLECT_BUDGET", 1)
    monkeypatch.setattr(D, "MIN_COLLECT", 200)  # cap: above the peaked rows' counts (~90-120), below the spread ones' (900)
    for scores, n_passes in ((sets["peaked"], 1), (torch.cat([sets["peaked"], sets["spread"]]), 2)):
        log_norm = torch.logsumexp(scores.double(), 1).float()
        top = scores.amax(1) - log_norm
        n_keys = torch.full((len(scores),), float(scores.shape[1]), dtype=torch.float64)
        run, calls = counting_run(scores)
        got = D.effective_patches_pass(run, log_norm, top, n_keys, tau)
        assert len(calls) == n_passes
        ref, margin = brute_force(scores, log_norm, tau)
        ok = margin > 1e-5
        assert ok.float().mean() > 0.5
        torch.testing.assert_close(got[ok], ref[ok], rtol=0, atol=0)


def threaded_run(scores: torch.Tensor, key_block: int = 37, query_block: int = 3, workers: int = 4):
    """Like :func:`synthetic_run`, but the query slices are shared out to ``workers`` threads, as
    the engine does on CPU (each slice's key blocks in order, by one thread)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(consumer, progress=None):
        q, k = scores.shape

        def work(q0):
            rows = slice(q0, min(q0 + query_block, q))
            for k0 in range(0, k, key_block):
                consumer.update(rows, scores[rows, k0 : k0 + key_block].clone(), None, None)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(0, q, query_block)))
        return 1
    return run


@pytest.mark.parametrize("name", ["peaked", "spread", "tail"])
def test_neff_exact_when_fed_from_several_threads(name):
    """Collected scores must stay paired with their rows when threads append concurrently (they
    once were two lists appended separately: another thread could slip in between)."""
    scores = torch.cat([score_sets()[name]] * 4)  # 48 queries, many concurrent slices
    log_norm = torch.logsumexp(scores.double(), 1).float()
    top = scores.amax(1) - log_norm
    n_keys = torch.full((len(scores),), float(scores.shape[1]), dtype=torch.float64)
    for tau in (0.5, 0.99):
        ref, margin = brute_force(scores, log_norm, tau)
        ok = margin > 1e-5
        for _ in range(3):
            got = D.effective_patches_pass(threaded_run(scores), log_norm, top, n_keys, tau)
            torch.testing.assert_close(got[ok], ref[ok], rtol=0, atol=0)


def test_neff_single_weight_and_all_equal():
    one = torch.full((3, 50), -1000.0)
    one[:, 7] = 0.0
    for tau in (0.5, 0.99):
        got, _ = package(one, tau)
        assert torch.all(got == 1)
    equal = torch.zeros(2, 1000)
    got, _ = package(equal, 0.99)
    assert torch.all(got == 990)  # 990 weights of 1e-3 reach 0.99 − 1e-6
    got, _ = package(equal, 1.0)
    assert torch.all(got == 1000)


def test_neff_end_to_end_with_duplicate_training_images():
    """le_mmse on 8×8 images whose training set repeats images (exact score ties), B = I, against
    the float64 oracle's sorted weights."""
    train = O.smooth_images(3, 1, 8, 8, seed=3)
    train = torch.cat([train, train[:2], train[:1]])  # duplicates: ties between images
    y = train[:1] + 0.05 * torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _, diag = le_mmse(y, train, 0.1, 3, return_diagnostics=True)
    _, ref = O.oracle_le_mmse_identity(y[0], train, 0.1, 3, return_diagnostics=True)
    for tau in (0.5, 0.9, 0.99):
        ok = ref.cumsum_margin(tau) > 1e-4
        assert ok.mean() > 0.5
        np.testing.assert_array_equal(diag.effective_patches(tau)[0].numpy()[ok], ref.effective_patches(tau)[ok])
    wflat = ref.weights.reshape(64, -1)
    ok = np.all((wflat == 0) | (wflat > 1e-30), axis=1).reshape(8, 8)
    np.testing.assert_array_equal(diag.effective_patches(1.0)[0].numpy()[ok], ref.effective_patches(1.0)[ok])


def test_log_density_terms():
    sigma = torch.tensor([0.1, 0.2], dtype=torch.float64)
    torch.testing.assert_close(D.log_density_constant(9, sigma), -4.5 * torch.log(2 * np.pi * sigma**2))
    got = D.log_density(torch.tensor([0.0, 1.0]), 10, torch.tensor([16.0, 64.0]))
    torch.testing.assert_close(got, torch.tensor([-np.log(160.0), 1.0 - np.log(640.0)]).float())


@pytest.mark.parametrize("density", [0.0, 0.01, 0.21, 1.0])
def test_flat_nonzero_is_torch_nonzero(density):
    """The N_eff passes' survivor positions (NumPy on the CPU) equal torch.nonzero's, in order."""
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(64, 512, generator=g) < density
    got = D._flat_nonzero(mask)
    assert got.dtype == torch.long
    assert torch.equal(got, torch.nonzero(mask.view(-1)).view(-1))
