"""Smoke tests of the `lemmse` command on reduced sizes (the real code paths, embedded photos)."""

import json

import pytest

from lemmse_lite.cli import main


def test_demo_reduced(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--profile", "quick", "--n-train", "12", "--n-test", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    for word in ("denoising", "inpainting", "deblurring", "MMSE", "E-MMSE", "LE-MMSE", "PSNR to truth"):
        assert word in printed
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert len(rows) == 9 and (out / "demo.png").stat().st_size > 1000
    for r in rows:  # MMSE memorises: its output is (nearly) a training image at these noise levels
        if r["estimator"] == "MMSE" and r["problem"] != "denoising":
            assert r["PSNR to nearest training (dB)"] > 40


def test_estimate_physics_aware(tmp_path, capsys):
    out = tmp_path / "est.pt"
    rc = main(["estimate", "--profile", "quick", "--n-train", "8", "--n-test", "2", "--problem", "inpainting",
               "--B", "eps-mask:0.01", "--out", str(out)])
    assert rc == 0 and out.exists()
    assert "PSNR" in capsys.readouterr().out


def test_bench(capsys):
    assert main(["bench", "--profile", "quick", "--n-train", "4", "--n-test", "1"]) == 0
    assert "s/image" in capsys.readouterr().out


def test_train_and_compare(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--profile", "quick", "--n-train", "16", "--steps", "4", "--width", "4",
                 "--out", str(run), "--quiet"]) == 0
    assert (run / "model.pt").exists() and (run / "checkpoint.pt").exists()
    assert main(["compare", str(run), "--profile", "quick", "--sigmas", "0.2", "--n-measurements", "2",
                 "--n-test", "2", "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    assert "psnr_net_lemmse" in capsys.readouterr().out
    assert (tmp_path / "cmp" / "compare.json").exists()


def test_bad_arguments_give_a_clear_error(capsys):
    assert main(["estimate", "--profile", "quick", "--n-train", "4", "--n-test", "1", "--B", "tikhonov:x"]) == 2
    assert "tikhonov" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--problems", "nonsense"])
