"""The agreement of a network with its reference and with the controls a sceptic asks for
(``course/07_networks_vs_theory.md``, ``eq-agreement``), computed from the images of one split and
noise level:

* :func:`agreement_row` -- PSNR(net, reference) with its bootstrap 95 % interval over the
  measurements, the margin over the best control (with its interval), the **discriminability**
  PSNR(reference, nearest control), the error-map correlations, the **disjoint-set** control
  (``specificity`` = PSNR(net, own LE-MMSE) - PSNR(net, LE-MMSE of a disjoint set)), the
  **second-seed** ceiling, the agreement with LE-MMSE(P') for every P' of a grid and the
  **effective patch size** ``p_eff`` (the P' the network is closest to); for inpainting the same
  inside the hole and outside it;
* :func:`psnr_each` -- per-image PSNR over a pixel subset.

:func:`lemmse_lite.experiments.agreement` draws the measurements and computes the images.
"""

from __future__ import annotations

import torch

from ..estimators import metrics

__all__ = ["DISJOINT", "SECOND_SEED", "agreement_row", "flat_rows", "psnr_each"]

DISJOINT, SECOND_SEED = "disjoint-set LE-MMSE({P})", "second seed of {name}"


def psnr_each(a, b, where=None):
    """Per-image PSNR (dB) of ``a`` against ``b`` ``(K, C, H, W)``, over the pixels where ``where``
    ``(H, W)`` is True (all pixels when None)."""
    if where is None:
        return metrics.psnr(a, b)
    sq = ((a.double() - b.double()) ** 2)[..., where]
    return 10 * torch.log10(1 / sq.flatten(1).mean(1))


def _mean_ci(each, n_boot, seed):
    """Mean of a per-image tensor and its bootstrap 95 % interval."""
    return float(each.mean()), metrics.bootstrap_interval(lambda i: float(each[i].mean()), each.shape[0], n_boot,
                                                          seed=seed)


def _margin(each, ref, ctrl, n_boot, seed):
    """``mean(ref) - max_c mean(c)`` over the controls ``ctrl`` (per-image PSNR tensors in
    ``each``), the best control and the bootstrap interval of the margin (resampling images)."""
    means = {c: float(each[c].mean()) for c in ctrl}
    best = max(means, key=means.get)
    table = torch.stack([each[ref], *(each[c] for c in ctrl)], 1)   # (K, 1 + controls): one op per resample

    def stat(i):
        m = table[i].mean(0)
        return float(m[0] - m[1:].max())

    return means, best, float(each[ref].mean()) - means[best], metrics.bootstrap_interval(
        stat, each[ref].shape[0], n_boot, seed=seed)


def _statistics(out, images, name, ref, ctrl, where, n_boot, seed, sizes=()):
    """Bootstrap intervals, discriminability, the disjoint-set and second-seed controls, the
    error-map correlations and the agreement with LE-MMSE(P') for P' in ``sizes`` (the effective
    patch size ``p_eff``) of one network at one (split, sigma), over the pixels ``where`` (None: all)."""
    net, x, refs = images["networks"][name], images["truth"], images["references"]
    each = {c: psnr_each(net, refs[c], where) for c in [ref, *ctrl] if c in refs}
    each["truth"] = psnr_each(net, x, where)
    row = {"psnr_net_ref": float(each[ref].mean()), "psnr_net_x": float(each["truth"].mean()),
           "psnr_ref_x": float(psnr_each(refs[ref], x, where).mean()), "n": int(x.shape[0])}
    row["psnr_net_ref_ci"] = _mean_ci(each[ref], n_boot, seed)[1]
    if ctrl:
        row["controls"], row["best_control"], row["margin"], row["margin_ci"] = _margin(
            each, ref, [*ctrl, "truth"], n_boot, seed)
        disc = {c: float(psnr_each(refs[ref], refs[c], where).mean()) for c in ctrl}
        row["nearest_control"] = max(disc, key=disc.get)
        row["discriminability"] = disc[row["nearest_control"]]
        best = row["best_control"]
        row["error_corr_ref"] = float(metrics.error_correlation(net, refs[ref], x).mean())
        row["error_corr_best"] = float(metrics.error_correlation(net, x if best == "truth" else refs[best], x).mean())
    if sizes:
        by = {p: psnr_each(net, refs[f"LE-MMSE({p})"], where) for p in sizes}
        row["by_size"] = {p: float(v.mean()) for p, v in by.items()}
        row["by_size_ci"] = {p: _mean_ci(v, n_boot, seed)[1] for p, v in by.items()}
        row["p_eff"] = max(row["by_size"], key=row["by_size"].get)
    disjoint = DISJOINT.format(P=ref.split("(")[1].split(")")[0]) if ref.startswith("LE-MMSE(") else None
    if disjoint in refs:
        d = psnr_each(net, refs[disjoint], where)
        row["psnr_net_disjoint"] = float(d.mean())
        row["specificity"], row["specificity_ci"] = _mean_ci(each[ref] - d, n_boot, seed)
    if SECOND_SEED.format(name=name) in refs:
        row["psnr_net_seed"], row["psnr_net_seed_ci"] = _mean_ci(
            psnr_each(net, refs[SECOND_SEED.format(name=name)], where), n_boot, seed)
    out.update(row)
    return out


