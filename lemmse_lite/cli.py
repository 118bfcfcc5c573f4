"""The ``lemmse`` command: ``demo``, ``estimate``, ``train``, ``compare``, ``bench``.

``lemmse demo`` is the course's main job on the embedded offline photos: for denoising, centre-box
inpainting and Gaussian deblurring it runs MMSE, E-MMSE and LE-MMSE on held-out photos, prints PSNR
to the ground truth and to the nearest training image (memorisation), and writes a figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import data, estimators, metrics, operators
from .profiles import get_profile

ESTIMATORS = {"MMSE": "mmse", "E-MMSE": "equivariant_mmse", "LE-MMSE": "le_mmse"}
DEMO_SIGMA = {"denoising": 0.2, "inpainting": 0.05, "deblurring": 0.05}


# ----------------------------------------------------------------------------- shared helpers

def _device(name: str | None, profile) -> torch.device:
    name = name or profile.device
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available")
    return torch.device(name)


def _problem_data(args, profile, device):
    """Training images, test images and the seeded measurements for one problem."""
    name = args.dataset or profile.dataset
    train = data.load(name, "train", n=args.n_train or profile.n_train, seed=profile.seed)
    test = data.load(name, "test", n=args.n_test or profile.n_test, seed=profile.seed)
    return train, test.to(device)


def measure(A, x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """``y = A x + σ e`` with a seeded Gaussian ``e`` (reproducible on any device)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    return A(x) + sigma * noise


def run_estimator(label, y, train, sigma, A, B, patch_size):
    fn = getattr(estimators, ESTIMATORS[label])
    if label == "LE-MMSE":
        return fn(y, train, sigma, patch_size, A=A, B=B)
    return fn(y, train, sigma, A=A, B=B)


def _table(rows, columns):
    widths = [max(len(str(c)), *(len(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])) for r in rows))
              for c in columns]
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(fmt(r[c]).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- demo

def cmd_demo(args) -> int:
    from .plotting import comparison_figure

    t0 = time.time()
    profile = get_profile(args.profile)
    device = _device(args.device, profile)
    train, test = _problem_data(args, profile, device)
    P = args.patch_size or profile.patch_size
    h, w = test.shape[-2:]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, fig_rows, fig_psnr = [], {}, {}
    jobs = [(p, e) for p in args.problems for e in ESTIMATORS]
    bar = tqdm(jobs, desc="demo", disable=args.quiet)
    measurements = {}
    for problem, label in bar:
        bar.set_postfix_str(f"{problem} / {label}")
        A = operators.forward_operator(problem, h, w)
        sigma = args.sigma if args.sigma is not None else DEMO_SIGMA[problem]
        if problem not in measurements:
            measurements[problem] = measure(A, test, sigma, profile.seed)
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
    columns = ["measurement", *ESTIMATORS, "truth"]
    fig = comparison_figure(fig_rows, columns, fig_psnr)
    fig.savefig(out_dir / "demo.png", dpi=120)
    cols = ["problem", "sigma", "estimator", "PSNR to truth (dB)", "PSNR to nearest training (dB)"]
    print(f"\nLE-MMSE demo on '{args.dataset or profile.dataset}': N = {len(train)} training images, "
          f"{len(test)} held-out photos, P = {P}, device {device}\n")
    print(_table(rows, cols))
    elapsed = time.time() - t0
    (out_dir / "demo.json").write_text(json.dumps({"rows": rows, "seconds": elapsed, "n_train": len(train),
                                                   "n_test": len(test), "patch_size": P}, indent=2))
    print(f"\nfigure: {out_dir / 'demo.png'}   table: {out_dir / 'demo.json'}   ({elapsed:.1f} s)")
    return 0


# ----------------------------------------------------------------------------- estimate

def cmd_estimate(args) -> int:
    profile = get_profile(args.profile)
    device = _device(args.device, profile)
    train, test = _problem_data(args, profile, device)
    h, w = test.shape[-2:]
    A = operators.forward_operator(args.problem, h, w)
    B = operators.pre_inverse(A, args.B)
    sigma = args.sigma if args.sigma is not None else DEMO_SIGMA[args.problem]
    y = measure(A, test, sigma, profile.seed)
    t0 = time.time()
    x_hat = run_estimator(args.estimator, y, train, sigma, A, B, args.patch_size or profile.patch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    print(f"{args.estimator} ({args.problem}, B = {args.B or 'none'}, sigma = {sigma}): "
          f"PSNR {metrics.psnr(x_hat, test).mean().item():.2f} dB, {dt:.2f} s for {len(test)} images")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"x_hat": x_hat.cpu(), "y": y.cpu(), "x": test.cpu()}, args.out)
    return 0


