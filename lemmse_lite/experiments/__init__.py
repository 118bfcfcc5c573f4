"""The experiments of chapters 06-08, shared by the course and the CLI (chapters stay thin).

* :func:`trained_network` -- train-or-load a network, cached on disk under a key that fingerprints
  every setting, the package version and the source of the modules that shape training
  (``course/06_training.md``, ``eq-training-loss``);
* :func:`agreement` -- ``PSNR(net, reference)`` with the controls of
  ``course/07_networks_vs_theory.md`` (``eq-agreement``), on training and test measurements,
  computed by :func:`lemmse_lite.experiments.compare.compare` with cached reference estimates;
* the sweeps of ``course/08_generalisation.md``: :func:`patch_size_matrix`, :func:`n_sweep`,
  :func:`effective_patches_per_pre_inverse` (``eq-n-eff``), :func:`moving_hole`,
  :func:`agreement_vs_log_density` (``eq-log-density``);
* :func:`save_results` / :func:`load_results` / :func:`write_results_table`: the JSON outputs the
  chapters write and the README table generated from them.

Cache: ``$LEMMSE_CACHE`` if set, else ``.lemmse_cache/`` in the repository root (git-ignored), or
in the working directory for an installed package. Every file is written atomically (temporary
file + ``os.replace``: :func:`lemmse_lite.files.atomic_write`,
:func:`lemmse_lite.networks.training.save_checkpoint`), and a file that cannot be read, or whose stored key differs, is ignored and recomputed: an interrupted write is never read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .. import estimators, operators, profiles
from ..estimators import metrics, patches
from ..files import atomic_write
from ..networks import models
from ..networks.zoo import network_settings, snapshot_networks, trained_network
from ..problems import (
    PROBLEM_OPTIONS,
    load_images,
    problem_description,
    problem_operators,
    problem_settings,
)
from ..store import CACHE_ENV, cache_dir, cache_key, cached, tensor_digest
from ..tables import format_table
from .compare import compare
from .controls import DISJOINT, SECOND_SEED, agreement_row

__all__ = [
    "CACHE_ENV", "PAPER", "agreement", "agreement_vs_log_density", "cache_dir", "cache_key", "cached",
    "effective_patches_per_pre_inverse", "json_safe", "load_images", "load_results", "margins_table",
    "moving_hole", "n_sweep", "network_settings", "patch_size_matrix", "problem_operators", "problem_settings",
    "agreement_curve", "risk_per_sigma", "snapshot_networks",
    "reference_names", "results_markdown", "save_results", "tensor_digest", "trained_network",
    "write_results_table",
]

#: The paper's settings (Nguyen et al., arXiv:2601.10334), printed beside ours in the README.
PAPER = {"n_train": "10,000", "inpainting": "centre hole 15×15; random 30 % missing",
         "deblurring": "Gaussian blur std 1.0", "patch_sizes": "5, 7, 9, 11",
         "headline": "PSNR(net, LE-MMSE) ≳ 25 dB"}
README_BEGIN, README_END = "<!-- results:begin -->", "<!-- results:end -->"


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
    """A cached estimator ``f(y, sigma) -> x_hat`` for
    :func:`lemmse_lite.experiments.compare.compare`: the key is the spec, the problem, ``digest(y)``, ``digest(train)``, sigma and the estimators'
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

def _extra_references(networks, train, problem, pre_inverse, profile, disjoint, seeds, cache):
    """The sceptic's references of THEORY-of-``eq-agreement``: the LE-MMSE(P) of a disjoint training
    set of the same size (the next ``N`` images) and the second-seed networks (called on ``B y``)."""
    extra = {}
    if disjoint:
        n = train.shape[0]
        other = load_images(profile, "train", n=2 * n)[n:]
        for P in sorted({net.patch_size for net in networks.values()}):
            extra[DISJOINT.format(P=P)] = reference_estimator({"kind": "le", "P": P, "stride": 1}, other, problem,
                                                              pre_inverse, profile, cache)
    _, B = problem_operators(problem, pre_inverse, profile)
    for name, net2 in (seeds or {}).items():
        extra[SECOND_SEED.format(name=name)] = lambda y, sigma, net2=net2: _run(net2, y if B is None else B(y), sigma)
    return extra


