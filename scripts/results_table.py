"""Write the README's "Networks against the theory" table from the results the course chapters
saved (``lemmse_lite.experiments.save_results`` under ``$LEMMSE_CACHE/results/<profile>/``).

Run the chapters first (e.g. ``LEMMSE_PROFILE=quick`` through nbval, see the README), then::

    python scripts/results_table.py [--readme README.md] [--cache DIR]

The table goes between ``<!-- results:begin -->`` and ``<!-- results:end -->`` (a section is
appended when the markers are absent); nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lemmse_lite import experiments


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    p.add_argument("--cache", default=None, help="cache folder (default: $LEMMSE_CACHE or .lemmse_cache)")
    args = p.parse_args(argv)
    results = experiments.load_results(args.cache)
    if not results:
        print(f"no results under {experiments.cache_dir(args.cache) / 'results'}: run chapters 07-08 first",
              file=sys.stderr)
        return 1
    table = experiments.write_results_table(args.readme, results)
    print(table)
    print(f"written to {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
