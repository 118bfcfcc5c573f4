"""Smoke tests of the benchmark scripts (``benchmarks/*.py --small``) and of the baselines.

The scripts are imported and their ``main(["--small", ...])`` called in this process (one torch
import for all); ``memory.py --small`` runs its cases in-process too. Each checks the printed table
headers and the JSON file, and what a bug would break: the speed ratios are the quotients of the
timings of the same run, the accuracy verdicts follow from their errors, the N_eff table agrees
with the float64 oracle of tests/oracles.py. Total well under a minute on a quiet 2-core machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(name, capsys, tmp_path, extra=()):
    out_json = tmp_path / f"{name}.json"
    _module(name).main(["--small", "--json", str(out_json), *extra])
    text = capsys.readouterr().out
    assert out_json.exists()
    return text, json.loads(out_json.read_text())


def test_baselines_agree_with_float64_and_package():
    bl = _module("baselines")
    from lemmse_lite.estimators import le_mmse

    g = torch.Generator().manual_seed(0)
    train = torch.rand(5, 1, 8, 8, generator=g)
    x = torch.rand(2, 1, 8, 8, generator=g)
    s = 0.2
    y = x + s * torch.randn(x.shape, generator=g)
    ref = bl.float64_le_mmse(y, train, s, 3)
    assert ref.dtype == torch.float64 and ref.shape == y.shape
    assert (le_mmse(y.double(), train.double(), s, 3) - ref).abs().max() < 1e-10
    assert (bl.straightforward_le_mmse(y, train, s, 3, key_chunk=100).double() - ref).abs().max() < 1e-5
    # float16 distances: close but visibly less accurate
    err16 = (bl.paper_style_le_mmse(y, train, s, 3, train_batch=2).double() - ref).abs().max()
    assert err16 < 0.05


def test_cpu_speed_small(capsys, tmp_path):
    text, res = _run("cpu_speed", capsys, tmp_path)
    for header in ("== CPU speed ==", "== Accuracy ==", "== Batching ==", "ratio vs paper style",
                   "ratio vs straightforward", "s/image", "le_mmse err"):
        assert header in text
    # the ratios are the quotients of the timings measured in this run, rows and summary agree
    rows = {r["method"]: r for r in res["speed"]["rows"]}
    assert set(rows) == {"le_mmse", "paper_style", "straightforward"}
    for r in rows.values():
        assert r["seconds"] > 0 and r["s/image"] == pytest.approx(r["seconds"] / r["images timed"])
    assert rows["le_mmse"]["images timed"] == res["args"]["n_test"]
    for key, method in (("vs_paper_style", "paper_style"), ("vs_straightforward", "straightforward")):
        expected = rows[method]["s/image"] / rows["le_mmse"]["s/image"]
        assert res["speed"]["ratios"][key] == pytest.approx(expected)
        assert rows[method]["speed-up of le_mmse"] == pytest.approx(expected)
    # every accuracy row passes, and its verdict is its own err <= tol
    assert len(res["accuracy"]) >= 8
    for row in res["accuracy"]:
        assert (row["ok"] == "PASS") == (row["le_mmse err"] <= row["tol"]), row
        assert row["ok"] == "PASS", row


def test_memory_small(capsys, tmp_path):
    text, res = _run("memory", capsys, tmp_path)
    assert "== Memory ==" in text and "ratio large/small" in text
    assert len(res["cases"]) == 3


def test_gpu_small_runs_on_any_device(capsys, tmp_path):
    text, res = _run("gpu", capsys, tmp_path)
    for header in ("== GPU throughput ==", "== GPU accuracy ==", "TFLOP/s", "paper_style", "straightforward"):
        assert header in text
    assert res["max_abs_err_float32"] < 1e-4
    assert torch.backends.cuda.matmul.allow_tf32 is False


def _oracle_operators(kernel, shape):
    """The benchmark's (name, B) list as dense float64 matrices built by tests/oracles.py."""
    import oracles

    A = oracles.blur_matrix(kernel.numpy(), shape)
    pre = {"None (B = I)": None, "A.T": oracles.adjoint_matrix(A)}
    pre.update({f"A.tikhonov({e:g})": oracles.tikhonov_matrix(A, e) for e in (1e-1, 1e-2, 1e-3)})
    return A, pre