def agreement(networks, problem, profile, controls=True, pre_inverse=None, sigmas=None,
              splits=("train", "test"), n_measurements=None, n_train=None, test_dataset=None,
              cache=None, progress=False, keep_images=False, disjoint=False, seeds=None, n_boot=None,
              sizes=None):
    """Rows of ``course/07_networks_vs_theory.md`` (``eq-agreement``), one per network, split and
    sigma: ``psnr_net_ref`` = PSNR(net, its reference) with its bootstrap 95 % interval
    ``psnr_net_ref_ci`` over the measurements, ``psnr_net_x``, ``psnr_ref_x`` and, with
    ``controls``: ``controls`` = {name: PSNR(net, control)} (the truth included), ``best_control``,
    ``margin`` = ``psnr_net_ref - max(controls)`` (dB) with ``margin_ci``, the
    ``discriminability`` PSNR(reference, ``nearest_control``) and the error-map correlations
    ``error_corr_ref`` / ``error_corr_best``. Inpainting rows repeat these inside the ``"hole"``
    and ``"outside"`` it (sub-dicts).

    ``disjoint``: also the LE-MMSE(P) of the next ``N`` training images (``psnr_net_disjoint`` and
    ``specificity`` = PSNR(net, own LE) - PSNR(net, disjoint LE) with ``specificity_ci``);
    ``seeds``: {name: network} trained like ``networks[name]`` from another seed (one network;
    ``psnr_net_seed``, the ceiling of any agreement); ``sizes``: patch sizes P' whose LE-MMSE every
    network is also compared with (``by_size``, ``by_size_ci`` and the effective patch size
    ``p_eff``, THEORY of ``course/07_networks_vs_theory.md``).

    ``networks``: {name: model} all trained for ``problem``/``pre_inverse`` on the first
    ``n_train`` (default ``profile.n_train``) training images; measurements are drawn by
    ``compare`` (seeded by the profile) from those images and from ``test_dataset`` (default
    ``profile.dataset``) test images; ``sigmas`` default: ``profile.agreement_sigmas``;
    ``n_boot`` default: the profile's ``part_two_settings``. Returns ``(rows, table)``: the list of
    rows and the ``ComparisonTable`` (images when ``keep_images``).
    """
    part2 = profiles.part_two_settings(profile)
    train = load_images(profile, "train", n=n_train)
    n_meas = n_measurements or profile.n_test
    test = load_images(profile, "test", n=max(profile.n_test, n_meas), dataset=test_dataset)
    shape = tuple(train.shape[1:])
    plans = {name: reference_names(net, shape, controls) for name, net in networks.items()}
    specs = {k: v for _, _, sp in plans.values() for k, v in sp.items()}
    refs = {k: reference_estimator(v, train, problem, pre_inverse, profile, cache) for k, v in specs.items()}
    refs.update(_extra_references(networks, train, problem, pre_inverse, profile, disjoint, seeds, cache))
    for p in sizes or ():
        refs.setdefault(f"LE-MMSE({p})", reference_estimator({"kind": "le", "P": p, "stride": 1}, train, problem,
                                                             pre_inverse, profile, cache))
    A, B = problem_operators(problem, pre_inverse, profile)
    table = compare(networks, train, test, A, B, sigmas=sigmas or profile.agreement_sigmas,
                    n_measurements=n_meas, seed=profile.seed, progress=progress, keep_images=True,
                    device=profile.device, references=refs, splits=splits)
    setting = problem_description(problem, profile)
    mask = getattr(A, "b", None) if problem.partition(":")[0] == "inpainting" else None
    hole = None if mask is None else (mask.reshape(mask.shape[-2:]) == 0) if mask.shape[-3] == 1 else None
    rows = []
    for r in table:
        name = r["architecture"]
        row = agreement_row(name, networks[name], table.images[(r["split"], r["sigma"])], problem, pre_inverse,
                            *plans[name][:2], setting, hole, n_boot or part2.n_boot, profile.seed, sizes or ())
        rows.append({**row, "split": r["split"], "sigma": r["sigma"], "train_data": profile.dataset,
                     "test_data": test_dataset or profile.dataset})
    if not keep_images:
        table.images = {}
    return rows, table