def agreement_row(name, net, images, problem, pre_inverse, ref, ctrl, setting, hole, n_boot, seed, sizes=()):
    """One row of ``eq-agreement`` for network ``name`` from the images of one (split, sigma)
    (``compare``'s ``table.images[(split, sigma)]``: truth, networks, references), with its
    controls and statistics; inpainting adds the same statistics inside the hole (``hole``:
    ``(H, W)`` bool, sub-dict ``"hole"``) and outside it (``"outside"``)."""
    trained = getattr(net, "settings", {})
    out = {"network": name, "family": type(net).__name__, "problem": problem, "setting": setting,
           "n_train": trained.get("n_train"), "steps": trained.get("steps"),
           "pre_inverse": pre_inverse or "none", "patch_size": net.patch_size, "reference": ref}
    _statistics(out, images, name, ref, ctrl, None, n_boot, seed, sizes)
    if hole is not None:
        for part, where in (("hole", hole), ("outside", ~hole)):
            out[part] = _statistics({}, images, name, ref, ctrl, where, n_boot, seed, sizes)
    return out


FLAT_COLUMNS = ("network", "split", "sigma", "PSNR(net, ref)", "best control", "margin", "discrim.", "P_eff",
                "own - disjoint", "seed ceiling")


def _ci(pair):
    return "" if pair is None else f"[{pair[0]:.1f}, {pair[1]:.1f}]"


def flat_rows(rows, part=None):
    """Rows of :func:`agreement_row` (``part``: ``"hole"`` or ``"outside"`` for inpainting's
    sub-dicts) as flat dicts of text for ``tables.format_table``: PSNR(net, reference) and the
    margin with their intervals, the best control, the discriminability, ``p_eff`` and the
    disjoint-set and second-seed controls where present (dB). Every dict has the same columns,
    those present in any row (a cell a row lacks is empty), so the first row does not decide them."""
    out = []
    for r in rows:
        s = r if part is None else r[part]
        flat = {"network": r["network"], "split": r["split"], "sigma": f"{r['sigma']:.2f}",
                "PSNR(net, ref)": f"{s['psnr_net_ref']:.1f} {_ci(s.get('psnr_net_ref_ci'))}"}
        if "margin" in s:
            flat.update({"best control": s["best_control"],
                         "margin": f"{s['margin']:+.1f} {_ci(s.get('margin_ci'))}",
                         "discrim.": f"{s['discriminability']:.1f}"})
        if "p_eff" in s:
            flat["P_eff"] = s["p_eff"]
        if "specificity" in s:
            flat["own - disjoint"] = f"{s['specificity']:+.1f} {_ci(s['specificity_ci'])}"
        if "psnr_net_seed" in s:
            flat["seed ceiling"] = f"{s['psnr_net_seed']:.1f}"
        out.append(flat)
    columns = [c for c in FLAT_COLUMNS if any(c in f for f in out)]
    return [{c: f.get(c, "") for c in columns} for f in out]
