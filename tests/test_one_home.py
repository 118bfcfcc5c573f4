"""One home per mechanism (issue 26): the σ rules, the measurement seed rule, the problem registry,
the shard of a stream, the code a cache key covers, the bounded spectrum cache and the download
that leaves the caller's sockets alone."""

import socket

import pytest
import torch

from lemmse_lite import checks, data, operators, problems, profiles, store

# ----------------------------------------------------------------------------- sigma

@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf")])
def test_check_sigma_value_refuses_what_check_sigma_refuses(bad):
    with pytest.raises(ValueError, match="s must be positive and finite"):
        checks.check_sigma_value(bad, "s")
    with pytest.raises(ValueError, match="s must be positive and finite"):
        checks.check_sigma(bad, 1, name="s")


def test_check_sigma_range():
    assert checks.check_sigma_range((0.05, 0.3)) == (0.05, 0.3)
    assert checks.check_sigma_range(0.2) == (0.2, 0.2)
    with pytest.raises(ValueError, match=r"r\[0\] must be positive"):
        checks.check_sigma_range((0, 0.3), "r")
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        checks.check_sigma_range((0.3, 0.05), "r")
    with pytest.raises(ValueError, match="must be .sigma_min, sigma_max."):
        checks.check_sigma_range((0.1, 0.2, 0.3), "r")
    with pytest.raises(TypeError, match="r.0. must be a number"):
        checks.check_sigma_range((True, 0.3), "r")


def test_profiles_use_the_one_sigma_rule():
    with pytest.raises(ValueError, match=r"Profile.sigmas must be positive and finite"):
        profiles.get_profile("quick").replace(sigmas=(0.1, float("inf")))
    with pytest.raises(ValueError, match=r"Profile.sigma_range\[0\] must be positive"):
        profiles.get_profile("quick").replace(sigma_range=(0.0, 0.5))


def test_check_positive_int_takes_numpy_integers():
    np = pytest.importorskip("numpy")
    assert checks.check_positive_int(np.int64(3), "n") == 3
    with pytest.raises(ValueError, match="n must be a positive integer"):
        checks.check_positive_int(np.int64(0), "n")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        checks.check_positive_int(True, "n")


# ----------------------------------------------------------------------------- measurements

def test_measurement_seed_rule():
    # seed + 1 + split + 2 round(sigma 1e6), written out
    assert operators.measurement_seed(0, "train", 0.05) == 1 + 0 + 2 * 50_000
    assert operators.measurement_seed(7, "test", 0.2) == 7 + 1 + 1 + 2 * 200_000
    seeds = {operators.measurement_seed(0, s, sig) for s in ("train", "test") for sig in (0.05, 0.1, 0.2, 0.4)}
    assert len(seeds) == 8 and 0 not in seeds  # splits and levels differ, and from the data seed
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        operators.measurement_seed(0, "val", 0.1)
    with pytest.raises(ValueError, match="sigma must be positive"):
        operators.measurement_seed(0, "test", 0.0)


# ----------------------------------------------------------------------------- problems

def test_registry_builds_every_problem():
    assert problems.PROBLEMS == ("denoising", "inpainting", "deblurring", "mri")
    x = torch.rand(2, 1, 16, 16)
    for name in problems.PROBLEMS:
        A = problems.forward_operator(name, 16, 16)
        assert A(x).shape == x.shape
        assert problems.default_sigma(name) > 0
    box = problems.forward_operator("inpainting", 16, 16, box=5)
    assert int((box.b == 0).sum()) == 25
    with pytest.raises(ValueError, match="problem must be one of denoising, inpainting"):
        problems.forward_operator("nosuch", 16, 16)
    with pytest.raises(ValueError, match="bare name"):
        problems.forward_operator("inpainting:box=5", 16, 16)


def test_problem_settings_from_the_registry():
    quick = profiles.get_profile("quick")
    assert problems.problem_settings("inpainting:box=15", quick) == {"box": 15}
    assert problems.problem_settings("deblurring:std=2", quick) == {"blur_std": 2.0}
    assert problems.problem_settings("mri:8", quick)["acceleration"] == 8.0
    assert problems.problem_settings("denoising", quick) == {}
    with pytest.raises(ValueError, match="denoising takes no options"):
        problems.problem_settings("denoising:box=3", quick)
    assert set(problems.PROBLEM_OPTIONS) == {"inpainting", "deblurring"}


# ----------------------------------------------------------------------------- shards, keys, caches

def test_stream_shards_partition_the_stream():
    whole = data.stream("faces", "train", 7, n=30, seed=3)
    parts = [whole.shard(0, 11), whole.shard(11, 11), whole.shard(11, 30)]
    assert [p.n for p in parts] == [11, 0, 19]
    assert torch.equal(torch.cat([b for p in parts for b in p]), data.load("faces", "train", n=30, seed=3))
    with pytest.raises(ValueError, match="shard must be 0 <= start <= stop <= n = 30"):
        whole.shard(5, 31)


def test_source_hash_ignores_docstrings_and_comments_only(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    mod = tmp_path / "m.py"
    mod.write_text('"""Doc."""\n\ndef f(x):\n    """Doc of f."""\n    return x + 1  # why\n')
    before = store.source_hash("m", tmp_path)
    mod.write_text('"""Other words."""\n\ndef f(x):\n    """Reworded."""\n    # a new comment\n    return x + 1\n')
    assert store.source_hash("m", tmp_path) == before
    mod.write_text('"""Other words."""\n\ndef f(x):\n    """Reworded."""\n    return x + 2\n')
    assert store.source_hash("m", tmp_path) != before


def test_fourier_spectrum_cache_is_bounded():
    A = operators.Blur(operators.gaussian_kernel(1.0, 5))
    for n in range(8, 8 + 3 * A.SPECTRUM_CACHE):
        A(torch.rand(1, 1, n, n))
    assert len(A._cache) == A.SPECTRUM_CACHE
    assert (8 + 3 * A.SPECTRUM_CACHE - 1,) * 2 in A._cache  # the most recent sizes are kept


def test_download_timeout_stays_in_the_child(monkeypatch, tmp_path):
    """The download's socket timeout is set in a child process: the caller's default is untouched
    and the child's failure comes back as one line."""
    monkeypatch.setattr(data, "_DOWNLOAD_SCRIPT",
                        "import socket, sys; socket.setdefaulttimeout(float(sys.argv[3])); "
                        "assert socket.getdefaulttimeout() == float(sys.argv[3]); raise SystemExit('no network here')")
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError, match="^no network here$"):
        data._download("mnist", tmp_path)
    assert socket.getdefaulttimeout() == before