def margins_table(rows) -> str:
    """Text table of :func:`agreement` rows with controls: reference, best control, margin (dB)."""
    flat = [{**{k: r[k] for k in ("network", "split", "sigma", "reference", "psnr_net_ref")},
             "best_control": r.get("best_control", ""), "psnr_best": r["controls"][r["best_control"]]
             if "controls" in r else None, "margin": r.get("margin")} for r in rows]
    return format_table(flat, formats={"sigma": "{:.2f}", "psnr_best": "{:.2f}", "margin": "{:+.2f}"})


# ----------------------------------------------------------------------------- sweeps (chapter 08)

def _measurements(images, problem, sigma, profile, split, A=None):
    """Seeded measurements ``y = A x + sigma e`` of ``images`` of ``split`` (``operators.measure``,
    seeded by the one rule ``operators.measurement_seed``)."""
    if A is None:
        A, _ = problem_operators(problem, None, profile)
    return operators.measure(A, images, sigma, operators.measurement_seed(profile.seed, split, sigma))


def _run(net, z, sigma):
    """The network's estimate of ``z`` (CPU result)."""
    with torch.no_grad():
        return net(z.to(next(net.parameters()).device), sigma).float().cpu()


def _test_rows(nets, problem, profile, sigmas, n, cache, **kw):
    """Agreement rows on ``n`` test measurements (the profile's agreement measurements)."""
    rows, _ = agreement(nets, problem, profile, sigmas=sigmas, splits=("test",), n_measurements=n, cache=cache, **kw)
    return rows


def patch_size_matrix(nets, profile, sigma=0.2, n=None, cache=None):
    """Agreement matrix of ``course/08_generalisation.md``: ``nets`` = {P: denoising network with
    receptive field P} (one width and training length); on ``n`` (default
    ``part_two_settings.n_agreement``) test measurements at ``sigma`` returns
    ``{"matrix": {P_net: {P_le: PSNR(net, LE-MMSE(P_le))}}, "ci": {P_net: {P_le: (lo, hi)}},
    "nearest_mse": {name: mean MSE of a test estimate to its nearest shifted training image}}``,
    where ``name`` is ``"ResNet P"``, ``"LE-MMSE(P)"`` and ``"truth"`` (the baselines: the clean
    test images, and the estimator the network should follow)."""
    n = n or profiles.part_two_settings(profile).n_agreement
    sizes = sorted(nets)
    rows, table = agreement({p: nets[p] for p in sizes}, "denoising", profile, controls=False, sigmas=(sigma,),
                            splits=("test",), n_measurements=n, cache=cache, sizes=sizes, keep_images=True)
    by = {r["network"]: r for r in rows}
    train = load_images(profile, "train")
    images = table.images[("test", sigma)]
    nearest = {"truth": images["truth"]}
    for p in sizes:
        nearest[f"ResNet {p}"] = images["networks"][p]
        nearest[f"LE-MMSE({p})"] = images["references"][f"LE-MMSE({p})"]
    mse = {k: float(metrics.nearest_training(v, train, shifts=True).mse.mean()) for k, v in nearest.items()}
    return {"matrix": {p: by[p]["by_size"] for p in sizes}, "ci": {p: by[p]["by_size_ci"] for p in sizes},
            "nearest_mse": mse}


