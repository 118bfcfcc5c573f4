"""The engine's worker threads (EngineConfig.workers): query slices are shared out to threads that
run single-threaded ops, so a busy machine does not stall every op on a barrier. Each query is
processed by one thread with the keys in order, so the result must not depend on the worker count."""

import pytest
import torch

from lemmse_lite import operators, problems
from lemmse_lite.estimators import equivariant_mmse, le_mmse
from lemmse_lite.estimators.engine import EngineConfig


def _problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    train = torch.rand(6, 1, 12, 12, generator=gen)
    x = torch.rand(2, 1, 12, 12, generator=gen)
    return train, x


@pytest.mark.parametrize("problem", ["denoising", "inpainting"])
def test_le_mmse_is_bitwise_independent_of_workers(problem):
    train, x = _problem()
    A = problems.forward_operator(problem, 12, 12)
    y = operators.measure(A, x, 0.1, 1)
    B = A if problem == "inpainting" else None
    # small query blocks so that several slices exist and every worker gets some
    outs = [le_mmse(y, train, 0.1, 3, A=A, B=B, engine=EngineConfig(query_block=16, key_block=64, workers=k))
            for k in (1, 2, 3)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_diagnostics_and_emmse_are_independent_of_workers():
    train, x = _problem(1)
    y = operators.measure(None, x, 0.2, 2)
    cfg1, cfg2 = (EngineConfig(query_block=8, key_block=32, workers=k) for k in (1, 2))
    a, da = le_mmse(y, train, 0.2, 5, return_diagnostics=True, engine=cfg1)
    b, db = le_mmse(y, train, 0.2, 5, return_diagnostics=True, engine=cfg2)
    assert torch.equal(a, b) and torch.equal(da.source_image, db.source_image)
    assert torch.equal(da.log_density, db.log_density)
    assert torch.equal(equivariant_mmse(y, train, 0.2, engine=cfg1), equivariant_mmse(y, train, 0.2, engine=cfg2))


def test_thread_count_is_restored():
    train, x = _problem()
    y = operators.measure(None, x, 0.1, 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        le_mmse(y, train, 0.1, 3, engine=EngineConfig(query_block=16, workers=2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_workers_rejected(workers):
    with pytest.raises(ValueError, match="workers"):
        EngineConfig(workers=workers)


def test_single_threaded_restores_the_count_when_two_threads_overlap():
    """Two estimator threads whose single-threaded blocks interleave (A enters, B enters, A exits,
    B exits) leave the caller's count, not the lowered one (a save/restore per call would not)."""
    import threading

    from lemmse_lite.estimators.engine import single_threaded

    before = torch.get_num_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with single_threaded():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def second():
        a_in.wait(5)
        with single_threaded():
            b_in.set()
            a_out.wait(5)

    threads = [threading.Thread(target=f) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert torch.get_num_threads() == before


def test_softmax_merge_of_two_halves_equals_one_pass():
    """SoftmaxState.merge of two finished softmaxes (the distributed and fused-kernel path) equals
    one update over all the keys: the one merge of the engine, in float64."""
    from lemmse_lite.estimators.engine import SoftmaxState

    gen = torch.Generator().manual_seed(0)
    scores = 30 * torch.randn(5, 40, generator=gen, dtype=torch.float64)
    values = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    whole = SoftmaxState(5, 3, "cpu", torch.float64)
    whole.update(slice(0, 5), scores.clone(), values.T, None)
    merged = SoftmaxState(5, 3, "cpu", torch.float64)
    for part in (slice(0, 13), slice(13, 40)):
        half = SoftmaxState(5, 3, "cpu", torch.float64)
        half.update(slice(0, 5), scores[:, part].clone(), values[part].T, None)
        merged.merge(slice(0, 5), half.result(), half.log_normaliser())
    expect = torch.softmax(scores, 1) @ values
    assert torch.allclose(whole.result(), expect, rtol=1e-12, atol=1e-12)
    assert torch.allclose(merged.result(), expect, rtol=1e-12, atol=1e-12)
    assert torch.allclose(merged.log_normaliser(), torch.logsumexp(scores, 1), rtol=1e-12)


def test_importing_the_estimators_installs_no_warnings_filter():
    """In a fresh interpreter: importing the package's estimators adds no filter of ours (the CSR
    'beta' notice is silenced around the call that raises it; third-party imports add their own)."""
    import subprocess
    import sys

    code = ("import warnings, lemmse_lite.estimators, lemmse_lite.cli; "
            "ours = [f for f in warnings.filters if f[1] is not None and 'Sparse CSR' in f[1].pattern]; "
            "assert not ours, ours")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-1000:]