# ----------------------------------------------------------------------------- bench

def cmd_bench(args) -> int:
    """Time ``le_mmse`` on random-free photo data: seconds per image and scores per second."""
    profile = get_profile(args.profile)
    device = _device(args.device, profile)
    train = data.load(args.dataset or profile.dataset, "train", n=args.n_train or profile.n_train)
    test = data.load(args.dataset or profile.dataset, "test", n=args.n_test or profile.n_test).to(device)
    P = args.patch_size or profile.patch_size
    y = measure(operators.Denoising(), test, 0.2, 0)
    estimators.le_mmse(y[:1], train[:8], 0.2, P)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    estimators.le_mmse(y, train, 0.2, P)
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.time() - t0
    h, w = test.shape[-2:]
    scores = len(test) * h * w * len(train) * h * w
    print(f"le_mmse on {device}: {len(test)} images x N = {len(train)} at P = {P}: {dt:.2f} s, "
          f"{dt / len(test):.3f} s/image, {scores / dt / 1e9:.2f} G scores/s")
    return 0


# ----------------------------------------------------------------------------- train / compare

def _operators_for(problem, pre, h, w):
    A = operators.forward_operator(problem, h, w)
    return A, operators.pre_inverse(A, pre)


def cmd_train(args) -> int:
    """Train a local CNN; the run folder holds the checkpoint (atomic, resumable), the history and
    ``model.pt`` (config + EMA weights) that ``lemmse compare`` reads."""
    from .models import make_model
    from .training import train

    profile = get_profile(args.profile)
    device = _device(args.device, profile)
    name = args.dataset or profile.dataset
    images = data.load(name, "train", n=args.n_train or profile.n_train, seed=profile.seed)
    c, h, w = images.shape[1:]
    A, B = _operators_for(args.problem, args.B, h, w)
    P = args.patch_size or profile.patch_size
    model = make_model(args.arch, patch_size=P, channels=c, width=args.width or profile.model_width,
                       depth=args.depth if args.depth is not None else profile.model_depth)
    run = Path(args.out)
    run.mkdir(parents=True, exist_ok=True)
    sigma_range = (args.sigma_min or profile.sigma_range[0], args.sigma_max or profile.sigma_range[1])
    t0 = time.time()
    hist = train(model, images, A, B, sigma_range=sigma_range, steps=args.steps or profile.train_steps,
                 batch_size=args.batch_size or profile.batch_size, lr=args.lr or profile.lr, device=device,
                 seed=profile.seed, checkpoint=run / "checkpoint.pt", resume=args.resume,
                 overwrite=not args.resume, compile=args.compile, progress=not args.quiet)
    meta = {"config": model.config, "arch": args.arch, "problem": args.problem, "B": args.B or "none",
            "dataset": name, "n_train": len(images), "sigma_range": list(sigma_range), "seed": profile.seed,
            "seconds": time.time() - t0}
    torch.save({"meta": meta, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}},
               run / "model.pt")
    (run / "history.json").write_text(json.dumps({"meta": meta, "history": hist.as_dict()
                                                  if hasattr(hist, "as_dict") else str(hist)}, indent=1))
    last = hist.loss[-1] if getattr(hist, "loss", None) else float("nan")
    print(f"trained {args.arch} (P = {P}) for {args.problem} in {meta['seconds']:.1f} s, final loss {last:.5f}: {run}")
    return 0


def load_run(run_dir, device="cpu"):
    """Rebuild a model saved by ``lemmse train``: returns ``(model, meta)``."""
    from .models import make_model

    saved = torch.load(Path(run_dir) / "model.pt", map_location=device, weights_only=True)
    meta = saved["meta"]
    cfg = dict(meta["config"])
    family = cfg.pop("family")
    model = make_model(family, **cfg)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), meta


