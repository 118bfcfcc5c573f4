"""The lemmse command: demo, estimate, train, compare, bench, reproduce.

lemmse demo is the course's main job on the embedded offline photos: for denoising, centre-box
inpainting and Gaussian deblurring it runs MMSE, E-MMSE and LE-MMSE on held-out photos, prints PSNR
to the ground truth and to the nearest training image (memorisation), and writes a figure.

Every flag is honoured when valid and rejected otherwise with a one-line error naming the flag
(exit code 2, no traceback): the flag checks raise a usage error, the only error the command
turns into a one-line message; any other error is a bug of ours and keeps its traceback. A flag
left out takes the profile's value (--profile, default $LEMMSE_PROFILE); a flag given, even 0, is
never replaced by a default.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data, estimators, operators, problems
from .checks import check_odd, check_positive_int, check_sigma
from .errors import UsageError
from .estimators import metrics
from .files import atomic_write
from .networks.models import make_model
from .networks.training import (
    CheckpointError,
    checkpoint_path,
    load_run,
    save_checkpoint,
    save_run,
    train,
)
from .profiles import get_profile
from .tables import format_table

ESTIMATORS = {"MMSE": "mmse", "E-MMSE": "equivariant_mmse", "LE-MMSE": "le_mmse"}
DEMO_SIGMA = {name: problems.default_sigma(name) for name in problems.PROBLEMS}
#: The demo's default problems (MRI, course/09_mri.md, runs when asked: ``--problems mri``).
DEMO_PROBLEMS = ("denoising", "inpainting", "deblurring")
DEMO_SIGMA_TEXT = ", ".join(f"{k} {v:g}" for k, v in DEMO_SIGMA.items())
#: Above this noise level (the pixel range [0, 1]) the CLI warns: the noise swamps the image and
#: every estimator tends to the prior mean (the mean training pixel / patch centre).
SIGMA_WARN = 1.0
#: Above this noise level the CLI refuses: the estimate equals the training mean to float32
#: precision, and near 1e19 the float32 squared distances overflow.
SIGMA_MAX = 1e6
SIGMA_HELP = (f"noise level sigma > 0; above {SIGMA_WARN:g} a warning (the estimate tends to the prior "
              f"mean), above {SIGMA_MAX:g} an error")
POSITIVE_INT_FLAGS = ("n_train", "n_test", "steps", "batch_size", "width", "n_measurements")
SIGMA_FLAGS = ("sigma", "sigma_min", "sigma_max")


# ----------------------------------------------------------------------------- flag checks

def _flag_check(check):
    """Decorator of a function that checks or reads what a flag names: its ``ValueError``,
    ``TypeError``, ``FileNotFoundError`` and ``CheckpointError`` (whose messages name the flag)
    become a :class:`UsageError`; nothing else does."""
    @functools.wraps(check)
    def checked(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except UsageError:
            raise
        except (ValueError, TypeError, FileNotFoundError, CheckpointError) as err:
            raise UsageError(str(err)) from None
    return checked


def demo_sigma(problem: str) -> float:
    """The default noise level of ``problem`` (its name before any ``:options``), from
    :data:`DEMO_SIGMA`; a problem without one is a one-line error naming ``--sigma``."""
    name = problem.partition(":")[0]
    if name not in DEMO_SIGMA:
        raise UsageError(f"--sigma: no default noise level for the problem {problem!r}; give --sigma")
    return DEMO_SIGMA[name]


def check_out(command: str, out) -> None:
    """``--out`` of any subcommand: a folder (a file for ``estimate``) that could be created and
    written — its nearest existing ancestor is a writable folder; otherwise one line naming the
    flag. Nothing is created here (the subcommand does that when it writes)."""
    if out is None:
        return
    folder = Path(out).parent if command == "estimate" else Path(out)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: the folder {existing} is not writable")


def _flag(dest: str) -> str:
    """``n_train`` -> ``--n-train`` (the name the user typed)."""
    return "--" + dest.replace("_", "-")


def _opt(value, default):
    """The flag's value when given (0 included), else the profile's default."""
    return default if value is None else value


@_flag_check
def check_sigma_flag(value: float, flag: str = "--sigma") -> float:
    """A noise level from the command line: positive, finite, at most :data:`SIGMA_MAX`; a one-line
    warning on stderr above :data:`SIGMA_WARN`."""
    check_sigma(value, 1, name=flag)
    if value > SIGMA_MAX:
        raise ValueError(f"{flag} must be at most {SIGMA_MAX:g} (beyond, the estimate is the training "
                         f"mean to within float32 rounding), got {value:g}")
    if value > SIGMA_WARN:
        print(f"warning: {flag} {value:g} exceeds the pixel range [0, 1]: the noise swamps the image and "
              "the estimate tends to the prior mean", file=sys.stderr)
    return value


@_flag_check
def check_flags(args) -> None:
    """Validate every flag given on the command line (``None`` = not given); ValueError naming it."""
    for dest in POSITIVE_INT_FLAGS:
        check_positive_int(getattr(args, dest, None), _flag(dest), allow_none=True)
    if getattr(args, "depth", None) is not None and args.depth < 0:
        raise ValueError(f"--depth must be an integer >= 0, got {args.depth}")
    if args.patch_size is not None:
        check_odd(args.patch_size, "--patch-size")
    for dest in SIGMA_FLAGS:
        if getattr(args, dest, None) is not None:
            check_sigma_flag(getattr(args, dest), _flag(dest))
    for s in getattr(args, "sigmas", None) or ():
        check_sigma_flag(s, "--sigmas")
    lr = getattr(args, "lr", None)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be positive and finite, got {lr}")
    if args.dataset is not None and not (args.dataset in data.DATASETS or args.dataset.startswith("folder:")):
        raise ValueError(f"--dataset must be one of {', '.join(data.DATASETS)}, got {args.dataset!r}")


@_flag_check
def resolve_device(name: str | None, profile) -> torch.device:
    """``--device`` (default: the profile's) as a torch device that exists on this machine."""
    name = _opt(name, profile.device)
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


def load_images(name: str, split: str, n: int, seed: int, n_flag: str) -> torch.Tensor:
    """``data.load`` with its errors attributed to the flag that caused them."""
    try:
        return data.load(name, split, n=n, seed=seed)
    except (ValueError, TypeError, FileNotFoundError) as err:
        flag = n_flag if str(err).startswith("n=") else "--dataset"
        value = n if flag == n_flag else name
        raise UsageError(f"{flag} {value}: {err}") from None


def problem_operators(problem: str, spec: str | None, profile, size: int):
    """``(A, B)`` of a problem and a ``--B`` spec from the problem registry
    (:func:`lemmse_lite.problems.problem_operators`: the profile's seed and MRI settings) for
    images of side ``size``; a bad spec is an error naming ``--B``."""
    try:
        return problems.problem_operators(problem, spec, profile.replace(image_size=size))
    except (ValueError, TypeError) as err:
        if spec is None:
            raise
        raise UsageError(f"--B {spec}: {err}") from None


def _problem_data(args, profile, device):
    """Training images and test images (on ``device``) for the flags of ``args``."""
    name = _opt(args.dataset, profile.dataset)
    train = load_images(name, "train", _opt(args.n_train, profile.n_train), profile.seed, "--n-train")
    test = load_images(name, "test", _opt(args.n_test, profile.n_test), profile.seed, "--n-test")
    return train, test.to(device)


@_flag_check
def resolve_patch_size(args, profile, images: torch.Tensor) -> int:
    """``--patch-size`` (default: the profile's), at most the image side of ``images`` (N, C, H, W)."""
    P = _opt(args.patch_size, profile.patch_size)
    h, w = images.shape[-2:]
    if P > min(h, w):
        flag = "--patch-size" if args.patch_size is not None else "the profile's patch_size"
        raise ValueError(f"{flag} {P} exceeds the image size {h}x{w}")
    return P


def run_estimator(label, y, train, sigma, A, B, patch_size):
    """Run the estimator called ``label`` (a key of :data:`ESTIMATORS`) on ``y`` (B, C, H, W)."""
    fn = getattr(estimators, ESTIMATORS[label])
    if label == "LE-MMSE":
        return fn(y, train, sigma, patch_size, A=A, B=B)
    return fn(y, train, sigma, A=A, B=B)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- demo

def _demo_rows(args, profile, train, test, P, bar):
    """PSNR rows and figure panels of every (problem, estimator) job."""
    rows, fig_rows, fig_psnr, measurements = [], {}, {}, {}
    for problem, label in bar:
        bar.set_postfix_str(f"{problem} / {label}")
        A, _ = problem_operators(problem, None, profile, test.shape[-1])
        sigma = _opt(args.sigma, demo_sigma(problem))
        if problem not in measurements:
            measurements[problem] = operators.measure(A, test, sigma, operators.measurement_seed(profile.seed, "test", sigma))
        y = measurements[problem]
        x_hat = run_estimator(label, y, train, sigma, A, None, P)
        near = metrics.nearest_training(x_hat, train, shifts=(label == "E-MMSE"))
        rows.append({
            "problem": problem, "sigma": sigma, "estimator": label,
            "PSNR to truth (dB)": metrics.psnr(x_hat, test).mean().item(),
            "PSNR to nearest training (dB)": near.psnr.clamp(max=99).mean().item(),
        })
        fig_rows.setdefault(problem, {"measurement": y[0].clamp(0, 1), "truth": test[0]})[label] = x_hat[0]
        fig_psnr.setdefault(problem, {})[label] = metrics.psnr(x_hat[:1], test[:1]).item()
    return rows, fig_rows, fig_psnr


def cmd_demo(args) -> int:
    """MMSE vs E-MMSE vs LE-MMSE on held-out photos: table on stdout, demo.png and demo.json."""
    from .plotting import comparison_figure, save_figure

    t0 = time.time()
    profile = get_profile(args.profile)
    device = resolve_device(args.device, profile)
    train, test = _problem_data(args, profile, device)
    P = resolve_patch_size(args, profile, test)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm([(p, e) for p in args.problems for e in ESTIMATORS], desc="demo", disable=args.quiet)
    rows, fig_rows, fig_psnr = _demo_rows(args, profile, train, test, P, bar)
    fig = comparison_figure(fig_rows, ["measurement", *ESTIMATORS, "truth"], fig_psnr)
    save_figure(fig, out_dir / "demo.png", dpi=120)
    print(f"\nLE-MMSE demo on '{_opt(args.dataset, profile.dataset)}': N = {len(train)} training images, "
          f"{len(test)} held-out photos, P = {P}, device {device}\n")
    print(format_table(rows, formats={"sigma": "{:g}"}, align="left"))
    elapsed = time.time() - t0
    atomic_write(out_dir / "demo.json", json.dumps({"rows": rows, "seconds": elapsed, "n_train": len(train),
                                                    "n_test": len(test), "patch_size": P}, indent=2))
    print(f"\nfigure: {out_dir / 'demo.png'}   table: {out_dir / 'demo.json'}   ({elapsed:.1f} s)")
    return 0


# ----------------------------------------------------------------------------- estimate

def cmd_estimate(args) -> int:
    """One estimator on held-out images: PSNR and time; estimates saved with --out."""
    profile = get_profile(args.profile)
    device = resolve_device(args.device, profile)
    train, test = _problem_data(args, profile, device)
    A, B = problem_operators(args.problem, args.B, profile, test.shape[-1])
    sigma = _opt(args.sigma, demo_sigma(args.problem))
    y = operators.measure(A, test, sigma, operators.measurement_seed(profile.seed, "test", sigma))
    t0 = time.time()
    x_hat = run_estimator(args.estimator, y, train, sigma, A, B, resolve_patch_size(args, profile, test))
    _sync(device)
    dt = time.time() - t0
    print(f"{args.estimator} ({args.problem}, B = {_opt(args.B, 'none')}, sigma = {sigma:g}): "
          f"PSNR {metrics.psnr(x_hat, test).mean().item():.2f} dB, {dt:.2f} s for {len(test)} images")
    if args.out:
        save_checkpoint(args.out, {"x_hat": x_hat.cpu(), "y": y.cpu(), "x": test.cpu()})
    return 0


# ----------------------------------------------------------------------------- bench

def cmd_bench(args) -> int:
    """Time ``le_mmse`` on the profile's photos: seconds per image and scores per second."""
    profile = get_profile(args.profile)
    device = resolve_device(args.device, profile)
    train, test = _problem_data(args, profile, device)
    P = resolve_patch_size(args, profile, test)
    y = operators.measure(None, test, 0.2, operators.measurement_seed(profile.seed, "test", 0.2))
    estimators.le_mmse(y[:1], train[:8], 0.2, P)  # warm-up
    _sync(device)
    t0 = time.time()
    estimators.le_mmse(y, train, 0.2, P)
    _sync(device)
    dt = time.time() - t0
    h, w = test.shape[-2:]
    scores = len(test) * h * w * len(train) * h * w
    print(f"le_mmse on {device}: {len(test)} images x N = {len(train)} at P = {P}: {dt:.2f} s, "
          f"{dt / len(test):.3f} s/image, {scores / dt / 1e9:.2f} G scores/s")
    return 0


# ----------------------------------------------------------------------------- train / compare

def cmd_train(args) -> int:
    """Train a local CNN; the run folder (training.save_run) holds checkpoint.pt (atomic,
    resumable), history.json and model.pt (config + EMA weights) that lemmse compare reads."""
    if args.n_test is not None:
        raise UsageError("--n-test is not used by lemmse train (it sees training images only); leave it out")
    profile = get_profile(args.profile)
    device = resolve_device(args.device, profile)
    name = _opt(args.dataset, profile.dataset)
    images = load_images(name, "train", _opt(args.n_train, profile.n_train), profile.seed, "--n-train")
    c, size = images.shape[1], images.shape[-1]
    A, B = problem_operators(args.problem, args.B, profile, size)
    P = resolve_patch_size(args, profile, images)
    model = make_model(args.arch, patch_size=P, channels=c, width=_opt(args.width, profile.model_width),
                       depth=_opt(args.depth, profile.model_depth))
    sigma_range = (_opt(args.sigma_min, profile.sigma_range[0]), _opt(args.sigma_max, profile.sigma_range[1]))
    if sigma_range[0] > sigma_range[1]:
        raise UsageError(f"--sigma-min {sigma_range[0]:g} must not exceed --sigma-max {sigma_range[1]:g}")
    t0 = time.time()
    hist = train(model, images, A, B, sigma_range, _opt(args.steps, profile.train_steps),
                 _opt(args.batch_size, profile.batch_size), _opt(args.lr, profile.lr), device=str(device),
                 seed=profile.seed, checkpoint=checkpoint_path(args.out), resume=args.resume,
                 overwrite=not args.resume, compile=args.compile, progress=not args.quiet)
    meta = {"arch": args.arch, "problem": args.problem, "B": _opt(args.B, "none"), "dataset": name,
            "n_train": len(images), "sigma_range": list(sigma_range), "seed": profile.seed,
            "seconds": time.time() - t0}
    run = save_run(args.out, model, hist, meta)
    last = hist.loss[-1] if hist.loss else float("nan")
    print(f"trained {args.arch} (P = {P}) for {args.problem} in {meta['seconds']:.1f} s, "
          f"final loss {last:.5f}: {run}")
    return 0


@_flag_check
def _load_runs(paths, device):
    """``{label: model}`` and the shared meta of runs written by ``lemmse train``."""
    models, metas = {}, []
    for run in paths:
        model, meta = load_run(run, device)
        models[f"{meta['arch']}:{Path(run).name}"] = model
        metas.append(meta)
    key = lambda m: (m["problem"], m["B"], m["dataset"], m["n_train"])
    if any(key(m) != key(metas[0]) for m in metas):
        raise ValueError("the runs to compare must share problem, B, dataset and n_train")
    return models, metas[0]


@_flag_check
def _check_run_flags(args, meta):
    """``--dataset`` and ``--n-train`` of ``lemmse compare`` are read from the run folders; given
    on the command line they must agree with them (never silently ignored)."""
    for dest, key in (("dataset", "dataset"), ("n_train", "n_train")):
        given = getattr(args, dest)
        if given is not None and given != meta[key]:
            raise ValueError(f"{_flag(dest)} {given}: the runs were trained with {key} = {meta[key]} "
                             f"(compare reads it from the run folder; leave {_flag(dest)} out)")


def cmd_compare(args) -> int:
    """PSNR(network, LE-MMSE) on training and test measurements for runs of ``lemmse train``."""
    from .experiments.compare import compare, save_comparison_figure, save_results
    from .experiments.compare import format_table as compare_table

    profile = get_profile(args.profile)
    device = resolve_device(args.device, profile)
    models, first = _load_runs(args.runs, device)
    _check_run_flags(args, first)
    train_images = load_images(first["dataset"], "train", first["n_train"], first["seed"], "--n-train")
    test_images = load_images(first["dataset"], "test", _opt(args.n_test, profile.n_test), first["seed"],
                              "--n-test")
    A, B = problem_operators(first["problem"], first["B"], profile, train_images.shape[-1])
    sigmas = _opt(args.sigmas, list(profile.sigmas))
    table = compare(models, train_images, test_images, A, B, sigmas=sigmas, patch_size=args.patch_size,
                    n_measurements=_opt(args.n_measurements, profile.n_test), seed=profile.seed,
                    progress=not args.quiet, keep_images=True, device=device)
    print(compare_table(table))
    out = Path(args.out)
    save_results(table, out)
    imgs = table.images.get(("test", sigmas[0]))
    if imgs:
        save_comparison_figure(out / "compare.png", imgs["measurement"], next(iter(imgs["networks"].values())),
                               next(iter(imgs["lemmse"].values())), imgs["truth"])
    print(f"results: {out}")
    return 0


# ----------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lemmse train: error: argument --steps: ...`` (exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown; a flag whose default is the profile's says so in its own help text."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _from_profile(field: str, what: str, index: int | None = None) -> str:
    """Help text of a flag defaulting to a profile field (``[index]`` of it), with the quick and
    full values on this machine."""
    values = [getattr(get_profile(name), field) for name in ("quick", "full")]
    if index is not None:
        values, field = [v[index] for v in values], f"{field}[{index}]"
    return f"{what} (default: the profile's {field}, quick {values[0]}, full {values[1]})"


def _common(p, from_run=False):
    """The flags every subcommand has; with ``from_run`` (compare) --dataset and --n-train come
    from the run folders and, when given, must agree with them."""
    p.add_argument("--profile", choices=["quick", "full"], default=None,
                   help="settings of every default below (default: $LEMMSE_PROFILE, else full with CUDA, "
                        "quick without)")
    run_help = "read from the run folders; if given, must agree with them"
    p.add_argument("--dataset", default=None, help=f"training/test images ({run_help})" if from_run else
                   _from_profile("dataset", f"training/test images: {', '.join(data.DATASETS)}"))
    p.add_argument("--n-train", type=int, default=None, help=f"number of training images ({run_help})"
                   if from_run else _from_profile("n_train", "number of training images"))
    p.add_argument("--n-test", type=int, default=None, help=_from_profile("n_test", "number of held-out images"))
    p.add_argument("--patch-size", type=int, default=None, help=_from_profile("patch_size", "odd patch size P"))
    p.add_argument("--device", default=None, help=_from_profile("device", "cpu, cuda or cuda:N"))


def _subparser(sub, name, summary, example):
    p = sub.add_parser(name, help=summary, description=summary + ".",
                       epilog=f"example:\n  {example}", formatter_class=_HelpFormatter)
    _common(p, from_run=(name == "compare"))
    return p


def _add_demo_estimate_bench(sub):
    p = _subparser(sub, "demo", "MMSE vs E-MMSE vs LE-MMSE on held-out photos (the course's main job)",
                   "lemmse demo --profile quick --problems denoising inpainting --out lemmse_out/demo")
    p.add_argument("--problems", nargs="+", choices=problems.PROBLEMS, default=list(DEMO_PROBLEMS),
                   help="inverse problems to solve")
    p.add_argument("--sigma", type=float, default=None,
                   help=SIGMA_HELP + f" (default: per problem, {DEMO_SIGMA_TEXT})")
    p.add_argument("--out", default="lemmse_out/demo", help="output folder for demo.png and demo.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = _subparser(sub, "estimate", "run one estimator on held-out images and print its PSNR",
                   "lemmse estimate --problem inpainting --B eps-mask:0.01 --sigma 0.05 --out est.pt")
    p.add_argument("--estimator", choices=list(ESTIMATORS), default="LE-MMSE", help="which estimator")
    p.add_argument("--problem", choices=problems.PROBLEMS, default="denoising", help="inverse problem")
    p.add_argument("--B", default=None,
                   help="pre-inverse: none, adjoint, pinv, tikhonov:EPS, eps-mask:EPS (default: none)")
    p.add_argument("--sigma", type=float, default=None,
                   help=SIGMA_HELP + f" (default: per problem, {DEMO_SIGMA_TEXT})")
    p.add_argument("--out", default=None, help="save x_hat, y and x to this .pt file (default: not saved)")
    p.set_defaults(func=cmd_estimate)

    p = _subparser(sub, "bench", "time le_mmse (denoising, sigma 0.2) on this machine",
                   "lemmse bench --profile quick --n-train 100 --n-test 2")
    p.set_defaults(func=cmd_bench)


def _add_train_compare(sub):
    p = _subparser(sub, "train", "train a local CNN (checkpointed, resumable) into a run folder",
                   "lemmse train --profile quick --arch resnet --steps 200 --out runs/resnet")
    p.add_argument("--arch", choices=["resnet", "unet", "patchmlp"], default="resnet", help="network family")
    p.add_argument("--problem", choices=problems.PROBLEMS, default="denoising", help="inverse problem")
    p.add_argument("--B", default=None,
                   help="pre-inverse: none, adjoint, pinv, tikhonov:EPS, eps-mask:EPS (default: none)")
    p.add_argument("--steps", type=int, default=None, help=_from_profile("train_steps", "optimisation steps"))
    p.add_argument("--batch-size", type=int, default=None, help=_from_profile("batch_size", "images per step"))
    p.add_argument("--lr", type=float, default=None, help=_from_profile("lr", "peak learning rate"))
    p.add_argument("--width", type=int, default=None, help=_from_profile("model_width", "hidden channels"))
    p.add_argument("--depth", type=int, default=None, help=_from_profile("model_depth", "extra 1x1 blocks, >= 0"))
    p.add_argument("--sigma-min", type=float, default=None,
                   help=_from_profile("sigma_range", "smallest training sigma > 0", 0))
    p.add_argument("--sigma-max", type=float, default=None,
                   help=_from_profile("sigma_range", "largest training sigma", 1))
    p.add_argument("--compile", action="store_true", help="torch.compile the network (any device; ~1.6x per step on 2 CPU cores after ~20 s of compilation)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (otherwise an existing run there is replaced)")
    p.add_argument("--out", default="runs/resnet", help="run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = _subparser(sub, "compare", "PSNR(network, LE-MMSE) tables for runs of lemmse train",
                   "lemmse compare runs/resnet runs/unet --sigmas 0.1 0.2 --out lemmse_out/compare")
    p.add_argument("runs", nargs="+", help="run folders written by lemmse train")
    p.add_argument("--sigmas", type=float, nargs="+", default=None,
                   help=_from_profile("sigmas", "noise levels of the table"))
    p.add_argument("--n-measurements", type=int, default=None,
                   help=_from_profile("n_test", "measurements per (split, sigma)"))
    p.add_argument("--out", default="lemmse_out/compare", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compare)


def cmd_course(args) -> int:
    """``lemmse course``: lemmse_lite.course, imported only for this subcommand (nbclient, nbconvert).
    Its flag checks raise :class:`~lemmse_lite.errors.UsageError` themselves; any other error is ours."""
    from .course import cmd_course as run
    return run(args)


def _add_course(sub):
    p = sub.add_parser("course", help="execute every chapter: executed notebooks + HTML pages + index",
                       description="Execute every chapter of course/ in order (a fresh kernel each) and "
                       "write the executed .ipynb, one offline HTML page per chapter and index.html.",
                       epilog="example:\n  lemmse course --profile quick --only 00 01 --out lemmse_out/course",
                       formatter_class=_HelpFormatter)
    p.add_argument("--profile", choices=["quick", "full"], default=None,
                   help="profile of the chapters (default: $LEMMSE_PROFILE, else full with CUDA, quick without)")
    p.add_argument("--out", default="lemmse_out/course", help="output folder")
    p.add_argument("--only", nargs="+", default=None, metavar="CHAPTER",
                   help="chapters to run, by number (01) or name (01_ideal_mmse) (default: all)")
    p.add_argument("--course-dir", default=None, help="folder of the chapters (default: ./course)")
    p.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: no limit)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--pdf", action="store_true", help="also the course as one PDF (course.pdf), offline")
    p.set_defaults(func=cmd_course, dataset=None, patch_size=None)


