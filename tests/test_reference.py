"""The chapters' float64 reference (lemmse_lite.estimators.reference) against the dense oracles of tests/oracles.py.

Each case is chosen so that the weights are mixed (no weight above 0.95): a one-hot softmax would
hide a wrong temperature. The reference must not touch the fast estimators (checked on its source).
"""

from __future__ import annotations

import ast
import inspect

import numpy as np
import oracles as O
import pytest
import torch

from lemmse_lite.estimators import reference
from lemmse_lite.operators import (
    Blur,
    Inpainting,
    center_box_mask,
    eps_mask,
    gaussian_kernel,
    random_mask,
)

C, H, W, N, P = 1, 6, 6, 4, 3


def _data(C=C, seed=0):
    train = O.smooth_images(N, C, H, W, seed=seed).double()
    y = O.smooth_images(2, C, H, W, seed=seed + 1).double()
    return train, y


def _dense(op, shape):
    return None if op is None else op.matrix(shape).double().numpy()


@pytest.mark.parametrize("C_", [1, 2])
@pytest.mark.parametrize("op", [None, "blur", "mask"])
def test_mmse_and_emmse_match_oracles(C_, op):
    train, y = _data(C_)
    A = {
        None: None,
        "blur": Blur(gaussian_kernel(std=0.6, size=5)),
        "mask": Inpainting(random_mask(H, W, 0.3, seed=1)),
    }[op]
    Ad = _dense(A, (C_, H, W))
    sigma = 0.6
    x_ref, w = reference.mmse_reference(y, train, sigma, A=A)
    x_e, w_e = reference.emmse_reference(y, train, sigma, A=A)
    assert float(w.max()) < 0.95 and float(w_e.max()) < 0.95  # mixed weights
    for b in range(2):
        xo, wo = O.oracle_mmse(y[b], train, sigma, A=Ad, return_weights=True)
        np.testing.assert_allclose(x_ref[b].numpy(), xo, atol=1e-10)
        np.testing.assert_allclose(w[b].numpy(), wo, atol=1e-10)
        xo, wo = O.oracle_emmse(y[b], train, sigma, A=Ad, return_weights=True)
        np.testing.assert_allclose(x_e[b].numpy(), xo, atol=1e-10)
        np.testing.assert_allclose(w_e[b].numpy(), wo, atol=1e-10)


def _b(kind, shape):
    box = center_box_mask(H, W, 2)
    return {
        "identity": None,
        "mask": box,
        "eps": eps_mask(box, 0.1),
        "random": random_mask(H, W, 0.3, seed=2),
    }[kind]


@pytest.mark.parametrize("C_", [1, 2])
@pytest.mark.parametrize("kind", ["identity", "mask", "eps", "random"])
def test_le_mmse_matches_oracle(C_, kind):
    train, x = _data(C_)
    b = _b(kind, (C_, H, W))
    A = (
        None
        if kind == "identity"
        else Inpainting(center_box_mask(H, W, 2) if kind != "random" else b)
    )
    y = x if A is None else A(x)
    y = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(3), dtype=y.dtype)
    sigma = 0.15
    x_ref, w = reference.le_mmse_reference(y, train, sigma, P, A=A, b=b)
    if kind != "random":  # a random mask makes most locations their own group: nearly one-hot
        assert float(w.amax(dim=(2, 3)).median()) < 0.95  # mixed at most pixels
    Bd = None if b is None else Inpainting(b).matrix((C_, H, W)).double().numpy()
    for k in range(2):
        xo, diag = O.oracle_le_mmse(
            y[k], train, sigma, P, A=_dense(A, (C_, H, W)), B=Bd, return_diagnostics=True
        )
        np.testing.assert_allclose(x_ref[k].numpy(), xo, atol=1e-9)
        np.testing.assert_allclose(w[k].numpy(), diag.weights, atol=1e-9)


def test_patch_rows_follow_the_oracle_convention():
    u = torch.arange(2 * H * W, dtype=torch.float64).reshape(2, H, W)
    rows = reference.patch_matrix_rows(u, 3)
    for m in (0, 7, H * W - 1):
        Pi = O.patch_matrix(m, 3, (2, H, W))
        np.testing.assert_array_equal(rows[m].numpy(), Pi @ u.reshape(-1).numpy())


def test_a_wrong_temperature_is_visible():
    """The reference is sensitive to σ where the weights are mixed: σ·√2 moves the estimate."""
    train, y = _data()
    a, _ = reference.le_mmse_reference(y, train, 0.15, P)
    b, _ = reference.le_mmse_reference(y, train, 0.15 * 2**0.5, P)
    assert float((a - b).abs().max()) > 1e-2


def test_reference_is_independent_of_the_fast_code():
    tree = ast.parse(inspect.getsource(reference))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
    }
    assert imported <= {"__future__", "torch", "checks"}, imported


@pytest.mark.parametrize("bad, err", [("y", TypeError), (torch.zeros(3, 6, 6), ValueError)])
def test_bad_input(bad, err):
    train, _ = _data()
    with pytest.raises(err, match="y must"):
        reference.mmse_reference(bad, train, 0.1)
    with pytest.raises(ValueError, match="sigma"):
        reference.mmse_reference(train, train, 0.0)
    with pytest.raises(ValueError, match="P must"):
        reference.le_mmse_reference(train, train, 0.1, 4)