def n_sweep(nets, profile, sigmas=None, n=None, cache=None):
    """Training-set size sweep of ``course/08_generalisation.md``: ``nets`` = {N: denoising network
    trained on the first N images}. One row per N and sigma with ``agreement_train/test``
    (PSNR(net, LE-MMSE(P)) with the same N images as prior), ``specificity_train/test`` (PSNR to
    its own set's LE-MMSE minus PSNR to that of the next N images, with 95 % intervals),
    ``psnr_x_train/test`` (network to the truth), ``gap`` = train - test (dB) and the LE-MMSE's own
    ``le_gap`` (its PSNR to the truth, train - test)."""
    part2 = profiles.part_two_settings(profile)
    sigmas = sigmas or profile.agreement_sigmas
    rows = []
    for N, net in sorted(nets.items()):
        split_rows = {}
        for split, k in (("train", min(N, part2.n_agreement_train)), ("test", n or part2.n_agreement)):
            out, _ = agreement({"net": net}, "denoising", profile, controls=False, sigmas=sigmas, splits=(split,),
                               n_measurements=k, n_train=N, disjoint=True, cache=cache)
            split_rows.update({(split, r["sigma"]): r for r in out})
        for s in sigmas:
            tr, te = split_rows[("train", s)], split_rows[("test", s)]
            rows.append({"n_train": N, "sigma": s, "agreement_train": tr["psnr_net_ref"],
                         "agreement_test": te["psnr_net_ref"], "specificity_train": tr["specificity"],
                         "specificity_train_ci": tr["specificity_ci"], "specificity_test": te["specificity"],
                         "specificity_test_ci": te["specificity_ci"], "psnr_x_train": tr["psnr_net_x"],
                         "psnr_x_test": te["psnr_net_x"], "gap": tr["psnr_net_x"] - te["psnr_net_x"],
                         "le_gap": tr["psnr_ref_x"] - te["psnr_ref_x"]})
    return rows


def risk_per_sigma(net, problem, profile, sigmas, n=None, split="train", pre_inverse=None, cache=None):
    """The risk the training loss estimates, per noise level (``eq-training-loss``): on ``n``
    measurements of the ``split`` images at each sigma, the MSE of the network and of the
    LE-MMSE(P) (the optimum of the network's class on the training law, its floor). Returns rows
    ``{sigma, mse_net, mse_le}``."""
    n = n or profiles.part_two_settings(profile).n_agreement_train
    rows, table = agreement({"net": net}, problem, profile, controls=False, pre_inverse=pre_inverse, sigmas=sigmas,
                            splits=(split,), n_measurements=n, cache=cache, keep_images=True)
    out = []
    for r in rows:
        im = table.images[(split, r["sigma"])]
        mse = {k: float(((v - im["truth"]) ** 2).mean()) for k, v in
               (("mse_net", im["networks"]["net"]), ("mse_le", im["references"][r["reference"]]))}
        out.append({"sigma": r["sigma"], **mse})
    return out


def agreement_curve(net, problem, profile, sigmas=(0.05, 0.2), n=None, extra=None, sizes=None, cache=None):
    """Agreement and margin against training steps (``course/07_networks_vs_theory.md``): the EMA
    weights of ``net`` at each of its snapshot steps
    (:func:`lemmse_lite.networks.zoo.snapshot_networks`) and any ``extra`` {label: finished
    network}, on ``n`` test measurements at ``sigmas``, with the controls. Returns the agreement rows, each with ``step`` (the snapshot's step, or the finished
    network's step count) and ``curve`` ("snapshot" or "finished")."""
    nets = {f"step {k}": v for k, v in snapshot_networks(net, profile).items()}
    nets.update(extra or {})
    rows = _test_rows(nets, problem, profile, sigmas, n or profiles.part_two_settings(profile).n_agreement, cache,
                      sizes=sizes)
    for r in rows:
        finished = r["network"] in (extra or {})
        r["curve"] = "finished" if finished else "snapshot"
        r["step"] = int(extra[r["network"]].history["completed"]) if finished else int(r["network"].split()[1])
    return rows


def effective_patches_per_pre_inverse(profile, specs=("adjoint", "tikhonov:0.01", "tikhonov:0.001"),
                                      sigma=0.05, n_images=1, tau=0.99, cache=None):
    """``N_eff(tau)`` (``eq-n-eff``) of the deblurring LE-MMSE per pre-inverse spec: returns
    {spec: (n_images, H, W) tensor} on the first test measurements at ``sigma``."""
    train, test = load_images(profile, "train"), load_images(profile, "test", n=n_images)
    y = _measurements(test, "deblurring", sigma, profile, "test")
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


