"""Smoke tests of the benchmark scripts (``benchmarks/*.py --small``) and of the baselines.

The scripts are imported and their ``main(["--small", ...])`` called in this process (one torch
import for all); ``memory.py --small`` runs its cases in-process too. Each checks the printed table
headers and the JSON file. Total well under a minute on a quiet 2-core machine.
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
    assert res["speed"]["ratios"]["vs_paper_style"] > 0
    # denoising path is accurate even at this tiny size
    for row in res["accuracy"]:
        if row["problem"] == "denoise B=I":
            assert row["le_mmse err"] <= row["tol"]


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


def test_effective_patches_small(capsys, tmp_path):
    text, rows = _run("effective_patches", capsys, tmp_path, extra=("--sigmas", "0.05"))
    assert "== Effective patches ==" in text and "median N_eff" in text
    assert len(rows["rows"]) == 5
    assert all(r["median N_eff"] >= 1 for r in rows["rows"])
