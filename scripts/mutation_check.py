#!/usr/bin/env python
"""Do the chapters' asserts catch a wrong estimator? Run chapters under named mutations of the package.

For each mutation, a scratch copy of the repository is made under a temporary folder (never the
working tree), one line of one estimator module is changed there (each mutation names its file and the
exact text it replaces, and the script fails if that text is missing or not unique), and the
chapters that the mutation concerns are executed one at a time, with a fresh ``LEMMSE_CACHE`` per
(mutation, chapter), one thread, ``LEMMSE_PROFILE=quick``. A chapter *catches* a mutation when its
execution fails (an assert, or any error the mutation provokes: the first error is printed). The
unmutated package is run first as the baseline, which must pass every chapter.

Not part of CI (it runs each chapter once per mutation: about 10 minutes for chapters 01-05 on two
cores). Usage, from the repository root::

    python scripts/mutation_check.py                       # chapters 01-05, every mutation
    python scripts/mutation_check.py --chapters 01 04 09   # some chapters
    python scripts/mutation_check.py --mutations sigma_x2 p_off_by_2
    python scripts/mutation_check.py --list

Chapters 09 and 10 train networks. The restoration networks (``lemmse_lite.networks.zoo``) are keyed
by the source of the training code only, which no mutation touches, so ``--seed-cache DIR`` copies
``DIR/networks`` of a clean run into every fresh cache to skip their training. Nothing else is
copied: cached estimates and results, and chapter 10's diffusion network (whose key covers
``diffusion.py`` and so ``estimators.py``), are recomputed under each mutation.

It prints one table: rows the mutations, columns the chapters, ``CAUGHT`` / ``passed`` / ``-`` (not
run), and the first error line of each caught run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    target: str  # the module it changes, from the repository root
    old: str
    new: str
    chapters: tuple  # the chapters it concerns (where it must be caught)


MUTATIONS = [
    Mutation(
        "sigma_x_sqrt2", "every estimator uses sigma * sqrt(2) (temperature 4 sigma^2 instead of 2 sigma^2)",
        "lemmse_lite/estimators/estimator_inputs.py",
        "    sig = check_sigma(sigma, y.shape[0], y.device, dtype)\n",
        "    sig = check_sigma(sigma, y.shape[0], y.device, dtype) * 2**0.5\n",
        ("01", "02", "03", "04", "05", "09", "10"),
    ),
    Mutation(
        "sigma_x2", "every estimator uses 2 sigma",
        "lemmse_lite/estimators/estimator_inputs.py",
        "    sig = check_sigma(sigma, y.shape[0], y.device, dtype)\n",
        "    sig = check_sigma(sigma, y.shape[0], y.device, dtype) * 2\n",
        ("01", "02", "03", "04", "05", "09", "10"),
    ),
    Mutation(
        "bplus_dropped", "MMSE / E-MMSE score ||B(y - A x_i)||^2 instead of ||B+ B (y - A x_i)||^2",
        "lemmse_lite/estimators/image_estimators.py",
        "    W = None if Bop is None else Bop.pinv()\n",
        "    W = None\n",
        ("01", "03"),
    ),
    Mutation(
        "whitening_dropped", "LE-MMSE with an equivariant B scores unwhitened patches (L = I), the B+ of the patch",
        "lemmse_lite/estimators/local_queries.py",
        "        return (self.restrict(v).to(self.L.dtype) @ self.L.T).to(v.dtype)\n\n\n@dataclass\nclass DenseGroup",
        "        return self.restrict(v)\n\n\n@dataclass\nclass DenseGroup",
        ("05", "09"),
    ),
    Mutation(
        "shifts_ignored", "the E-MMSE ignores the shifts (it is the MMSE)",
        "lemmse_lite/estimators/image_estimators.py",
        "    return _image_estimator(y, train, sigma, A, B, True, chunk_size, engine)\n",
        "    return _image_estimator(y, train, sigma, A, B, False, chunk_size, engine)\n",
        ("03", "04"),
    ),
    Mutation(
        "p_off_by_2", "the LE-MMSE uses the patch size P - 2 (P + 2 when P = 1)",
        "lemmse_lite/estimators/local_estimators.py",
        "    _check_le_args(chunk_size, return_diagnostics, top_k, max_memory)\n",
        "    _check_le_args(chunk_size, return_diagnostics, top_k, max_memory)\n"
        "    patch_size = patch_size - 2 if patch_size >= 3 else patch_size + 2\n",
        ("04", "05", "09", "10"),
    ),
]
DEFAULT_CHAPTERS = ("01", "02", "03", "04", "05")


def scratch_copy(dest: Path) -> None:
    """The tracked and untracked (not ignored) files of the working tree, copied to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, check=True, capture_output=True).stdout.split(b"\0")
    for f in files:
        if not f:
            continue
        src = ROOT / f.decode()
        if src.is_file():
            (dest / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f.decode())


