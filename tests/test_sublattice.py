"""The sub-lattice LE-MMSE (course/07_networks_vs_theory.md, eq-sublattice) against its float64
oracle (tests/oracles.py, written from the definition with explicit loops over (i, m)), on 8×8
images with stride s = 2 and several per-class windows; stride 1 without supports is exactly the
plain LE-MMSE; the window helper and the input errors.

Error budget as for le_mmse: ≤ 1e-5 max abs at σ ≥ 0.05 (1e-4 for a blur with B = Aᵀ).
"""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
import torch
from test_estimators_oracle import build_operators, make_data, tolerance

from lemmse_lite.estimators import le_mmse
from lemmse_lite.estimators.patches import crop_supports
from lemmse_lite.operators import DenseOperator

P = 5


def window(rows: int, cols: int, p: int = P) -> torch.Tensor:
    """A centred rows × cols box inside the p × p window."""
    w = torch.zeros(p, p, dtype=torch.bool)
    r = p // 2
    w[r - rows // 2 : r + rows // 2 + 1, r - cols // 2 : r + cols // 2 + 1] = True
    return w


def unet_like():
    """The per-class windows measured on a P = 5 U-Net: 3×3, 3×5, 5×3, 5×5."""
    return {(0, 0): window(3, 3), (0, 1): window(3, 5), (1, 0): window(5, 3), (1, 1): window(5, 5)}


def odd_shapes():
    """Windows that are not centred boxes: an L shape, a cross, one off-centre column, the full one."""
    ell = torch.zeros(P, P, dtype=torch.bool)
    ell[2, 1:] = True
    ell[:3, 4] = True
    cross = window(1, 5) | window(5, 1)
    col = torch.zeros(P, P, dtype=torch.bool)
    col[:, 3] = True
    return {(0, 0): ell, (0, 1): cross, (1, 0): col, (1, 1): window(5, 5)}


SUPPORTS = {"full": None, "unet": unet_like(), "shapes": odd_shapes()}
CASES = [
    ("denoise", None),
    ("box", None),
    ("blur", None),
    ("box", "mask"),
    ("random", "mask"),
    ("box", "eps"),
    ("blur", "tikhonov"),
    ("blur", "adjoint"),
]


def oracle(y, train, sigma, stride, supports, Ad, Bd):
    windows = None if supports is None else {k: v.numpy() for k, v in supports.items()}
    return np.stack([O.oracle_sublattice_le_mmse(y[b], train, sigma, P, stride, windows, Ad, Bd)
                     for b in range(y.shape[0])])


@pytest.mark.parametrize("sigma", [0.05, 0.2])
@pytest.mark.parametrize("support_name", list(SUPPORTS))
@pytest.mark.parametrize("op,pre", CASES, ids=[f"{o}-B={b or 'I'}" for o, b in CASES])
def test_sublattice_matches_oracle(op, pre, support_name, sigma):
    shape = (1, 8, 8)
    A, Ad, B, Bd = build_operators(op, pre, shape)
    train, _, y = make_data(shape, sigma, Ad)
    supports = SUPPORTS[support_name]
    out = le_mmse(y, train, sigma, P, A=A, B=B, stride=2, supports=supports)
    ref = oracle(y, train, sigma, 2, supports, Ad, Bd)
    err = np.abs(out.double().numpy() - ref).max()
    assert err <= tolerance(op, pre, sigma), f"max abs error {err:.3g}"


def test_sublattice_colour_and_dense_b():
    """C = 3 with a general (dense-matrix) B = Aᵀ of a blur: the dense per-location groups."""
    shape = (3, 8, 8)
    A, Ad, B, Bd = build_operators("blur", "adjoint", shape)
    train, _, y = make_data(shape, 0.1, Ad)
    dense = DenseOperator.from_operator(B, shape)
    out = le_mmse(y, train, 0.1, P, A=A, B=dense, stride=2, supports=unet_like())
    ref = oracle(y, train, 0.1, 2, unet_like(), Ad, Bd)
    assert np.abs(out.double().numpy() - ref).max() <= 1e-4


def test_stride_one_is_plain_le_mmse():
    shape = (1, 8, 8)
    A, Ad, B, _ = build_operators("box", "mask", shape)
    train, _, y = make_data(shape, 0.1, Ad)
    plain, d1 = le_mmse(y, train, 0.1, 3, A=A, B=B, return_diagnostics=True)
    same, d2 = le_mmse(y, train, 0.1, 3, A=A, B=B, stride=1, supports=None, return_diagnostics=True)
    assert torch.equal(plain, same)
    assert torch.equal(d1.log_density, d2.log_density)


def test_full_window_dict_equals_no_supports():
    shape = (1, 8, 8)
    A, Ad, B, _ = build_operators("blur", "tikhonov", shape)
    train, _, y = make_data(shape, 0.1, Ad)
    full = {(a, b): torch.ones(P, P, dtype=torch.bool) for a in range(2) for b in range(2)}
    a = le_mmse(y, train, 0.1, P, A=A, B=B, stride=2)
    b = le_mmse(y, train, 0.1, P, A=A, B=B, stride=2, supports=full)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_sublattice_differs_from_plain():
    """The restriction to one class matters (else the tests above could not tell them apart)."""
    shape = (1, 8, 8)
    _, Ad, _, _ = build_operators("denoise", None, shape)
    train, _, y = make_data(shape, 0.2, Ad)
    plain = le_mmse(y, train, 0.2, P)
    sub = le_mmse(y, train, 0.2, P, stride=2)
    assert (plain - sub).abs().max() > 1e-3


def test_sublattice_diagnostics_log_density_normalised_per_class():
    """With one training image equal to the query's image and σ small, every pixel's source is itself
    and lies in its own class; the log-density uses L = H·W/s² locations."""
    shape = (1, 8, 8)
    train, _, _ = make_data(shape, 0.05, O.identity_matrix(shape))
    y = train[1:2].clone()
    _, diag = le_mmse(y, train, 0.01, 3, stride=2, return_diagnostics=True)
    loc = diag.source_location[0]
    n = torch.arange(64).reshape(8, 8)
    assert torch.equal(loc, n) and torch.all(diag.source_image == 1)
    # log p of the exact match ≈ −(r/2) log(2πσ²) − log(N·L), r = 9, L = 16
    expected = -4.5 * np.log(2 * np.pi * 0.01**2) - np.log(len(train) * 16)
    assert abs(float(diag.log_density.median()) - expected) < 0.05


# ----------------------------------------------------------------------------- crop_supports

def test_crop_supports_crops_the_centred_window():
    field = torch.zeros(16, 16, dtype=torch.bool)
    field[7:10, 6:11] = True  # a 3×5 field around (8, 8)
    out = crop_supports({(0, 1): field}, 5)
    assert list(out) == [(0, 1)] and out[(0, 1)].shape == (5, 5)
    assert torch.equal(out[(0, 1)], window(3, 5))


def test_crop_supports_rejects_a_field_outside_the_window():
    field = torch.zeros(16, 16, dtype=torch.bool)
    field[8, 8] = field[8, 12] = True
    with pytest.raises(ValueError, match="outside"):
        crop_supports({(0, 0): field}, 5)


def test_crop_supports_rejects_bad_input():
    with pytest.raises(TypeError, match="fields_hw"):
        crop_supports([], 5)
    with pytest.raises(ValueError, match="supports keys"):
        crop_supports({(0,): torch.ones(8, 8, dtype=torch.bool)}, 5)
    with pytest.raises(ValueError, match="patch_size"):
        crop_supports({(0, 0): torch.ones(8, 8, dtype=torch.bool)}, 4)


# ----------------------------------------------------------------------------- input errors

def _data():
    train, _, y = make_data((1, 8, 8), 0.1, O.identity_matrix((1, 8, 8)))
    return y, train


def test_stride_must_divide_the_image():
    y, train = _data()
    with pytest.raises(ValueError, match="stride must divide"):
        le_mmse(y, train, 0.1, 3, stride=3)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_stride_must_be_a_positive_int(bad):
    y, train = _data()
    with pytest.raises(ValueError, match="stride"):
        le_mmse(y, train, 0.1, 3, stride=bad)


def test_supports_errors():
    y, train = _data()
    with pytest.raises(ValueError, match="missing"):
        le_mmse(y, train, 0.1, P, stride=2, supports={(0, 0): window(3, 3)})
    with pytest.raises(ValueError, match=r"supports\[\(0, 0\)\]"):
        le_mmse(y, train, 0.1, P, stride=2, supports={**unet_like(), (0, 0): window(3, 3, 3)})
    with pytest.raises(TypeError, match="bool"):
        le_mmse(y, train, 0.1, P, stride=2, supports={**unet_like(), (0, 0): window(3, 3).float()})
    with pytest.raises(ValueError, match="empty"):
        le_mmse(y, train, 0.1, P, stride=2, supports={**unet_like(), (1, 1): torch.zeros(P, P, dtype=torch.bool)})
    with pytest.raises(ValueError, match="not a class"):
        le_mmse(y, train, 0.1, P, stride=2, supports={**unet_like(), (2, 0): window(3, 3)})
    with pytest.raises(TypeError, match="supports"):
        le_mmse(y, train, 0.1, P, stride=2, supports=[window(3, 3)])
