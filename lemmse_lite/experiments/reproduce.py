"""``lemmse reproduce``: the experiments of chapters 07-08 as one resumable plan of cells.

The plan (:func:`plan`) is a list of :class:`Cell`, each one call of :mod:`lemmse_lite.experiments`
(no second implementation; the networks come from :func:`~lemmse_lite.experiments.trained_network`
with the chapters' own arguments, so the chapters' cached networks and reference estimates are
reused):

* ``agreement/<problem>/<B>/<family>`` -- ``PSNR(net, reference)`` per split and sigma with the
  controls of ``course/07_networks_vs_theory.md`` (``eq-agreement``): denoising with the three
  families of chapter 06, and the other problems and pre-inverses of chapter 07;
* ``shift/denoising/<family>`` -- the same on another test distribution (out of distribution);
* ``patch-size``, ``n-sweep``, ``n-eff``, ``moving-hole``, ``log-density`` -- the sweeps of
  ``course/08_generalisation.md`` (``eq-n-eff``, ``eq-log-density``).

Every finished cell is written atomically to ``<out>/cells/<name>.json`` under a key of its name,
the profile's settings, the package version and the source of the modules that compute it; a run
that was killed resumes at the first cell not stored, and ends with the same ``results.json`` as
an uninterrupted run (same seeds; a network whose training was cut resumes from its checkpoint).
At the end :func:`write_outputs` writes ``results.json``, ``results.csv`` (the agreement rows),
``figures/*.png`` and ``REPORT.md`` (our settings and numbers beside the paper's,
:data:`lemmse_lite.experiments.PAPER`).

Selecting cells: ``only`` is a list of selectors; a selector is keywords joined by ``+`` that a
cell's tags must all hold (``denoising+resnet``); a cell runs when any selector matches::

    lemmse reproduce --profile quick --out lemmse_out/reproduce
    lemmse reproduce --profile quick --only n-eff agreement+unet --out lemmse_out/some
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from .. import __version__, data, experiments, plotting
from ..files import atomic_write
from ..profiles import PAPER_PROBLEMS
from ..tables import format_table

__all__ = ["CELL_ROOTS", "Cell", "check_data", "keywords", "override", "plan", "reproduce", "results_digest",
           "select", "write_outputs"]

FAMILIES = ("resnet", "unet", "patchmlp")
#: Chapter 07's other problems and pre-inverses and chapter 09's MRI (family, problem, pre-inverse),
#: sweep-sized nets.
GRID = (("resnet", "inpainting", None), ("resnet", "inpainting", "pinv"), ("resnet", "deblurring", None),
        ("resnet", "deblurring", "tikhonov:0.01"), ("patchmlp", "deblurring", "tikhonov:0.01"),
        ("resnet", "mri", "pinv"))  # chapter 09's zero-filled ResNet
#: The same grid on the paper's problems (``profiles.PAPER_PROBLEMS``), then MRI.
PAPER_GRID = tuple((f, p, b) for p in PAPER_PROBLEMS[1:] for f, b in
                   ((("resnet", None), ("resnet", "pinv")) if p.startswith("inpainting") else
                    (("resnet", None), ("resnet", "tikhonov:0.01"), ("patchmlp", "tikhonov:0.01")))) + (GRID[-1],)
#: The module whose import closure enters a stored cell's key (a code change recomputes the cell).
CELL_ROOTS = ("reproduce",)
AGREEMENT_COLUMNS = ("cell", "network", "family", "problem", "pre_inverse", "patch_size", "n_train",
                     "split", "sigma", "n", "reference", "psnr_net_ref", "psnr_net_x", "psnr_ref_x",
                     "best_control", "margin")


@dataclass(frozen=True)
class Cell:
    """One stored unit of the plan: ``run(profile, cache, progress)`` returns a JSON-able result."""

    name: str
    tags: frozenset
    run: Callable


# ----------------------------------------------------------------------------- the plan

def _agreement_cell(family, problem, pre, profile, main: bool) -> Cell:
    """``agreement/<problem>/<B>/<family>``: chapter 06's network (``main``) or a sweep network."""
    sizes = {} if main else {"steps": profile.sweep_steps, "width": profile.sweep_width}
    n_meas = None if main else max(1, profile.n_test // 2)

    def run(prof, cache, progress):
        net = experiments.trained_network(family, problem, prof, pre_inverse=pre, cache=cache,
                                          progress=progress, **sizes)
        kw = {"pre_inverse": pre, "n_measurements": n_meas, "cache": cache, "progress": progress}
        plain, _ = experiments.agreement({family: net}, problem, prof, controls=False, splits=("train",), **kw)
        # the controls where the claim is made, on held-out measurements (as chapter 07)
        held_out, _ = experiments.agreement({family: net}, problem, prof, controls=True, splits=("test",), **kw)
        return {"rows": plain + held_out}

    b = pre or "none"
    tags = {"agreement", problem, problem.split(":")[0], b, b.split(":")[0], family}
    return Cell(f"agreement/{problem}/{b}/{family}", frozenset(tags), run)


def _shift_cell(family) -> Cell:
    def run(prof, cache, progress):
        net = experiments.trained_network(family, "denoising", prof, cache=cache, progress=progress)
        rows, _ = experiments.agreement({family: net}, "denoising", prof, controls=False, splits=("test",),
                                        test_dataset=prof.dataset_shift, cache=cache, progress=progress)
        return {"rows": rows}

    return Cell(f"shift/denoising/{family}", frozenset({"shift", "ood", "denoising", "none", family}), run)


def _sweep_net(prof, cache, progress, **kw):
    """Chapter 08's sweep ResNet for denoising (one width and training length for every P and N)."""
    sizes = {"steps": prof.sweep_steps, "width": prof.sweep_width}
    return experiments.trained_network("resnet", "denoising", prof, cache=cache, progress=progress, **sizes, **kw)


def _patch_size(prof, cache, progress):
    nets = {p: _sweep_net(prof, cache, progress, patch_size=p) for p in prof.patch_sizes}
    return experiments.patch_size_matrix(nets, prof, sigma=0.2, cache=cache)


def _n_sweep(prof, cache, progress):
    nets = {n: _sweep_net(prof, cache, progress, n_train=n) for n in prof.n_sweep}
    return {"rows": experiments.n_sweep(nets, prof, sigmas=(0.2,), cache=cache)}


def _n_eff(prof, cache, progress):
    neff = experiments.effective_patches_per_pre_inverse(prof, sigma=0.05, cache=cache)
    return {b: {"median": float(v.double().median()), "quartiles": [float(v.double().quantile(q)) for q in
                                                                     (0.25, 0.75)]} for b, v in neff.items()}


def _moving_hole(prof, cache, progress):
    net = experiments.trained_network("resnet", "inpainting", prof, cache=cache, progress=progress)
    out = experiments.moving_hole(net, prof, cache=cache)
    out.pop("each")
    return out


def _log_density(prof, cache, progress):
    net = experiments.trained_network("resnet", "denoising", prof, cache=cache, progress=progress)  # chapter 06's
    return {"bins": experiments.agreement_vs_log_density(net, prof, sigma=0.2, cache=cache)["bins"]}


def plan(profile) -> list[Cell]:
    """Every cell for ``profile``, in run order (the paper profile uses the paper's problems)."""
    grid = PAPER_GRID if profile.name == "paper" else GRID
    cells = [_agreement_cell(f, "denoising", None, profile, main=True) for f in FAMILIES]
    # chapter 07's inpainting ResNet with B = I is a main network (its agreement is a claim of its own)
    cells += [_agreement_cell(f, p, b, profile, main=(p, b) == ("inpainting", None)) for f, p, b in grid]
    cells += [_shift_cell(f) for f in FAMILIES]
    sweeps = (("patch-size", {"denoising", "resnet"}, _patch_size), ("n-sweep", {"denoising", "resnet"}, _n_sweep),
              ("n-eff", {"deblurring"}, _n_eff), ("moving-hole", {"inpainting", "resnet", "ood"}, _moving_hole),
              ("log-density", {"denoising", "resnet"}, _log_density))
    cells += [Cell(name, frozenset({name, "sweep", *tags}), fn) for name, tags, fn in sweeps]
    return cells


def keywords(cells) -> list[str]:
    """Every keyword a selector may use (the cells' tags), sorted."""
    return sorted(set().union(*(c.tags for c in cells)))


def select(cells, only=None) -> list[Cell]:
    """The cells matched by any selector of ``only`` (``None``: all). A selector ``"a+b"`` matches a
    cell holding every keyword; an unknown keyword is a ValueError naming ``--only`` and the valid
    keywords; a selector matching no cell is a ValueError too."""
    if not only:
        return list(cells)
    valid = keywords(cells)
    chosen = []
    for sel in only:
        words = [w.strip().lower() for w in str(sel).split("+") if w.strip()]
        bad = [w for w in words if w not in valid]
        if not words or bad:
            raise ValueError(f"--only {sel!r}: unknown keyword {bad[0] if bad else sel!r}; valid: {', '.join(valid)}")
        hits = [c for c in cells if set(words) <= c.tags]
        if not hits:
            raise ValueError(f"--only {sel!r}: no cell holds all of {', '.join(words)}")
        chosen += [c for c in hits if c not in chosen]
    return [c for c in cells if c in chosen]


# ----------------------------------------------------------------------------- storage

def _key(cell: Cell, profile) -> str:
    return experiments.cache_key({"cell": cell.name, "profile": experiments.vars_of(profile)}, CELL_ROOTS)


def _cell_path(out: Path, cell: Cell) -> Path:
    return out / "cells" / (cell.name.replace("/", "__").replace(":", "=") + ".json")



def _stored(path: Path, key: str):
    """The record stored at ``path`` under ``key``, else None (absent, torn, other settings)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def _run_cell(cell: Cell, profile, out: Path, cache, progress: bool) -> dict:
    """The cell's record ``{"cell", "key", "result", "seconds", "resumed"}``: read when stored under
    the same key, else computed and stored atomically."""
    key, path = _key(cell, profile), _cell_path(out, cell)
    record = _stored(path, key)
    if record is not None:
        return {**record, "resumed": True}
    t0 = time.perf_counter()
    result = experiments.json_safe(cell.run(profile, cache, progress))
    record = {"cell": cell.name, "key": key, "result": result, "seconds": time.perf_counter() - t0}
    atomic_write(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
    return {**record, "resumed": False}


def check_data(profile) -> None:
    """Every data set the profile reads must be present (or downloadable): one ValueError that
    names the missing files/folders of all of them (``data.DatasetUnavailableError`` messages)."""
    missing = []
    for name in dict.fromkeys((profile.dataset, profile.dataset_shift)):
        try:
            data.load(name, "train", n=1, size=profile.image_size, grey=True)
        except data.DatasetUnavailableError as err:
            missing.append(f"{name}: {' '.join(str(err).split())}")
    if missing:
        raise ValueError(f"profile {profile.name!r} needs its data sets; missing: " + " | ".join(missing))


def reproduce(profile, out, only=None, cache=None, progress=True, log=print) -> dict:
    """Run (or resume) the selected cells of :func:`plan` into ``out`` and write the outputs.

    Returns the results dict written to ``results.json`` (``cells``: {name: result};
    ``seconds``: {name: seconds of the run that computed it}; ``resumed``: names read from disk)."""
    out = Path(out)
    cells = select(plan(profile), only)
    check_data(profile)
    records = []
    bar = tqdm(cells, desc=f"reproduce {profile.name}", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.name)
        rec = _run_cell(cell, profile, out, cache, progress)
        records.append(rec)
        log(f"{cell.name}: {'stored earlier' if rec['resumed'] else 'done'} ({rec['seconds']:.1f} s)")
    return write_outputs(records, profile, out)


# ----------------------------------------------------------------------------- outputs

def _agreement_rows(records):
    return [{"cell": r["cell"], **row} for r in records if r["cell"].split("/")[0] in ("agreement", "shift")
            for row in r["result"]["rows"]]


def write_outputs(records, profile, out: Path) -> dict:
    """``results.json``, ``results.csv``, ``figures/*.png`` and ``REPORT.md`` from the records."""
    results = {"profile": profile.name, "version": __version__,
               "settings": experiments.json_safe(experiments.vars_of(profile)),
               "cells": {r["cell"]: r["result"] for r in records},
               "seconds": {r["cell"]: r["seconds"] for r in records},
               "resumed": [r["cell"] for r in records if r["resumed"]]}
    atomic_write(out / "results.json", json.dumps(results, indent=1, allow_nan=False) + "\n")
    rows = _agreement_rows(records)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=AGREEMENT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "results.csv", table.getvalue())
    figures = write_figures(results, out / "figures")
    atomic_write(out / "REPORT.md", report_markdown(results, profile, figures))
    return results


def write_figures(results, folder: Path) -> list[str]:
    """PNG figures of the cells present: agreement per cell and sigma (test), the patch-size
    matrix, the N sweep. Returns the file names written."""
    folder.mkdir(parents=True, exist_ok=True)
    cells, names = results["cells"], []
    agree = {n: c["rows"] for n, c in cells.items() if n.startswith("agreement/")}
    if agree:
        sigmas = sorted({r["sigma"] for rows in agree.values() for r in rows})
        fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(agree)), 3.4))
        for k, s in enumerate(sigmas):
            vals = [next((r["psnr_net_ref"] for r in rows if r["split"] == "test" and r["sigma"] == s), 0.0)
                    for rows in agree.values()]
            ax.bar([i + k / (len(sigmas) + 1) for i in range(len(agree))], vals, 1 / (len(sigmas) + 1),
                   label=f"sigma = {s:g}", edgecolor="k")
        ax.set_xticks(range(len(agree)), [n.split("/", 1)[1].replace("/", "\n") for n in agree], fontsize=6)
        ax.set_ylabel("PSNR(network, reference) (dB), test")
        ax.legend(fontsize=7)
        names.append(_save(fig, folder / "agreement.png"))
    if "patch-size" in cells:
        m = cells["patch-size"]["matrix"]
        ps = sorted(m, key=int)
        fig, ax = plt.subplots(figsize=(4, 3.4))
        im = ax.imshow([[m[a][b] for b in ps] for a in ps], cmap="gray", interpolation="nearest")
        ax.set_xticks(range(len(ps)), [f"LE-MMSE({p})" for p in ps], fontsize=7)
        ax.set_yticks(range(len(ps)), [f"ResNet P={p}" for p in ps], fontsize=7)
        fig.colorbar(im, ax=ax, label="PSNR(network, LE-MMSE) (dB)")
        names.append(_save(fig, folder / "patch_size.png"))
    if "n-sweep" in cells:
        rows = cells["n-sweep"]["rows"]
        fig = plotting.psnr_curves([r["n_train"] for r in rows], {s: [r[f"agreement_{s}"] for r in rows]
                                   for s in ("train", "test")}, "training images N",
                                   "PSNR(network, LE-MMSE) (dB)", logx=True)
        names.append(_save(fig, folder / "n_sweep.png"))
    return names


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    return plotting.save_figure(fig, path, dpi=110).name


def _settings_table(profile) -> str:
    paper = experiments.PAPER
    grid = PAPER_GRID if profile.name == "paper" else GRID
    problems = ", ".join(dict.fromkeys(p for _, p, _ in grid))
    rows = [("training images N", f"{profile.n_train:,} ({profile.dataset})", paper["n_train"]),
            ("problems", f"denoising, {problems}",
             f"denoising; inpainting: {paper['inpainting']}; deblurring: {paper['deblurring']}"),
            ("patch sizes P", ", ".join(map(str, profile.patch_sizes)), paper["patch_sizes"]),
            ("noise levels (agreement)", ", ".join(f"{s:g}" for s in profile.agreement_sigmas),
             "0.01, 0.1, 0.2, 0.3, 0.4, 0.5"),
            ("networks", f"width {profile.model_width}, {profile.train_steps} steps", "≈ 4M parameters"),
            ("headline", f"PSNR(net, LE-MMSE) ≥ {profile.min_agreement:g} dB (denoising, test, σ = 0.2)",
             paper["headline"])]
    return "\n".join(["| setting | ours | paper |", "| --- | --- | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in rows])


def _block(title: str, rows, formats=None) -> list[str]:
    return [f"## {title}", "", "```", format_table(rows, formats=formats), "```", ""] if rows else []


def report_markdown(results, profile, figures) -> str:
    """REPORT.md: settings beside the paper's, the headline check, one table per kind of cell."""
    cells = results["cells"]
    rows = [r for n, c in cells.items() if n.startswith("agreement/") for r in c["rows"]]
    head = [r["psnr_net_ref"] for r in rows if r["problem"] == "denoising" and r["split"] == "test"
            and abs(r["sigma"] - 0.2) < 1e-9]
    lines = [f"# lemmse reproduce: profile `{profile.name}`", "",
             (f"lemmse_lite {results['version']}; PSNR in dB. Settings beside the paper's "
             "(Nguyen et al., arXiv:2601.10334):"), "", _settings_table(profile), ""]
    if head:
        ok = min(head) >= 25.0
        lines += [(f"**Headline**: min PSNR(network, LE-MMSE) over the denoising networks, test, σ = 0.2: "
                  f"{min(head):.1f} dB ({'meets' if ok else 'below'} the paper's ≳ 25 dB)."), ""]
    cols = ["network", "problem", "pre_inverse", "split", "sigma", "reference", "psnr_net_ref", "psnr_net_x",
            "best_control", "margin"]
    fmt = {"sigma": "{:.2f}", "margin": "{:+.2f}"}
    lines += _block("Agreement with controls (eq-agreement)", [{c: r.get(c, "") for c in cols} for r in rows], fmt)
    shift = [r for n, c in cells.items() if n.startswith("shift/") for r in c["rows"]]
    lines += _block("Another test distribution", [{c: r.get(c, "") for c in cols[:7]} for r in shift], fmt)
    if "patch-size" in cells:
        m = cells["patch-size"]["matrix"]
        lines += _block("Patch-size matrix (rows: network P; columns: LE-MMSE P)",
                        [{"network P": a, **{f"LE-MMSE({b})": v for b, v in m[a].items()}} for a in m])
    if "n-sweep" in cells:
        lines += _block("Training-set size sweep", cells["n-sweep"]["rows"])
    if "n-eff" in cells:
        lines += _block("N_eff(0.99) per pre-inverse, deblurring (eq-n-eff)",
                        [{"B": b, "median": v["median"], "q25": v["quartiles"][0], "q75": v["quartiles"][1]}
                         for b, v in cells["n-eff"].items()], {"median": "{:.0f}", "q25": "{:.0f}", "q75": "{:.0f}"})
    if "moving-hole" in cells:
        lines += _block("Moving hole (PSNR to the truth)", [{"hole": k, **v} for k, v in cells["moving-hole"].items()])
    if "log-density" in cells:
        lines += _block("Agreement against log-density (eq-log-density)", cells["log-density"]["bins"],
                        {"log_density": "{:.1f}", "mse": "{:.2e}"})
    times = [{"cell": n, "seconds": s, "this run": "stored earlier" if n in results["resumed"] else "computed"}
             for n, s in results["seconds"].items()]
    lines += _block("Run times (seconds of the run that computed each cell)", times, {"seconds": "{:.1f}"})
    lines += ["Figures: " + ", ".join(f"[{f}](figures/{f})" for f in figures), ""] if figures else []
    return "\n".join(lines)


def results_digest(results) -> str:
    """sha256 of the cells' results (what a resumed run must reproduce exactly)."""
    return hashlib.sha256(json.dumps(results["cells"], sort_keys=True).encode()).hexdigest()


def override(profile, pairs):
    """``profile`` with ``FIELD=VALUE`` overrides (``--set``; tuples as comma-separated values, each
    parsed like the field's current elements); a ValueError names ``--set`` and the problem."""
    changes = {}
    for pair in pairs or ():
        field, sep, text = str(pair).partition("=")
        field = field.strip()
        if not sep or field not in profile.__dataclass_fields__ or field == "name":
            valid = ", ".join(f for f in profile.__dataclass_fields__ if f != "name")
            raise ValueError(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {valid}")
        current = getattr(profile, field)
        try:
            if isinstance(current, tuple):
                kind = type(current[0]) if current else float
                changes[field] = tuple(kind(v) for v in text.split(",") if v.strip())
            else:
                changes[field] = type(current)(text)
        except ValueError:
            raise ValueError(f"--set {pair!r}: {field} expects {type(current).__name__} values, got {text!r}") from None
    try:
        return profile.replace(**changes)
    except ValueError as err:
        raise ValueError(f"--set: {err}") from None
