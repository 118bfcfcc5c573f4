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

from lemmse_lite import profiles, reproduce
from lemmse_lite.cli import main

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
