"""The experiments of chapters 06-08, shared by the course and the CLI (chapters stay thin).

* :func:`trained_network` -- train-or-load a network, cached on disk under a key that fingerprints
  every setting, the package version and the source of the modules that shape training
  (``course/06_training.md``, ``eq-training-loss``);
* :func:`agreement` -- ``PSNR(net, reference)`` with the controls of
  ``course/07_networks_vs_theory.md`` (``eq-agreement``), on training and test measurements,
  computed by :func:`lemmse_lite.compare.compare` with cached reference estimates;
* the sweeps of ``course/08_generalisation.md``: :func:`patch_size_matrix`, :func:`n_sweep`,
  :func:`effective_patches_per_pre_inverse` (``eq-n-eff``), :func:`moving_hole`,
  :func:`agreement_vs_log_density` (``eq-log-density``);
* :func:`save_results` / :func:`load_results` / :func:`write_results_table`: the JSON outputs the
  chapters write and the README table generated from them.

Cache: ``$LEMMSE_CACHE`` if set, else ``.lemmse_cache/`` in the repository root (git-ignored), or
in the working directory for an installed package. Every file is written atomically (temporary
file + ``os.replace``, :func:`lemmse_lite.training.save_checkpoint`), and a file that cannot be
read, or whose stored key differs, is ignored and recomputed: an interrupted write is never read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from pathlib import Path

import torch

from . import __version__, data, estimators, metrics, models, operators, patches, profiles, training
from .compare import compare
from .tables import format_table

__all__ = [
    "CACHE_ENV", "PAPER", "agreement", "agreement_vs_log_density", "cache_dir", "cache_key", "cached",
    "effective_patches_per_pre_inverse", "json_safe", "load_images", "load_results", "margins_table",
    "moving_hole", "n_sweep", "network_settings", "patch_size_matrix", "problem_operators", "problem_settings",
    "reference_names", "results_markdown", "save_results", "tensor_digest", "trained_network",
    "write_results_table",
]

CACHE_ENV = "LEMMSE_CACHE"
TRAINING_SOURCES = ("models.py", "training.py", "operators.py", "data.py")
ESTIMATOR_SOURCES = ("estimators.py", "engine.py", "streaming.py", "patches.py", "operators.py",
                     "diagnostics.py", "data.py")
CACHE_FORMAT = "lemmse_lite.experiments/1"
#: The paper's settings (Nguyen et al., arXiv:2601.10334), printed beside ours in the README.
PAPER = {"n_train": "10,000", "inpainting": "centre hole 15×15; random 30 % missing",
         "deblurring": "Gaussian blur std 1.0", "patch_sizes": "5, 7, 9, 11",
         "headline": "PSNR(net, LE-MMSE) ≳ 25 dB"}
README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


# ----------------------------------------------------------------------------- cache

def cache_dir(path=None) -> Path:
    """The cache folder: ``path``, else ``$LEMMSE_CACHE``, else ``.lemmse_cache`` in the repository
    root (where ``pyproject.toml`` is) or the working directory."""
    if path is None:
        path = os.environ.get(CACHE_ENV, "").strip() or None
    if path is None:
        root = Path(__file__).resolve().parents[1]
        path = (root if (root / "pyproject.toml").exists() else Path.cwd()) / ".lemmse_cache"
    return Path(path).expanduser()


def source_hash(names=TRAINING_SOURCES) -> str:
    """sha256 of the source files ``names`` of the package (a code change changes the key)."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def cache_key(settings: dict, sources=TRAINING_SOURCES) -> str:
    """Key of one cached result: sha256 of the JSON of ``settings``, the package version and
    :func:`source_hash` of ``sources``. ``settings`` must be JSON-serialisable."""
    blob = json.dumps({"settings": settings, "version": __version__, "code": source_hash(sources)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's float32 bytes and shape (a data set, a measurement)."""
    arr = t.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(str(tuple(arr.shape)).encode() + arr.numpy().tobytes()).hexdigest()[:32]


def _read(path: Path, key: str):
    """The cached payload at ``path`` if it is complete and was written under ``key``, else None."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):  # torn or foreign
        return None
    if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT or state.get("key") != key:
        return None
    return state["payload"]


def _write(path: Path, key: str, payload) -> None:
    """Atomic write (temporary file in the same folder, fsync, ``os.replace``)."""
    training.save_checkpoint(path, {"format": CACHE_FORMAT, "key": key, "payload": payload})


def cached(kind: str, settings: dict, compute, cache=None, sources=ESTIMATOR_SOURCES):
    """``compute()`` once per key; later calls read ``<cache>/<kind>/<key>.pt``."""
    key = cache_key(settings, sources)
    path = cache_dir(cache) / kind / f"{key[:32]}.pt"
    payload = _read(path, key)
    if payload is None:
        payload = compute()
        _write(path, key, payload)
    return payload


# ----------------------------------------------------------------------------- data and problems

def load_images(profile, split: str, n=None, dataset=None) -> torch.Tensor:
    """``(N, 1, H, W)`` grey images of ``dataset`` (default ``profile.dataset``) at the profile's
    size and seed; ``n`` defaults to ``profile.n_train`` (train) or ``profile.n_test`` (test)."""
    if n is None:
        n = profile.n_train if split == "train" else profile.n_test
    return data.load(dataset or profile.dataset, split, n=n, seed=profile.seed,
                     size=profile.image_size, grey=True)


def problem_operators(problem: str, pre_inverse, profile):
    """``(A, B)`` of a named problem (``operators.forward_operator``: denoising, centre-box
    inpainting, Gaussian blur of std 1) and pre-inverse spec (``operators.pre_inverse``: None,
    ``"pinv"``, ``"adjoint"``, ``"tikhonov:EPS"``, ...) at the profile's image size."""
    h = w = profile.image_size
    A = operators.forward_operator(problem.partition(":")[0], h, w, seed=profile.seed,
                                   **problem_settings(problem, profile))
    return A, operators.pre_inverse(A, pre_inverse)


#: Options of ``"inpainting:OPT=V"`` / ``"deblurring:OPT=V"`` (comma-separated), e.g. the paper's
#: ``"inpainting:box=15"``, ``"inpainting:missing=0.3"``, ``"deblurring:std=1.0"``
#: (``profiles.PAPER_PROBLEMS``): option -> (``operators.forward_operator`` keyword, type).
PROBLEM_OPTIONS = {"inpainting": {"box": ("box", int), "missing": ("missing_fraction", float)},
                   "deblurring": {"std": ("blur_std", float)}}


def _problem_options(problem: str, name: str, text: str) -> dict:
    """``forward_operator`` keywords of the options ``text`` of ``problem`` (ValueError naming it)."""
    options, out = PROBLEM_OPTIONS[name], {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in options:
            raise ValueError(f"problem {problem!r}: the options of {name} are "
                             f"{', '.join(k + '=VALUE' for k in options)}")
        arg, kind = options[key.strip()]
        try:
            out[arg] = kind(value)
        except ValueError:
            raise ValueError(f"problem {problem!r}: {key} needs a {kind.__name__}, got {value!r}") from None
    return out


def problem_settings(problem: str, profile) -> dict:
    """The settings of ``problem`` beyond its name, as keyword arguments of
    ``operators.forward_operator``: for ``"mri"`` the acceleration, centre fraction and mask kind
    of ``profiles.mri_settings(profile)`` (``course/09_mri.md``); ``"mri:R"`` sets the acceleration
    to the number R (the R sweep). Other problems: none."""
    name, _, r = problem.partition(":")
    if name in PROBLEM_OPTIONS:
        return _problem_options(problem, name, r)
    if name != "mri":
        return {}
    m = profiles.mri_settings(profile)
    try:
        acceleration = float(r) if r else m.acceleration
    except ValueError:
        raise ValueError(f"problem {problem!r}: write 'mri' or 'mri:R' with a number R >= 1") from None
    return {"acceleration": acceleration, "center_fraction": m.center_fraction, "mask_kind": m.mask_kind}


def problem_description(problem: str, profile) -> str:
    """Our setting of ``problem`` in words, read from the operator itself (for the README)."""
    A, _ = problem_operators(problem, None, profile)
    name, opts = problem.partition(":")[0], problem_settings(problem, profile)
    if name == "inpainting" and "missing_fraction" in opts:
        return f"random {100 * opts['missing_fraction']:g} % missing"
    if name == "inpainting":
        hole = int((A.b == 0).sum().item() ** 0.5 + 0.5)
        return f"centre hole {hole}×{hole}"
    if name == "deblurring":
        k = A.kernel if hasattr(A, "kernel") else None
        return (f"Gaussian blur std {float(opts.get('blur_std', 1.0))!r}"
                f"{'' if k is None else f', {k.shape[-2]}×{k.shape[-1]} kernel'}")
    if problem.partition(":")[0] == "mri":
        m = problem_settings(problem, profile)
        return (f"{m['mask_kind']} k-space lines, R = {A.acceleration:.2f} (target {m['acceleration']:g}), "
                f"f_c = {m['center_fraction']:g}")
    return "white noise"


# ----------------------------------------------------------------------------- networks

def network_settings(family, problem, profile, patch_size=None, pre_inverse=None, n_train=None,
                     steps=None, width=None, depth=None) -> dict:
    """Every setting that determines a trained network (the cache key's content)."""
    return {
        "family": str(family).lower(), "problem": problem, "pre_inverse": pre_inverse,
        "patch_size": patch_size or profile.patch_size, "dataset": profile.dataset,
        "image_size": profile.image_size, "n_train": n_train or profile.n_train,
        "steps": steps or profile.train_steps, "width": width or profile.model_width,
        "depth": profile.model_depth if depth is None else depth,
        "batch_size": profile.batch_size, "lr": profile.lr,
        "sigma_range": list(profile.sigma_range), "seed": profile.seed,
        "device": torch.device(profile.device).type, **problem_settings(problem, profile),
    }


def _train_fresh(settings, profile, checkpoint, progress):
    """Build and train the network of ``settings`` (resuming ``checkpoint`` if a run was cut)."""
    images = load_images(profile, "train", n=settings["n_train"])
    A, B = problem_operators(settings["problem"], settings["pre_inverse"], profile)
    torch.manual_seed(settings["seed"])
    net = models.make_model(settings["family"], patch_size=settings["patch_size"],
                            channels=images.shape[1], width=settings["width"], depth=settings["depth"])
    hist = training.train(net, images, A, B, tuple(settings["sigma_range"]), settings["steps"],
                          settings["batch_size"], settings["lr"], device=profile.device,
                          seed=settings["seed"], checkpoint=checkpoint, resume=True,
                          checkpoint_every=max(1, settings["steps"] // 5), progress=progress)
    return net, hist


def trained_network(family, problem, profile, patch_size=None, pre_inverse=None, n_train=None,
                    steps=None, width=None, depth=None, cache=None, progress=False):
    """A network of ``family`` trained for ``problem``/``pre_inverse`` under ``profile``, loaded
    from the cache when an identical run (same :func:`network_settings`, package version and
    training code) was cached, trained and cached otherwise.

    Returns the model in eval mode on ``profile.device``, with ``net.history`` (the training
    history as a dict: ``step``, ``loss``, ``completed``, ...), ``net.settings`` and
    ``net.from_cache`` (True when nothing was trained). An interrupted training resumes from its
    checkpoint in the cache folder.
    """
    settings = network_settings(family, problem, profile, patch_size, pre_inverse, n_train, steps,
                                width, depth)
    key = cache_key(settings, TRAINING_SOURCES)
    folder = cache_dir(cache) / "networks"
    name = f"{settings['family']}-{problem}-P{settings['patch_size']}-{key[:16]}"
    path = folder / f"{name}.pt"
    payload = _read(path, key)
    net = models.make_model(settings["family"], patch_size=settings["patch_size"], channels=1,
                            width=settings["width"], depth=settings["depth"])
    if payload is not None:
        net.load_state_dict(payload["state_dict"])
        history, from_cache = payload["history"], True
    else:
        ckpt = folder / f"{name}.ckpt"
        net, hist = _train_fresh(settings, profile, ckpt, progress)
        history, from_cache = hist.as_dict(), False
        _write(path, key, {"state_dict": net.state_dict(), "history": history})
        ckpt.unlink(missing_ok=True)
    net = net.to(profile.device).eval()
    net.history, net.settings, net.from_cache = history, settings, from_cache
    return net


# ----------------------------------------------------------------------------- references

def measured_supports(net, image_shape) -> dict:
    """Per-class windows ``{(a, b): (P, P) bool}`` of a network, cropped from its receptive field
    measured at every parity (``models.receptive_field_all_parities``, ``patches.crop_supports``)."""
    fields = models.receptive_field_all_parities(net, image_shape)
    return patches.crop_supports({k: rf.support for k, rf in fields.items()}, net.patch_size)


def reference_names(net, image_shape, controls=True):
    """``(reference, [controls], specs)`` for one network (``eq-agreement``).

    Stride-1 networks: reference LE-MMSE(P); controls LE-MMSE(P-2), LE-MMSE(P+2), MMSE, E-MMSE
    (and the truth, added by :func:`agreement`). A network equivariant to a sub-lattice only
    (``shift_stride`` s > 1, the U-Net): reference the sub-lattice LE-MMSE with its measured
    supports (``eq-sublattice``); controls LE-MMSE(P), LE-MMSE(P-2), the sub-lattice form on full
    windows, MMSE, E-MMSE. ``specs``: name -> estimator spec (a JSON-able dict)."""
    P, s = net.patch_size, getattr(net, "shift_stride", 1)
    H = min(image_shape[-2:])

    def le(p):
        return f"LE-MMSE({p})", {"kind": "le", "P": p, "stride": 1}

    smaller = [le(P - 2)] if P >= 3 else []
    if s == 1:
        ref = le(P)
        ctrl = smaller + ([le(P + 2)] if P + 2 <= H else [])
    else:
        sup = {f"{a},{b}": w.int().tolist() for (a, b), w in measured_supports(net, image_shape).items()}
        ref = (f"sub-lattice({P}, measured)", {"kind": "le", "P": P, "stride": s, "supports": sup})
        ctrl = [le(P)] + smaller + [(f"sub-lattice({P}, full)", {"kind": "le", "P": P, "stride": s})]
    ctrl += [("MMSE", {"kind": "mmse"}), ("E-MMSE", {"kind": "emmse"})]
    ctrl = ctrl if controls else []
    return ref[0], [c[0] for c in ctrl], dict([ref, *ctrl])


def _estimate(spec, y, train, sigma, A, B, profile):
    """Run the estimator of ``spec`` on ``y`` (profile device, result on the CPU)."""
    y = y.to(profile.device)
    if spec["kind"] == "mmse":
        return estimators.mmse(y, train, sigma, A=A, B=B, chunk_size=profile.chunk_size).cpu()
    if spec["kind"] == "emmse":
        return estimators.equivariant_mmse(y, train, sigma, A=A, B=B, chunk_size=profile.chunk_size).cpu()
    sup = spec.get("supports")
    if sup is not None:
        sup = {tuple(int(v) for v in k.split(",")): torch.tensor(w, dtype=torch.bool) for k, w in sup.items()}
    return estimators.le_mmse(y, train, sigma, spec["P"], A=A, B=B, chunk_size=profile.chunk_size,
                              stride=spec.get("stride", 1), supports=sup).cpu()


def reference_estimator(spec, train, problem, pre_inverse, profile, cache=None):
    """A cached estimator ``f(y, sigma) -> x_hat`` for :func:`lemmse_lite.compare.compare`: the
    key is the spec, the problem, ``digest(y)``, ``digest(train)``, sigma and the estimators'
    source, so a repeated measurement is read from the cache instead of recomputed."""
    A, B = problem_operators(problem, pre_inverse, profile)
    train_digest = tensor_digest(train)

    def f(y, sigma):
        settings = {"spec": spec, "problem": problem, "pre_inverse": pre_inverse, "y": tensor_digest(y),
                    "train": train_digest, "sigma": float(sigma), "image_size": profile.image_size,
                    "seed": profile.seed, **problem_settings(problem, profile)}
        return cached("estimates", settings,
                       lambda: _estimate(spec, y, train, sigma, A, B, profile), cache)

    return f


# ----------------------------------------------------------------------------- agreement

def _agreement_row(name, net, row, problem, pre_inverse, ref, ctrl, setting):
    """One §7.2 row from a compare() row: the reference, every control and the margin."""
    refs = row["psnr_net_refs"]
    trained = getattr(net, "settings", {})
    out = {"network": name, "family": type(net).__name__, "problem": problem, "setting": setting,
           "n_train": trained.get("n_train"), "steps": trained.get("steps"),
           "pre_inverse": pre_inverse or "none", "patch_size": net.patch_size,
           "split": row["split"], "sigma": row["sigma"], "n": row["n"], "reference": ref,
           "psnr_net_ref": refs[ref], "psnr_net_x": row["psnr_net_x"],
           "psnr_ref_x": row["psnr_refs_x"][ref]}
    if ctrl:
        controls = {c: refs[c] for c in ctrl}
        controls["truth"] = row["psnr_net_x"]
        best = max(controls, key=controls.get)
        out.update(controls=controls, best_control=best, margin=out["psnr_net_ref"] - controls[best])
    return out


def agreement(networks, problem, profile, controls=True, pre_inverse=None, sigmas=None,
              splits=("train", "test"), n_measurements=None, n_train=None, test_dataset=None,
              cache=None, progress=False, keep_images=False):
    """THEORY rows of ``course/07_networks_vs_theory.md`` (``eq-agreement``), one per network,
    split and sigma: ``psnr_net_ref`` = PSNR(net, its reference), ``psnr_net_x``, ``psnr_ref_x``
    and, with ``controls``, ``controls`` = {name: PSNR(net, control)} (the truth included),
    ``best_control`` and ``margin`` = ``psnr_net_ref - max(controls)`` (dB).

    ``networks``: {name: model} all trained for ``problem``/``pre_inverse`` on the first
    ``n_train`` (default ``profile.n_train``) training images; measurements are drawn by
    ``compare`` (seeded by the profile) from those images and from ``test_dataset`` (default
    ``profile.dataset``) test images; ``sigmas`` default: ``profile.agreement_sigmas``. Returns
    ``(rows, table)``: the list of rows and the ``ComparisonTable`` (images when ``keep_images``).
    """
    train = load_images(profile, "train", n=n_train)
    test = load_images(profile, "test", n=max(profile.n_test, n_measurements or 0), dataset=test_dataset)
    shape = tuple(train.shape[1:])
    plans = {name: reference_names(net, shape, controls) for name, net in networks.items()}
    specs = {k: v for _, _, sp in plans.values() for k, v in sp.items()}
    refs = {k: reference_estimator(v, train, problem, pre_inverse, profile, cache) for k, v in specs.items()}
    A, B = problem_operators(problem, pre_inverse, profile)
    table = compare(networks, train, test, A, B, sigmas=sigmas or profile.agreement_sigmas,
                    n_measurements=n_measurements or profile.n_test, seed=profile.seed,
                    progress=progress, keep_images=keep_images, device=profile.device,
                    references=refs, splits=splits)
    setting = problem_description(problem, profile)
    rows = [_agreement_row(r["architecture"], networks[r["architecture"]], r, problem, pre_inverse,
                           *plans[r["architecture"]][:2], setting) for r in table]
    for r in rows:
        r["train_data"], r["test_data"] = profile.dataset, test_dataset or profile.dataset
    return rows, table


def margins_table(rows) -> str:
    """Text table of :func:`agreement` rows with controls: reference, best control, margin (dB)."""
    flat = [{**{k: r[k] for k in ("network", "split", "sigma", "reference", "psnr_net_ref")},
             "best_control": r.get("best_control", ""), "psnr_best": r["controls"][r["best_control"]]
             if "controls" in r else None, "margin": r.get("margin")} for r in rows]
    return format_table(flat, formats={"sigma": "{:.2f}", "psnr_best": "{:.2f}", "margin": "{:+.2f}"})


# ----------------------------------------------------------------------------- sweeps (chapter 08)

def _measurements(images, problem, sigma, profile, A=None):
    """Seeded measurements ``y = A x + sigma e`` of ``images`` (``operators.measure``)."""
    if A is None:
        A, _ = problem_operators(problem, None, profile)
    return operators.measure(A, images, sigma, profile.seed + 1)


def _run(net, z, sigma):
    """The network's estimate of ``z`` (CPU result)."""
    with torch.no_grad():
        return net(z.to(next(net.parameters()).device), sigma).float().cpu()


def patch_size_matrix(nets, profile, sigma=0.2, cache=None):
    """Agreement matrix of ``course/08_generalisation.md``: ``nets`` = {P: denoising network with
    receptive field P}; returns ``{"matrix": {P_net: {P_le: PSNR(net, LE-MMSE(P_le))}},
    "nearest_mse": {P_net: mean MSE of the network's test estimate to its nearest shifted
    training image}}`` on the profile's test measurements at ``sigma``."""
    train, test = load_images(profile, "train"), load_images(profile, "test")
    y = _measurements(test, "denoising", sigma, profile)
    les = {p: reference_estimator({"kind": "le", "P": p, "stride": 1}, train, "denoising", None,
                                  profile, cache)(y, sigma) for p in sorted(nets)}
    matrix, nearest = {}, {}
    for p, net in sorted(nets.items()):
        out = _run(net, y, sigma)
        matrix[p] = {q: float(metrics.psnr(out, le).mean()) for q, le in les.items()}
        nearest[p] = float(metrics.nearest_training(out, train, shifts=True).mse.mean())
    return {"matrix": matrix, "nearest_mse": nearest}


def n_sweep(nets, profile, sigma=0.2, cache=None):
    """Training-set size sweep: ``nets`` = {N: denoising network trained on the first N images};
    returns one row per N with ``agreement_train/test`` (PSNR(net, LE-MMSE(P)) with the same N
    images as prior), ``psnr_x_train/test`` (to the truth) and ``gap`` = train - test (dB)."""
    rows = []
    for n, net in sorted(nets.items()):
        out, _ = agreement({"net": net}, "denoising", profile, controls=False, sigmas=(sigma,),
                           n_train=n, cache=cache)
        by = {r["split"]: r for r in out}
        rows.append({"n_train": n, "agreement_train": by["train"]["psnr_net_ref"],
                     "agreement_test": by["test"]["psnr_net_ref"],
                     "psnr_x_train": by["train"]["psnr_net_x"], "psnr_x_test": by["test"]["psnr_net_x"],
                     "gap": by["train"]["psnr_net_x"] - by["test"]["psnr_net_x"]})
    return rows


def effective_patches_per_pre_inverse(profile, specs=("adjoint", "tikhonov:0.01", "tikhonov:0.001"),
                                      sigma=0.05, n_images=1, tau=0.99, cache=None):
    """``N_eff(tau)`` (``eq-n-eff``) of the deblurring LE-MMSE per pre-inverse spec: returns
    {spec: (n_images, H, W) tensor} on the first test measurements at ``sigma``."""
    train, test = load_images(profile, "train"), load_images(profile, "test", n=n_images)
    y = _measurements(test, "deblurring", sigma, profile)
    out = {}
    for spec in specs:
        A, B = problem_operators("deblurring", spec, profile)

        def compute(A=A, B=B):
            _, diag = estimators.le_mmse(y.to(profile.device), train, sigma, profile.patch_size, A=A, B=B,
                                         chunk_size=profile.chunk_size, return_diagnostics=True)
            return diag.effective_patches(tau).cpu()

        settings = {"kind": "n_eff", "pre_inverse": spec, "y": tensor_digest(y),
                    "train": tensor_digest(train), "sigma": sigma, "tau": tau, "P": profile.patch_size}
        out[spec] = cached("n_eff", settings, compute, cache)
    return out


def moving_hole(net, profile, shift=None, sigma=None, cache=None):
    """Inpainting with the hole moved by ``shift`` (default ``(H//6, W//3)``) from where the
    network and the estimators were built for: returns {"in place"/"moved": {"E-MMSE", "LE-MMSE",
    "network": PSNR to the truth, "agreement": PSNR(net, LE-MMSE)}} (dB, mean over the test
    measurements at ``sigma``, default ``profile.agreement_sigmas[0]``)."""
    H = W = profile.image_size
    sigma = sigma or profile.agreement_sigmas[0]
    A, _ = problem_operators("inpainting", None, profile)
    moved = operators.Inpainting(patches.shift(A.b, shift or (H // 6, W // 3)))
    train, test = load_images(profile, "train"), load_images(profile, "test")
    ests = {k: reference_estimator({"kind": kind, "P": net.patch_size, "stride": 1}, train, "inpainting",
                                   None, profile, cache) for k, kind in (("E-MMSE", "emmse"), ("LE-MMSE", "le"))}
    out = {}
    for place, A_y in (("in place", A), ("moved", moved)):
        y = _measurements(test, "inpainting", sigma, profile, A=A_y)
        x = {k: f(y, sigma) for k, f in ests.items()}
        x["network"] = _run(net, y, sigma)
        out[place] = {k: float(metrics.psnr(v, test).mean()) for k, v in x.items()}
        out[place]["agreement"] = float(metrics.psnr(x["network"], x["LE-MMSE"]).mean())
    return out


def agreement_vs_log_density(net, profile, sigma=0.2, n_bins=4, dataset=None, cache=None):
    """Where agreement breaks (``eq-log-density``): per pixel of the test estimates at ``sigma``,
    the squared difference between the network and the LE-MMSE(P) against the log-density of the
    patch mixture at the query. Returns {"log_density": (B, H, W), "sq_diff": (B, H, W),
    "bins": [{"log_density": bin median, "mse": mean sq_diff, "psnr": dB}] over ``n_bins``
    equal-count bins, lowest density first}."""
    train = load_images(profile, "train")
    test = load_images(profile, "test", dataset=dataset)
    y = _measurements(test, "denoising", sigma, profile)

    def compute():
        x_le, diag = estimators.le_mmse(y.to(profile.device), train, sigma, net.patch_size,
                                        chunk_size=profile.chunk_size, return_diagnostics=True)
        return {"x_le": x_le.cpu(), "log_density": diag.log_density.cpu()}

    settings = {"kind": "log_density", "y": tensor_digest(y), "train": tensor_digest(train), "sigma": sigma,
                "P": net.patch_size}
    got = cached("log_density", settings, compute, cache)
    sq = ((_run(net, y, sigma) - got["x_le"]) ** 2).sum(1)
    ld, order = got["log_density"].flatten(), got["log_density"].flatten().argsort()
    bins = []
    for part in order.chunk(n_bins):
        mse = float(sq.flatten()[part].mean())
        bins.append({"log_density": float(ld[part].median()), "mse": mse, "psnr": -10 * math.log10(mse)})
    return {"log_density": got["log_density"], "sq_diff": sq, "bins": bins}


# ----------------------------------------------------------------------------- results and README

def _results_dir(profile, cache=None) -> Path:
    return cache_dir(cache) / "results" / profile.name


def json_safe(v):
    """JSON-safe copy: non-finite floats become None, tuples lists, tensors lists."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if torch.is_tensor(v):
        return json_safe(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def save_results(name: str, rows, profile, cache=None) -> Path:
    """Write ``rows`` (agreement rows or any JSON-able result) to
    ``<cache>/results/<profile>/<name>.json`` atomically; returns the path."""
    path = _results_dir(profile, cache) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"profile": profile.name, "settings": json_safe(vars_of(profile)),
                               "rows": json_safe(rows)}, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def vars_of(profile) -> dict:
    """The profile's fields as a dict."""
    return {k: getattr(profile, k) for k in profile.__dataclass_fields__}


def load_results(cache=None) -> dict:
    """{profile name: {result name: saved JSON}} for every results file in the cache."""
    root = cache_dir(cache) / "results"
    out = {}
    for path in sorted(root.glob("*/*.json")):
        out.setdefault(path.parent.name, {})[path.stem] = json.loads(path.read_text())
    return out


def _cell(rows, split, sigma, key="psnr_net_ref"):
    hit = [r for r in rows if r["split"] == split and abs(r["sigma"] - sigma) < 1e-9 and r.get(key) is not None]
    return f"{hit[0][key]:.1f}" if hit else "–"


def results_markdown(results) -> str:
    """The README table from :func:`load_results` output: one line per profile, problem,
    pre-inverse and network with PSNR(net, reference) train / test per sigma and the control
    margin, then the paper's settings."""
    head = ("| profile | problem (ours) | B | network | N | P | steps | reference | "
            "PSNR(net, ref) σ=0.05 train / test | σ=0.2 train / test | margin σ=0.2 test |")
    lines = [head, "|" + " --- |" * 11]
    for prof, res in sorted(results.items()):
        rows = [r for name, v in sorted(res.items()) if name.startswith("agreement") for r in v["rows"]]
        groups = {}
        for r in rows:
            key = (r["problem"], r["pre_inverse"], r["network"], r.get("test_data"))
            groups.setdefault(key, []).append(r)
        for (problem, B, net, test_data), rs in groups.items():
            r0 = rs[0]
            where = f"{r0.get('train_data')}" + (f" → test {test_data}" if test_data != r0.get("train_data") else "")
            lines.append(
                f"| {prof} | {problem}: {r0.get('setting', '')}; {where} | {B} | {r0['family']} | {r0.get('n_train', '')} "
                f"| {r0['patch_size']} | {r0.get('steps', '')} | {r0['reference']} | "
                f"{_cell(rs, 'train', 0.05)} / {_cell(rs, 'test', 0.05)} | "
                f"{_cell(rs, 'train', 0.2)} / {_cell(rs, 'test', 0.2)} | "
                f"{_cell(rs, 'test', 0.2, 'margin')} |")
    paper = ("| paper | denoising; inpainting: " + PAPER["inpainting"] + "; deblurring: "
             + PAPER["deblurring"] + " | | ResNet, U-Net, PatchMLP | " + PAPER["n_train"] + " | "
             + PAPER["patch_sizes"] + " | | LE-MMSE | " + PAPER["headline"] + " | | |")
    return "\n".join(lines + [paper])


def write_results_table(readme_path, results) -> str:
    """Write :func:`results_markdown` between ``<!-- results:begin -->`` and
    ``<!-- results:end -->`` in ``readme_path`` (appending a section "## Networks against the
    theory (generated)" with the markers if absent); returns the table."""
    path = Path(readme_path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    table = results_markdown(results)
    note = ("Generated by `python scripts/results_table.py` from the results the chapters 07-08 "
            "saved (`$LEMMSE_CACHE/results`); PSNR in dB. Do not edit by hand.")
    block = f"{README_BEGIN}\n{note}\n\n{table}\n{README_END}"
    if README_BEGIN in text and README_END in text:
        before, rest = text.split(README_BEGIN, 1)
        text = before + block + rest.split(README_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Networks against the theory (generated)\n\n" + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return table
