"""lemmse reproduce: one tiny --only cell through the CLI (the CI smoke of the command), flags
rejected with one-line errors, and a run killed after its first stored cell that resumes to the
same results as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lemmse_lite import profiles
from lemmse_lite.cli import main
from lemmse_lite.experiments import reproduce

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = ["n_train=12", "n_test=2", "image_size=16", "train_steps=40", "sweep_steps=4", "model_width=6",
        "sweep_width=6", "model_depth=1", "batch_size=4", "chunk_size=12", "n_sweep=4,8,12"]


def test_one_cell_through_the_cli(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["reproduce", "--profile", "quick", "--only", "n-eff", "--set", *TINY, "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--quiet"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["cells"]) == ["n-eff"] and results["resumed"] == []
    med = {b: v["median"] for b, v in results["cells"]["n-eff"].items()}
    assert med["adjoint"] < med["tikhonov:0.01"] < med["tikhonov:0.001"]   # chapter 08's ordering
    report = (out / "REPORT.md").read_text()
    assert "N_eff(0.99)" in report and "10,000" in report   # the paper's N beside ours
    assert (out / "results.csv").read_text().startswith("cell,network,")
    assert main(argv) == 0                                  # second run: read back, not recomputed
    again = json.loads((out / "results.json").read_text())
    assert again["resumed"] == ["n-eff"] and again["cells"] == results["cells"]


@pytest.mark.parametrize("flags,message", [
    (["--only", "nosuch"], "--only 'nosuch': unknown keyword 'nosuch'; valid: agreement,"),
    (["--only", "agreement+n-eff"], "--only 'agreement+n-eff': no cell holds all of"),
    (["--set", "n_tran=3"], "--set 'n_tran=3': expected FIELD=VALUE"),
    (["--set", "n_train=many"], "--set 'n_train=many': n_train expects int values"),
    (["--set", "n_train=0"], "--set: Profile.n_train must be a positive int"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    assert main(["reproduce", "--profile", "quick", *flags, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_paper_profile_names_the_missing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEMMSE_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(reproduce.data, "_download", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    paper = profiles.get_profile("paper").replace(dataset_shift=f"folder:{tmp_path / 'ffhq32'}")
    with pytest.raises(ValueError, match="missing: fashionmnist: .*train-images-idx3-ubyte.*ffhq32"):
        reproduce.check_data(paper)


def test_plan_selection():
    cells = reproduce.plan(profiles.get_profile("quick"))
    names = [c.name for c in reproduce.select(cells, ["denoising+unet", "n-eff"])]
    assert names == ["agreement/denoising/none/unet", "shift/denoising/unet", "n-eff"]
    paper = [c.name for c in reproduce.plan(profiles.get_profile("paper"))]
    assert "agreement/inpainting:box=15/pinv/resnet" in paper and "agreement/inpainting:missing=0.3/none/resnet" in paper


def test_killed_run_resumes_to_the_uninterrupted_results(tmp_path):
    only = ["n-eff", "log-density"]
    prof = reproduce.override(profiles.get_profile("quick"), TINY)
    straight = reproduce.reproduce(prof, tmp_path / "a", only=only, cache=tmp_path / "cache_a", progress=False,
                                   log=lambda m: None)
    out, cache = tmp_path / "b", tmp_path / "cache_b"
    cmd = [sys.executable, "-m", "lemmse_lite", "reproduce", "--profile", "quick", "--only", *only, "--set", *TINY,
           "--out", str(out), "--cache", str(cache), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list((out / "cells").glob("*.json")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed mid-way"
        assert [p.name for p in (out / "cells").glob("*.json")] == ["n-eff.json"]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (out / "results.json").exists()
    first = (out / "cells" / "n-eff.json").stat().st_mtime_ns
    resumed = reproduce.reproduce(prof, out, only=only, cache=cache, progress=False, log=lambda m: None)
    assert resumed["resumed"] == ["n-eff"] and (out / "cells" / "n-eff.json").stat().st_mtime_ns == first
    assert resumed["cells"] == straight["cells"]
    assert reproduce.results_digest(resumed) == reproduce.results_digest(straight)


def test_paper_problems_build_the_paper_operators():
    """profiles.PAPER_PROBLEMS through experiments.problem_operators at the paper's 28x28: a 15x15
    centre hole, 30 % random missing pixels, the Gaussian kernel of std 1.0."""
    from lemmse_lite import experiments, operators

    paper = profiles.get_profile("paper")
    ops = {p: experiments.problem_operators(p, None, paper)[0] for p in profiles.PAPER_PROBLEMS}
    hole = ops["inpainting:box=15"].b[0] if ops["inpainting:box=15"].b.dim() == 3 else ops["inpainting:box=15"].b
    rows, cols = (hole == 0).nonzero(as_tuple=True)
    assert len(rows) == 225 and rows.max() - rows.min() == 14 and cols.max() - cols.min() == 14
    assert abs(float((ops["inpainting:missing=0.3"].b == 0).double().mean()) - 0.3) < 0.01
    blur = ops["deblurring:std=1.0"].kernel
    assert torch.allclose(blur.double(), operators.gaussian_kernel(1.0, blur.shape[-1]).double())
    assert experiments.problem_description("inpainting:missing=0.3", paper) == "random 30 % missing"
    with pytest.raises(ValueError, match="the options of inpainting are box=VALUE, missing=VALUE"):
        experiments.problem_operators("inpainting:hole=3", None, paper)


class _Stop(Exception):
    pass


def test_cells_ask_for_the_chapters_networks(monkeypatch):
    """Every network a cell trains has the cache key of the call chapters 06-09 make (the same
    experiments.network_settings), so reproduce reuses the chapters' cached networks."""
    from lemmse_lite import experiments

    prof = profiles.get_profile("quick")
    asked = []

    def record(family, problem, profile, **kw):
        kw = {k: v for k, v in kw.items() if k not in ("cache", "progress")}
        asked.append(experiments.network_settings(family, problem, profile, **kw))
        raise _Stop

    monkeypatch.setattr(experiments, "trained_network", record)

    def no_network(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr(experiments, "effective_patches_per_pre_inverse", no_network)   # trains nothing
    for cell in reproduce.plan(prof):
        with pytest.raises(_Stop):
            cell.run(prof, None, False)
    sweep = {"steps": prof.sweep_steps, "width": prof.sweep_width}
    chapters = [experiments.network_settings(f, "denoising", prof) for f in ("resnet", "unet", "patchmlp")]
    chapters += [experiments.network_settings("resnet", "inpainting", prof)]   # chapter 07's, main settings
    chapters += [experiments.network_settings(f, p, prof, pre_inverse=b, **sweep) for f, p, b in (
        ("resnet", "inpainting", "pinv"), ("resnet", "deblurring", None),
        ("resnet", "deblurring", "tikhonov:0.01"), ("patchmlp", "deblurring", "tikhonov:0.01"))]
    # chapter 08: the sweep networks of every P and N (one width and length); the hole is chapter 07's
    # inpainting network
    chapters += [experiments.network_settings("resnet", "denoising", prof, patch_size=p, **sweep)
                 for p in prof.patch_sizes]
    chapters += [experiments.network_settings("resnet", "denoising", prof, n_train=n, **sweep) for n in prof.n_sweep]
    # chapter 09: mri_network(), the zero-filled ResNet
    chapters += [experiments.network_settings("resnet", "mri", prof, pre_inverse="pinv", **sweep)]
    assert len(asked) == len(reproduce.plan(prof)) - 1   # every cell but n-eff trains (or loads) one first
    for settings in asked:
        assert settings in chapters, settings
