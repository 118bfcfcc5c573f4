"""The `lemmse` command on reduced sizes (the real code paths, embedded photos): the subcommands'
outputs, every flag honoured (0 is not a default), and one-line errors naming the flag."""

import json

import pytest
import torch

from lemmse_lite import cli, data, estimators, operators, problems
from lemmse_lite.cli import main
from lemmse_lite.estimators import metrics
from lemmse_lite.networks.training import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

QUICK = ["--profile", "quick"]


def test_demo_reduced(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", *QUICK, "--n-train", "12", "--n-test", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    for word in ("denoising", "inpainting", "deblurring", "MMSE", "E-MMSE", "LE-MMSE", "PSNR to truth"):
        assert word in printed
    saved = json.loads((out / "demo.json").read_text())
    rows = saved["rows"]
    assert len(rows) == 9 and (out / "demo.png").stat().st_size > 1000
    assert (saved["n_train"], saved["n_test"], saved["patch_size"]) == (12, 2, 5)
    for r in rows:  # MMSE memorises: its output is (nearly) a training image at these noise levels
        if r["estimator"] == "MMSE" and r["problem"] != "denoising":
            assert r["PSNR to nearest training (dB)"] > 40


def test_estimate_matches_the_library_call(tmp_path, capsys):
    """The saved estimate is le_mmse of operators.measure's y with the profile's seed, recomputed
    here independently of the CLI's plumbing; --patch-size and --sigma are honoured."""
    out = tmp_path / "est.pt"
    rc = main(["estimate", *QUICK, "--n-train", "8", "--n-test", "2", "--problem", "inpainting",
               "--B", "eps-mask:0.01", "--sigma", "0.07", "--patch-size", "3", "--out", str(out)])
    assert rc == 0 and "PSNR" in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    train = data.load("photos", "train", n=8, seed=0)
    test = data.load("photos", "test", n=2, seed=0)
    A = problems.forward_operator("inpainting", *test.shape[-2:])
    B = operators.pre_inverse(A, "eps-mask:0.01")
    y = operators.measure(A, test, 0.07, 0 + 1 + 1 + 2 * 70_000)  # the seed rule: seed + 1 + test + 2·σ·1e6
    assert torch.equal(saved["x"], test) and torch.equal(saved["y"], y)
    assert torch.allclose(saved["x_hat"], estimators.le_mmse(y, train, 0.07, 3, A=A, B=B), atol=1e-6)


def test_bench(capsys):
    assert main(["bench", *QUICK, "--n-train", "4", "--n-test", "1"]) == 0
    assert "1 images x N = 4 at P = 5" in capsys.readouterr().out


def test_train_and_compare(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *QUICK, "--n-train", "16", "--steps", "4", "--width", "4", "--depth", "0",
                 "--patch-size", "3", "--sigma-min", "0.1", "--sigma-max", "0.2", "--out", str(run),
                 "--quiet"]) == 0
    assert (run / "model.pt").exists() and (run / "checkpoint.pt").exists()
    model, meta = load_run(run)
    assert model.config == {"family": "LocalResNet", "patch_size": 3, "channels": 1, "width": 4, "depth": 0,
                            "emb_dim": 4}
    assert meta["sigma_range"] == [0.1, 0.2] and meta["n_train"] == 16
    history = json.loads((run / "history.json").read_text())["history"]
    assert history["completed"] == history["steps"] == 4
    assert main(["compare", str(run), *QUICK, "--sigmas", "0.2", "--n-measurements", "2",
                 "--n-test", "2", "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    assert "psnr_net_lemmse" in capsys.readouterr().out
    assert (tmp_path / "cmp" / "compare.json").exists()
    # flags compare reads from the run folder are checked against it, not ignored
    assert main(["compare", str(run), *QUICK, "--n-train", "17", "--quiet"]) == 2
    assert "--n-train 17: the runs were trained with n_train = 16" in capsys.readouterr().err
    assert main(["compare", str(run), *QUICK, "--dataset", "faces", "--quiet"]) == 2
    assert "--dataset faces: the runs were trained with dataset = photos" in capsys.readouterr().err
    assert main(["train", *QUICK, "--n-test", "2", "--out", str(run)]) == 2  # train has no test images
    assert "--n-test is not used by lemmse train" in capsys.readouterr().err


ERRORS = [  # (arguments, text the one-line error must contain)
    (["estimate", "--device", "gpu"], "--device must be cpu, cuda or cuda:N, got 'gpu'"),
    (["estimate", "--sigma", "nan"], "--sigma must be positive and finite, got nan"),
    (["estimate", "--sigma", "0"], "--sigma must be positive and finite"),
    (["estimate", "--sigma", "1e9"], "--sigma must be at most 1e+06"),
    (["estimate", "--B", "tikhonov:x"], "--B tikhonov:x: pre-inverse 'tikhonov:x' needs a number"),
    (["estimate", "--B", "bogus"], "--B bogus: unknown pre-inverse"),
    (["estimate", "--dataset", "nope"], "--dataset must be one of photos"),
    (["estimate", "--dataset", "folder:/nonexistent/x"], "--dataset folder:/nonexistent/x:"),
    (["estimate", "--n-train", "100000"], "--n-train 100000: n=100000 but"),
    (["demo", "--patch-size", "0"], "--patch-size must be an odd integer >= 1, got 0"),
    (["demo", "--patch-size", "4"], "--patch-size must be an odd integer"),
    (["estimate", "--n-train", "4", "--n-test", "1", "--patch-size", "99"],
     "--patch-size 99 exceeds the image size 32x32"),
    (["demo", "--n-train", "0"], "--n-train must be a positive integer, got 0"),
    (["demo", "--n-test", "0"], "--n-test must be a positive integer, got 0"),
    (["demo", "--problems", "nonsense"], "argument --problems: invalid choice"),
    (["train", "--sigma-min", "0"], "--sigma-min must be positive and finite"),
    (["train", "--sigma-min", "0.4", "--sigma-max", "0.1"], "--sigma-min 0.4 must not exceed --sigma-max 0.1"),
    (["train", "--steps", "0"], "--steps must be a positive integer, got 0"),
    (["train", "--steps", "x"], "argument --steps: invalid int value: 'x'"),
    (["train", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["train", "--width", "0"], "--width must be a positive integer"),
    (["train", "--depth", "-1"], "--depth must be an integer >= 0, got -1"),
    (["train", "--lr", "0"], "--lr must be positive and finite"),
    (["compare", "/nonexistent/run"], "/nonexistent/run is not a run folder of lemmse train"),
    (["compare", "/nonexistent/run", "--sigmas", "0.1", "inf"], "--sigmas must be positive and finite"),
    (["compare", "/nonexistent/run", "--n-measurements", "0"], "--n-measurements must be a positive integer"),
]


@pytest.mark.parametrize("argv, message", ERRORS, ids=[" ".join(a) for a, _ in ERRORS])
def test_bad_flags_give_one_line_errors(argv, message, capsys):
    assert main([*argv, *QUICK]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert message in captured.err and captured.err.startswith(f"lemmse {argv[0]}: error: ")


def test_cuda_unavailable_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", *QUICK, "--device", "cuda"]) == 2
    assert capsys.readouterr().err == ("lemmse bench: error: --device cuda: CUDA is not available on this "
                                       "machine (use --device cpu)\n")


def test_large_sigma_warns_on_one_line_and_tends_to_the_prior_mean(capsys, tmp_path):
    """Documented choice: 1 < sigma <= 1e6 runs with a one-line warning; the estimate is then
    close to the mean training image value (the prior mean of each pixel)."""
    out = tmp_path / "est.pt"
    assert main(["estimate", *QUICK, "--n-train", "8", "--n-test", "1", "--sigma", "1000",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: --sigma 1000 exceeds the pixel range")
    x_hat = torch.load(out, weights_only=True)["x_hat"]
    assert (x_hat - data.load("photos", "train", n=8, seed=0).mean()).abs().max() < 1e-2
    with pytest.raises(ValueError, match="--sigma must be at most"):
        cli.check_sigma_flag(1e6 * 1.01)
    assert cli.check_sigma_flag(1e6) == 1e6


def test_help_has_description_example_defaults_and_no_rest_markup(capsys):
    for command in ("demo", "estimate", "train", "compare", "bench"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "example:\n  lemmse " + command in text
        assert "``" not in text and ":func:" not in text
        expected = "read from the run folders" if command == "compare" else "(default: the profile's n_train, quick 400"
        assert expected in " ".join(text.split())
    main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: resnet)" in text and "(default: the profile's train_steps" in text
    assert main(["--help"]) == 0 and "``" not in capsys.readouterr().out


def test_psnr_printed_is_the_estimate_psnr(tmp_path, capsys):
    """The printed PSNR is the mean PSNR of the saved estimate (not another quantity)."""
    out = tmp_path / "e.pt"
    assert main(["estimate", *QUICK, "--n-train", "6", "--n-test", "2", "--estimator", "MMSE",
                 "--out", str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    expected = metrics.psnr(saved["x_hat"], saved["x"]).mean().item()
    assert f"PSNR {expected:.2f} dB" in capsys.readouterr().out


OUT_COMMANDS = [["demo"], ["estimate"], ["train"], ["compare", "/nonexistent/run"], ["reproduce"], ["course"]]


@pytest.mark.parametrize("argv", OUT_COMMANDS, ids=lambda a: a[0])
def test_unwritable_out_is_one_line_naming_the_flag(argv, capsys):
    """--out under a file (/dev/null/x) names --out on one line, for every subcommand (issue 26)."""
    assert main([*argv, "--out", "/dev/null/x", *([] if argv[0] == "course" else QUICK)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"lemmse {argv[0]}: error: --out /dev/null/x"), err


def test_internal_errors_keep_their_traceback(monkeypatch, tmp_path):
    """Only flag checks become one-line usage errors: a ValueError raised inside an estimator (a
    bug of ours, not a bad flag) propagates with its traceback."""
    def broken(*args, **kwargs):
        raise ValueError("internal bug")

    monkeypatch.setattr(estimators, "le_mmse", broken)
    with pytest.raises(ValueError, match="internal bug"):
        main(["estimate", *QUICK, "--n-train", "4", "--n-test", "1", "--out", str(tmp_path / "e.pt")])


def test_every_problem_has_a_default_sigma():
    """The CLI's problem choices are problems.PROBLEMS: each has a default noise level, and a
    problem with options reads its name's (no KeyError for 'inpainting:box=15')."""
    assert set(cli.DEMO_SIGMA) == set(problems.PROBLEMS)
    assert cli.demo_sigma("inpainting:box=15") == cli.DEMO_SIGMA["inpainting"]
    with pytest.raises(cli.UsageError, match="--sigma"):
        cli.demo_sigma("nosuch")
