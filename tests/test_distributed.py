"""lemmse_lite.estimators.distributed: the training set sharded over 2 processes (gloo, CPU, launched by
torchrun) gives the single-process LE-MMSE, log-density and source map; shard ranges; input errors."""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from lemmse_lite import data, estimators, problems
from lemmse_lite.estimators import distributed

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def test_shard_range_covers_once():
    for n, world in ((25, 2), (7, 3), (4, 4)):
        ranges = [distributed.shard_range(n, r, world) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    with pytest.raises(ValueError, match="cannot shard n=2 training images over world=3"):
        distributed.shard_range(2, 0, 3)
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, 2\)"):
        distributed.shard_range(5, 2, 2)


def test_needs_an_initialised_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    y = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="needs torch.distributed initialised"):
        distributed.le_mmse(y, torch.zeros(2, 1, 8, 8), 0.2, 3)


def test_two_processes_equal_one(tmp_path, problem="denoising"):
    """N = 25 images split 13 / 12 over two gloo ranks, against one process on all 25."""
    out = tmp_path / "sharded.pt"
    n, size, P, sigma = 25, 16, 3, 0.1
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lemmse_lite.estimators.distributed", "--n-train", str(n), "--n-test", "2", "--image-size", str(size),
           "--problem", problem, "--sigma", str(sigma), "--patch-size", str(P), "--backend", "gloo",
           "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "over 2 ranks (gloo), N = 25" in run.stdout
    got = torch.load(out)
    train = data.load("photos", "train", n=n, seed=0, size=size, grey=True)
    A = problems.forward_operator(problem, size, size)
    x_hat, diag = estimators.le_mmse(got["y"], train, sigma, P, A=A, return_diagnostics=True)
    assert got["world"] == 2
    assert (got["x_hat"] - x_hat).abs().max() <= 1e-6
    assert (got["log_density"] - diag.log_density).abs().max() <= 1e-4 * diag.log_density.abs().max()
    assert torch.equal(got["source_image"], diag.source_image)
    assert torch.equal(got["source_location"], diag.source_location)
    assert (got["source_image"] >= 13).any() and (got["source_image"] < 13).any()   # both shards win somewhere


def test_shard_stream_reads_only_the_shard():
    """Each rank's stream holds only its shard (n = stop - start), in batches, and the shards
    concatenated in rank order are data.load's first N images."""
    from lemmse_lite.estimators.distributed import shard_stream

    n, kw = 25, {"seed": 0, "size": 16, "grey": True}
    shards = [shard_stream("photos", n, rank, 2, batch_size=4, **kw) for rank in (0, 1)]
    assert [s.n for s in shards] == [13, 12]
    assert max(len(b) for s in shards for b in s) == 4
    got = torch.cat([torch.cat(list(s)) for s in shards])
    assert torch.equal(got, data.load("photos", "train", n=n, **kw))