def cmd_compare(args) -> int:
    """PSNR(network, LE-MMSE) on training and test measurements for runs of ``lemmse train``."""
    from .compare import compare, format_table, save_comparison_figure, save_results

    profile = get_profile(args.profile)
    device = _device(args.device, profile)
    models, metas = {}, []
    for run in args.runs:
        model, meta = load_run(run, device)
        models[f"{meta['arch']}:{Path(run).name}"] = model
        metas.append(meta)
    first = metas[0]
    if any((m["problem"], m["B"], m["dataset"], m["n_train"]) != (first["problem"], first["B"], first["dataset"],
                                                                   first["n_train"]) for m in metas):
        raise ValueError("runs to compare must share problem, B, dataset and n_train")
    train_images = data.load(first["dataset"], "train", n=first["n_train"], seed=first["seed"])
    test_images = data.load(first["dataset"], "test", n=args.n_test or profile.n_test, seed=first["seed"])
    h, w = train_images.shape[-2:]
    A, B = _operators_for(first["problem"], first["B"], h, w)
    sigmas = args.sigmas or list(profile.sigmas)
    table = compare(models, train_images, test_images, A, B, sigmas=sigmas,
                    n_measurements=args.n_measurements or profile.n_test, seed=profile.seed,
                    progress=not args.quiet, keep_images=True, device=device)
    print(format_table(table))
    out = Path(args.out)
    save_results(table, out)
    imgs = table.images.get(("test", sigmas[0]))
    if imgs:
        save_comparison_figure(out / "compare.png", imgs["measurement"], next(iter(imgs["networks"].values())),
                               next(iter(imgs["lemmse"].values())), imgs["truth"])
    print(f"results: {out}")
    return 0


# ----------------------------------------------------------------------------- parser

def _common(p, n_test_default=None):
    p.add_argument("--profile", choices=["quick", "full"], default=None, help="settings (default: $LEMMSE_PROFILE)")
    p.add_argument("--dataset", default=None, help="photos, photos-rgb, faces, fashionmnist, mnist, cifar10, folder:PATH")
    p.add_argument("--n-train", type=int, default=None, help="number of training images")
    p.add_argument("--n-test", type=int, default=n_test_default, help="number of held-out images")
    p.add_argument("--patch-size", type=int, default=None, help="odd patch size P")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the profile's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lemmse", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="MMSE vs E-MMSE vs LE-MMSE on held-out photos (the course's main job)")
    _common(p)
    p.add_argument("--problems", nargs="+", choices=operators.PROBLEMS, default=list(operators.PROBLEMS))
    p.add_argument("--sigma", type=float, default=None, help="noise level (default: per problem)")
    p.add_argument("--out", default="lemmse_out/demo", help="output folder for demo.png and demo.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("estimate", help="run one estimator on held-out images")
    _common(p)
    p.add_argument("--estimator", choices=list(ESTIMATORS), default="LE-MMSE")
    p.add_argument("--problem", choices=operators.PROBLEMS, default="denoising")
    p.add_argument("--B", default=None, help="pre-inverse: none, adjoint, pinv, tikhonov:EPS, eps-mask:EPS")
    p.add_argument("--sigma", type=float, default=None)
    p.add_argument("--out", default=None, help="save estimates to this .pt file")
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("bench", help="time le_mmse on this machine")
    _common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("train", help="train a local CNN (checkpointed, resumable)")
    _common(p)
    p.add_argument("--arch", choices=["resnet", "unet", "patchmlp"], default="resnet")
    p.add_argument("--problem", choices=operators.PROBLEMS, default="denoising")
    p.add_argument("--B", default=None, help="pre-inverse: none, adjoint, pinv, tikhonov:EPS, eps-mask:EPS")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--sigma-min", type=float, default=None)
    p.add_argument("--sigma-max", type=float, default=None)
    p.add_argument("--compile", action="store_true", help="torch.compile on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--out", default="runs/resnet", help="run folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compare", help="PSNR(network, LE-MMSE) tables for trained runs")
    _common(p)
    p.add_argument("runs", nargs="+", help="run folders written by lemmse train")
    p.add_argument("--sigmas", type=float, nargs="+", default=None)
    p.add_argument("--n-measurements", type=int, default=None)
    p.add_argument("--out", default="lemmse_out/compare")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
