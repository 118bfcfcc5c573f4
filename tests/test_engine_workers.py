"""The engine's worker threads (EngineConfig.workers): query slices are shared out to threads that
run single-threaded ops, so a busy machine does not stall every op on a barrier. Each query is
processed by one thread with the keys in order, so the result must not depend on the worker count."""

import pytest
import torch

from lemmse_lite import operators
from lemmse_lite.engine import EngineConfig
from lemmse_lite.estimators import equivariant_mmse, le_mmse


def _problem(seed=0):
    gen = torch.Generator().manual_seed(seed)
    train = torch.rand(6, 1, 12, 12, generator=gen)
    x = torch.rand(2, 1, 12, 12, generator=gen)
    return train, x


@pytest.mark.parametrize("problem", ["denoising", "inpainting"])
def test_le_mmse_is_bitwise_independent_of_workers(problem):
    train, x = _problem()
    A = operators.forward_operator(problem, 12, 12)
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