def test_effective_patches_small_agrees_with_the_float64_oracle(capsys, tmp_path):
    """Each row's N_eff statistics are recomputed from the float64 oracle's weights (explicit
    matrices, tests/oracles.py) on the same measurement: median and 90th percentile exactly, the
    mean to 1 % (a near-tie at the 0.99 threshold may move one pixel by one)."""
    import numpy as np

    noisy = _module("baselines").noisy
    from lemmse_lite.data import load
    from lemmse_lite.operators import Blur, gaussian_kernel

    sys.path.insert(0, str(Path(__file__).parent))
    import oracles

    text, res = _run("effective_patches", capsys, tmp_path, extra=("--sigmas", "0.05"))
    assert "== Effective patches ==" in text and "median N_eff" in text
    train = load("photos", "train", n=12, size=16)
    x = load("photos", "test", n=1, size=16)
    kernel = gaussian_kernel(1.0)
    y = noisy(x, 0.05, seed=0, A=Blur(kernel))
    A, pre = _oracle_operators(kernel, (1, 16, 16))
    assert [r["B"] for r in res["rows"]] == list(pre) and all(r["sigma"] == 0.05 for r in res["rows"])
    for row in res["rows"]:
        _, diag = oracles.oracle_le_mmse(y[0], train, 0.05, 5, A=A, B=pre[row["B"]], return_diagnostics=True)
        n_eff = diag.effective_patches(0.99).astype(np.float64)
        assert row["median N_eff"] == np.median(n_eff), row["B"]
        assert row["p90 N_eff"] == np.quantile(n_eff, 0.9), row["B"]
        assert row["mean N_eff"] == pytest.approx(n_eff.mean(), rel=1e-2), row["B"]


def test_peers_small(capsys, tmp_path):
    """``peers.py --small`` without the peer (as when deepinv is absent), and with it when it is
    installed: our errors pass their budget, the ratio is the quotient of this run's medians."""
    import importlib.util
    import statistics

    text, res = _run("peers", capsys, tmp_path, extra=("--peer", "none"))
    assert "--peer none: the peer columns are skipped" in text and "== Ideal MMSE vs deepinv" in text
    for row in res["mmse"]:
        assert row["deepinv s"] == "skipped" and row["ours s"] == statistics.median(row["ours times"])
        assert (row["ours ok"] == "PASS") == (row["ours err"] <= row["budget"]) and row["ours ok"] == "PASS"
    if importlib.util.find_spec("deepinv") is None:
        assert "not installed" in _module("peers").SKIP_MESSAGE
        return
    _, res = _run("peers", capsys, tmp_path)
    for row in res["mmse"]:
        t_peer, t_ours = statistics.median(row["deepinv times"]), statistics.median(row["ours times"])
        assert row["t_deepinv / t_ours"] == pytest.approx(t_peer / t_ours)
        assert len(row["ours times"]) == len(row["deepinv times"]) == res["args"]["repeats"]


@pytest.mark.parametrize("name, flag", [("convergence", "--factors"), ("p_eff_width", "--widths")])
def test_network_study_flags_are_checked(name, flag, capsys):
    mod = _module(name)
    for bad in ([flag, "0"], ["--n", "1"]):
        with pytest.raises(SystemExit):
            mod.parse(bad)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert bad[0] in err and "must be" in err, err


def test_run_study_prints_and_writes_every_row(tmp_path, capsys):
    bl = _module("baselines")
    args = bl.network_study_args(["--widths", "2", "3", "--n", "4", "--json", str(tmp_path / "r.json")],
                                 "doc", "widths", [1], "help")
    rows = bl.run_study(args, args.widths, lambda w, prof, n: [{"width": w, "n": n, "steps": prof.train_steps}],
                        ["width", "n"])
    assert rows == json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [r["width"] for r in rows] == [2, 3] and all(r["n"] == 4 for r in rows)
    assert "width" in capsys.readouterr().out