def cmd_reproduce(args) -> int:
    """``lemmse reproduce``: the experiments of chapters 07-08 into --out, resumable
    (lemmse_lite.experiments.reproduce, imported only for this subcommand)."""
    from .experiments import reproduce

    profile = _flag_check(reproduce.override)(get_profile(args.profile), args.set)
    if args.device is not None:
        profile = profile.replace(device=str(resolve_device(args.device, profile)))
    cells = _flag_check(reproduce.select)(reproduce.plan(profile), args.only)
    if args.list:
        for cell in cells:
            print(f"{cell.name:<42} {' '.join(sorted(cell.tags))}")
        return 0
    t0 = time.time()
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    results = reproduce.reproduce(profile, args.out, only=args.only, cache=args.cache,
                                  progress=not args.quiet, log=log)
    print(f"{len(results['cells'])} cells ({len(results['resumed'])} stored earlier) in {time.time() - t0:.1f} s: "
          f"{Path(args.out) / 'REPORT.md'}")
    return 0


def _add_reproduce(sub):
    p = sub.add_parser("reproduce", help="the experiments of chapters 07-08 in one resumable run",
                       description="Run the agreement tables (with controls), the patch-size and N sweeps, "
                       "N_eff per pre-inverse and the out-of-distribution checks of chapters 07-08; write "
                       "results.json, results.csv, figures/*.png and REPORT.md. Every finished cell is "
                       "stored in OUT/cells: a killed run resumes where it stopped.",
                       epilog="examples:\n  lemmse reproduce --profile quick --out lemmse_out/reproduce\n"
                       "  lemmse reproduce --profile quick --only n-eff agreement+unet --out lemmse_out/some\n"
                       "  lemmse reproduce --profile quick --list", formatter_class=_HelpFormatter)
    p.add_argument("--profile", choices=["quick", "full", "paper"], default=None,
                   help="settings (default: $LEMMSE_PROFILE, else full with CUDA, quick without); paper: the "
                        "paper's settings, real data sets required")
    p.add_argument("--only", nargs="+", default=None, metavar="KEYWORDS",
                   help="cells to run: selectors of keywords joined by '+' (a cell runs when it holds every "
                        "keyword of any selector; --list shows the cells and their keywords; default: all)")
    p.add_argument("--set", nargs="+", default=None, metavar="FIELD=VALUE",
                   help="override profile fields, e.g. n_train=100 train_steps=50 (tuples comma-separated)")
    p.add_argument("--out", default="lemmse_out/reproduce", help="output folder (also holds the stored cells)")
    p.add_argument("--cache", default=None, help="cache of networks and estimates (default: $LEMMSE_CACHE, "
                                                 "else the chapters' .lemmse_cache)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the profile's)")
    p.add_argument("--list", action="store_true", help="print the selected cells and their keywords, run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-cell log")
    p.set_defaults(func=cmd_reproduce, dataset=None, patch_size=None)


def build_parser() -> argparse.ArgumentParser:
    """The ``lemmse`` parser with its five subcommands."""
    parser = _Parser(prog="lemmse", description=__doc__.strip(),
                     epilog="example:\n  lemmse demo --profile quick\n\nlemmse SUBCOMMAND --help for the "
                     "flags of each subcommand.", formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,estimate,train,compare,bench,course,reproduce}",
                                parser_class=_Parser)
    _add_demo_estimate_bench(sub)
    _add_train_compare(sub)
    _add_reproduce(sub)
    _add_course(sub)
    return parser


def main(argv=None) -> int:
    """Entry point: returns the exit code (0, or 2 after a one-line error on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a parse error already printed on one line (2)
        return stop.code if isinstance(stop.code, int) else 2
    try:
        check_flags(args)
        check_out(args.command, getattr(args, "out", None))
        return args.func(args)
    except UsageError as err:  # only the flag checks raise it: any other error is ours, with its traceback
        print(f"lemmse {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
