"""The course's trained networks: trained once, then read from the cache or from the weights the
package ships (``course/06_training.md``, ``eq-training-loss``).

:func:`trained_network` returns the network of a set of :func:`network_settings`. It looks, in
order, in the cache folder (:func:`lemmse_lite.store.cache_dir`), among the **shipped weights**
(``lemmse_lite/networks/weights/``, trained by ``python scripts/ship_networks.py`` with this very
code), and otherwise trains it (resuming an interrupted run from its checkpoint) and caches it.
Every file carries its key: :func:`lemmse_lite.store.cache_key` of the settings and of the source of
every module the training can run (:func:`lemmse_lite.store.source_closure` of this module), so a
changed setting or a changed line of training code never serves an old network: it is retrained (and
the test suite fails on a shipped file whose key no longer matches, naming the command that retrains
it). ``retrain=True`` ignores the shipped weights.

Snapshots: ``snapshots=(s1, s2, ...)`` keeps the EMA weights at those steps of the run (the
agreement-against-steps curve of ``course/07_networks_vs_theory.md``), available afterwards as
:func:`snapshot_networks`.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from .. import profiles, store
from ..problems import load_images, problem_operators, problem_settings
from . import models, training

__all__ = ["ROOTS", "WEIGHTS_DIR", "network_key", "network_name", "network_settings",
           "shipped_files", "snapshot_networks", "train_settings", "trained_network"]

#: The modules the training starts in; their import closure is the code in a network's key.
ROOTS = ("zoo",)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def network_settings(family, problem, profile, patch_size=None, pre_inverse=None, n_train=None,
                     steps=None, width=None, depth=None, seed=None, offset=0, snapshots=()) -> dict:
    """Every setting that determines a trained network (the key's content). ``offset``: the
    training images are ``offset .. offset + n_train - 1`` of the seeded order (a disjoint set);
    ``seed``: initialisation and data order (default ``profile.seed``)."""
    part2 = profiles.part_two_settings(profile)
    settings = {
        "family": str(family).lower(), "problem": problem, "pre_inverse": pre_inverse,
        "patch_size": patch_size or profile.patch_size, "dataset": profile.dataset,
        "image_size": profile.image_size, "n_train": n_train or profile.n_train,
        "steps": steps or profile.train_steps, "width": width or profile.model_width,
        "depth": profile.model_depth if depth is None else depth,
        "batch_size": part2.train_batch_size or profile.batch_size, "lr": profile.lr,
        "sigma_range": list(profile.sigma_range), "seed": profile.seed if seed is None else seed,
        "device": torch.device(profile.device).type, **problem_settings(problem, profile),
    }
    extra = {"offset": offset, "snapshots": sorted(int(s) for s in snapshots),
             "crop": part2.train_crop, "compile": part2.train_compile, "amp": part2.train_amp}
    settings.update({k: v for k, v in extra.items() if v})  # unset options keep older keys
    return settings


def network_key(settings: dict) -> str:
    """The key of a network: its settings and the source of every module its training can run."""
    return store.cache_key(settings, ROOTS)


def network_name(settings: dict, key: str) -> str:
    """File stem of a network: family, problem (``:`` spelt ``=``), P and the key's first 16 hex digits."""
    problem = settings["problem"].replace(":", "=")
    return f"{settings['family']}-{problem}-P{settings['patch_size']}-{key[:16]}"


def train_settings(settings: dict, profile) -> training.TrainConfig:
    """The :class:`~lemmse_lite.networks.training.TrainConfig` of ``settings``."""
    return training.TrainConfig(
        sigma_range=tuple(settings["sigma_range"]), steps=settings["steps"], batch_size=settings["batch_size"],
        lr=settings["lr"], seed=settings["seed"], device=profile.device, crop=settings.get("crop"),
        compile=bool(settings.get("compile")), amp=bool(settings.get("amp")),
        checkpoint_every=max(1, settings["steps"] // 5))


def _train_fresh(settings, profile, checkpoint, progress):
    """Build and train the network of ``settings`` (resuming ``checkpoint`` if a run was cut);
    returns ``(net, history dict, {step: EMA state dict})``."""
    offset, n = settings.get("offset", 0), settings["n_train"]
    images = load_images(profile, "train", n=offset + n)[offset:]
    A, B = problem_operators(settings["problem"], settings["pre_inverse"], profile)
    with torch.random.fork_rng(devices=[]):  # initialisation from the run's seed, global state untouched
        torch.manual_seed(settings["seed"])
        net = models.make_model(settings["family"], patch_size=settings["patch_size"], channels=images.shape[1],
                                width=settings["width"], depth=settings["depth"])
    wanted, snaps = set(settings.get("snapshots", ())), {}

    def keep(state):
        if state.history.completed in wanted:
            snaps[state.history.completed] = copy.deepcopy(state.ema_model.state_dict())

    hist = training.train(net, images, A, B, config=train_settings(settings, profile), checkpoint=checkpoint,
                          resume=True, progress=progress, callback=keep if wanted else None)
    return net, hist.as_dict(), snaps


def _build(settings, profile):
    return models.make_model(settings["family"], patch_size=settings["patch_size"], channels=1,
                             width=settings["width"], depth=settings["depth"])


def shipped_files(folder=WEIGHTS_DIR) -> list:
    """The shipped weight files, sorted."""
    return sorted(Path(folder).glob("*.pt"))


def _load_payload(key, name, cache, retrain):
    """``(payload, "cache" | "shipped")`` of a stored network (cache first), or ``(None, None)``."""
    payload = store.read(store.cache_dir(cache) / "networks" / f"{name}.pt", key)
    if payload is not None:
        return payload, "cache"
    payload = None if retrain else store.read(WEIGHTS_DIR / f"{name}.pt", key)
    return payload, (None if payload is None else "shipped")


def trained_network(family, problem, profile, patch_size=None, pre_inverse=None, n_train=None,
                    steps=None, width=None, depth=None, seed=None, offset=0, snapshots=(), cache=None,
                    progress=False, retrain=False):
    """A network of ``family`` trained for ``problem``/``pre_inverse`` under ``profile`` (arguments
    as in :func:`network_settings`): from the cache, else from the shipped weights (unless
    ``retrain``), else trained now and cached.

    Returns the model in eval mode on ``profile.device``, with ``net.history`` (the training
    history as a dict: ``step``, ``loss``, ``completed``, ``total_time``, ...), ``net.settings``,
    ``net.source`` (``"cache"``, ``"shipped"`` or ``"trained"``), ``net.from_cache`` (True when
    nothing was trained) and ``net.snapshots`` ({step: EMA state dict}). An interrupted training
    resumes from its checkpoint in the cache folder.
    """
    settings = network_settings(family, problem, profile, patch_size, pre_inverse, n_train, steps, width,
                                depth, seed, offset, snapshots)
    key = network_key(settings)
    name = network_name(settings, key)
    folder = store.cache_dir(cache) / "networks"
    payload, where = _load_payload(key, name, cache, retrain)
    net = _build(settings, profile)
    if payload is not None:
        net.load_state_dict(payload["state_dict"])
    else:
        ckpt = folder / f"{name}.ckpt"
        net, history, snaps = _train_fresh(settings, profile, ckpt, progress)
        payload = {"state_dict": net.state_dict(), "history": history, "settings": settings, "snapshots": snaps}
        store.write(folder / f"{name}.pt", key, payload)
        ckpt.unlink(missing_ok=True)
        where = "trained"
    net = net.to(profile.device).eval()
    net.history, net.settings, net.source = payload["history"], settings, where
    net.from_cache, net.snapshots = where != "trained", payload.get("snapshots", {})
    return net


def snapshot_networks(net, profile) -> dict:
    """{step: network holding the EMA weights at that step} of a network trained with
    ``snapshots`` (:func:`trained_network`), plus the final network at its last step."""
    out = {}
    for step, state in sorted(net.snapshots.items()):
        copy_ = _build(net.settings, profile)
        copy_.load_state_dict(state)
        out[int(step)] = copy_.to(profile.device).eval()
    out[int(net.history["completed"])] = net
    return out