def mutate(tree: Path, m: Mutation | None) -> None:
    """Apply ``m`` to the scratch copy ``tree`` (``None``: the baseline, nothing changed)."""
    if m is None:
        return
    text = (ROOT / m.target).read_text()
    if text.count(m.old) != 1:
        sys.exit(f"mutation {m.name}: its text occurs {text.count(m.old)} times in {m.target} (the package "
                 "changed: update the mutation)")
    (tree / m.target).write_text(text.replace(m.old, m.new))


def run_chapter(tree: Path, chapter: str, cache: Path, timeout: int) -> tuple[bool, str, float]:
    """Execute one chapter of ``tree`` (converted copy in a temporary folder); (passed, first error, s)."""
    md = sorted((tree / "course").glob(f"{chapter}_*.md"))
    if len(md) != 1:
        sys.exit(f"no single chapter {chapter} in {tree / 'course'}")
    env = dict(os.environ, LEMMSE_PROFILE="quick", MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               LEMMSE_CACHE=str(cache), PYTHONPATH=str(tree))
    with tempfile.TemporaryDirectory(prefix=f"mut-{chapter}-") as work:
        nb = Path(work) / f"{chapter}.ipynb"
        subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--output", str(nb),
                        str(md[0])], check=True, env=env)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(nb),
             "--output", str(Path(work) / "out.ipynb"), f"--ExecutePreprocessor.timeout={timeout}"],
            cwd=work, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    if proc.returncode == 0:
        return True, "", elapsed
    lines = [ANSI.sub("", ln) for ln in proc.stderr.splitlines() if ln.strip()]
    arrows = [ln.split("---->", 1)[1].strip() for ln in lines if "---->" in ln]   # the failing line
    errors = [ln for ln in lines if ln.split(":")[0].endswith("Error") and not ln.startswith("[NbConvertApp]")]
    where = arrows[-1] if arrows else ""
    what = errors[-1] if errors else (lines[-1] if lines else "failed")
    return False, f"{what.strip()} at: {where}"[:220], elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chapters", nargs="+", default=list(DEFAULT_CHAPTERS))
    parser.add_argument("--mutations", nargs="+", default=[m.name for m in MUTATIONS])
    parser.add_argument("--all-chapters", action="store_true",
                        help="run every chapter under every mutation (default: only the chapters a mutation concerns)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--seed-cache", type=Path, help="a clean run's LEMMSE_CACHE whose networks to reuse")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per chapter")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:18s} {m.what} (concerns chapters {', '.join(m.chapters)})")
        return 0
    unknown = [n for n in args.mutations if n not in by_name]
    if unknown:
        parser.error(f"unknown mutations {unknown}; --list shows them")
    runs = ([] if args.no_baseline else [None]) + [by_name[n] for n in args.mutations]
    table: dict[str, dict[str, str]] = {}
    notes = []
    with tempfile.TemporaryDirectory(prefix="lemmse-mutation-") as tmp:
        for m in runs:
            name = "baseline (none)" if m is None else m.name
            tree = Path(tmp) / name.split()[0]
            scratch_copy(tree)
            mutate(tree, m)
            table[name] = {}
            for ch in args.chapters:
                if m is not None and not args.all_chapters and ch not in m.chapters:
                    table[name][ch] = "-"
                    continue
                cache = Path(tmp) / f"cache-{name.split()[0]}-{ch}"
                cache.mkdir()
                if args.seed_cache is not None and (args.seed_cache / "networks").is_dir():
                    shutil.copytree(args.seed_cache / "networks", cache / "networks")   # networks only
                ok, err, secs = run_chapter(tree, ch, cache, args.timeout)
                table[name][ch] = ("passed" if ok else "CAUGHT") + f" ({secs:.0f} s)"
                print(f"{name:18s} chapter {ch}: {table[name][ch]}{'' if ok else ' -- ' + err}", flush=True)
                if not ok:
                    notes.append(f"{name}, {ch}: {err}")
                shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(tree, ignore_errors=True)
    print("\n| mutation | " + " | ".join(args.chapters) + " | caught by a chapter it concerns |")
    print("| --- | " + " | ".join("---" for _ in args.chapters) + " | --- |")
    missed = []
    for m in runs:
        name = "baseline (none)" if m is None else m.name
        cells = [table[name][ch] for ch in args.chapters]
        if m is None:
            verdict = "all pass" if all(c.startswith("passed") for c in cells) else "BASELINE FAILS"
        else:
            concerned = [ch for ch in args.chapters if ch in m.chapters]
            caught = [ch for ch in concerned if table[name][ch].startswith("CAUGHT")]
            verdict = ", ".join(caught) if caught else ("NOT CAUGHT" if concerned else "not run")
            if concerned and not caught:
                missed.append(name)
        print(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    if notes:
        print("\nFirst error of each caught run:")
        for n in notes:
            print(f"- {n}")
    baseline_ok = args.no_baseline or all(c.startswith("passed") for c in table["baseline (none)"].values())
    return 0 if baseline_ok and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
