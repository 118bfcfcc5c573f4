"""Train the networks chapters 06-09 rest on and ship them in ``lemmse_lite/networks/weights/``.

Each file holds the network's settings, its EMA weights, its training history (and snapshots) under
the key of :func:`lemmse_lite.networks.zoo.network_key` -- the settings and the source of every
module the training can run. ``lemmse_lite.networks.zoo.trained_network`` loads a shipped file only
while that key matches today's code; ``tests/test_shipped.py`` fails on a stale one and names this command.

    python scripts/ship_networks.py                      # every network of the quick profile
    python scripts/ship_networks.py --only resnet-denoising sweep-P3
    python scripts/ship_networks.py --list

Networks already shipped under today's key are skipped; a run that is interrupted resumes from its
checkpoint in the cache folder. Old files whose key no longer matches are removed (``--prune``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from lemmse_lite import profiles, store
from lemmse_lite.networks import shipped, zoo


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", help="profile whose networks to ship (default quick)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="names from --list (default: all)")
    parser.add_argument("--list", action="store_true", help="print the names and their state, then stop")
    parser.add_argument("--prune", action="store_true", help="remove shipped files no network of the list uses")
    args = parser.parse_args(argv)
    try:
        profile = profiles.get_profile(args.profile)
    except ValueError as exc:
        parser.error(f"--profile: {exc}")
    nets = shipped.course_networks(profile)
    unknown = sorted(set(args.only or ()) - set(nets))
    if unknown:
        parser.error(f"--only: unknown network(s) {', '.join(unknown)}; see --list")
    wanted = {}
    for name, kw in nets.items():
        settings = zoo.network_settings(profile=profile, **kw)
        key = zoo.network_key(settings)
        wanted[name] = (kw, zoo.WEIGHTS_DIR / f"{zoo.network_name(settings, key)}.pt", key)
    if args.list:
        for name, (_, path, key) in wanted.items():
            state = "shipped" if store.read(path, key) is not None else "missing"
            print(f"{name:40s} {state:8s} {path.name}")
        return 0
    if args.prune:
        keep = {path.name for _, path, _ in wanted.values()}
        for path in zoo.shipped_files():
            if path.name not in keep:
                print(f"removing {path.name}")
                path.unlink()
    zoo.WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(nets):
        kw, path, key = wanted[name]
        if store.read(path, key) is not None:
            print(f"{name}: shipped, up to date")
            continue
        t0 = time.perf_counter()
        net = zoo.trained_network(profile=profile, retrain=True, progress=True, **kw)
        cached = store.cache_dir() / "networks" / path.name
        shutil.copyfile(cached, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        print(f"{name}: {net.history['completed']} steps in {net.history['total_time']:.0f} s "
              f"({time.perf_counter() - t0:.0f} s with loading) -> {path.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