def moving_hole(net, profile, shift=None, sigma=None, split="train", n=None, cache=None):
    """Inpainting with the hole moved by ``shift`` (default ``(H//6, W//3)``) from where the
    network and the estimators were built for, on ``n`` measurements of ``split`` (default the
    training images, where the E-MMSE memorises): returns {"in place"/"moved": {"E-MMSE",
    "LE-MMSE", "network": PSNR to the truth, "agreement": PSNR(net, LE-MMSE)}} (dB, mean) and the
    same per image under ``"each"`` ({place: {name: list}})."""
    H = W = profile.image_size
    sigma = sigma or profile.agreement_sigmas[0]
    n = n or profiles.part_two_settings(profile).n_agreement_train
    A, _ = problem_operators("inpainting", None, profile)
    moved = operators.Inpainting(patches.shift(A.b, shift or (H // 6, W // 3)))
    train = load_images(profile, "train")
    images = (train if split == "train" else load_images(profile, "test", n=n))[:n]
    ests = {k: reference_estimator({"kind": kind, "P": net.patch_size, "stride": 1}, train, "inpainting",
                                   None, profile, cache) for k, kind in (("E-MMSE", "emmse"), ("LE-MMSE", "le"))}
    out, each = {}, {}
    for place, A_y in (("in place", A), ("moved", moved)):
        y = _measurements(images, "inpainting", sigma, profile, split, A=A_y)
        x = {k: f(y, sigma) for k, f in ests.items()}
        x["network"] = _run(net, y, sigma)
        each[place] = {k: metrics.psnr(v, images).clamp_max(100).tolist() for k, v in x.items()}
        each[place]["agreement"] = metrics.psnr(x["network"], x["LE-MMSE"]).tolist()
        out[place] = {k: sum(v) / len(v) for k, v in each[place].items()}
    out["each"] = each
    return out


def agreement_vs_log_density(net, profile, sigma=0.2, n_bins=4, dataset=None, control=None, cache=None):
    """Where agreement breaks (``eq-log-density``): per pixel of the test estimates at ``sigma``,
    the squared difference between the network and the LE-MMSE(P) against the log-density of the
    patch mixture at the query, beside two control curves in the same bins: LE-MMSE(P-2) against
    LE-MMSE(P) (how much two estimators of the theory differ there) and, with ``control`` (a second
    network, e.g. the second seed), the two networks against each other. Returns {"log_density":
    (B, H, W), "sq_diff": (B, H, W), "bins": [{"log_density": bin median, "mse", "psnr",
    "mse_le_small", "mse_seed"}] over ``n_bins`` equal-count bins, lowest density first}."""
    train = load_images(profile, "train")
    test = load_images(profile, "test", dataset=dataset)
    y = _measurements(test, "denoising", sigma, profile, "test")
    P = net.patch_size

    def compute():
        x_le, diag = estimators.le_mmse(y.to(profile.device), train, sigma, P,
                                        chunk_size=profile.chunk_size, return_diagnostics=True)
        return {"x_le": x_le.cpu(), "log_density": diag.log_density.cpu()}

    settings = {"kind": "log_density", "y": tensor_digest(y), "train": tensor_digest(train), "sigma": sigma, "P": P}
    got = cached("log_density", settings, compute, cache)
    small = reference_estimator({"kind": "le", "P": max(1, P - 2), "stride": 1}, train, "denoising", None, profile,
                                cache)(y, sigma)
    out = _run(net, y, sigma)
    maps = {"mse": ((out - got["x_le"]) ** 2).sum(1), "mse_le_small": ((small - got["x_le"]) ** 2).sum(1)}
    if control is not None:
        maps["mse_seed"] = ((out - _run(control, y, sigma)) ** 2).sum(1)
    ld, order = got["log_density"].flatten(), got["log_density"].flatten().argsort()
    bins = []
    for part in order.chunk(n_bins):
        row = {"log_density": float(ld[part].median())}
        row.update({k: float(v.flatten()[part].mean()) for k, v in maps.items()})
        row["psnr"] = -10 * math.log10(row["mse"])
        bins.append(row)
    return {"log_density": got["log_density"], "sq_diff": maps["mse"], "bins": bins}


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
    return atomic_write(path, json.dumps({"profile": profile.name, "settings": json_safe(vars_of(profile)),
                                          "rows": json_safe(rows)}, indent=1, allow_nan=False) + "\n")


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
    atomic_write(path, text)
    return table
