#!/usr/bin/env bash
# The README's test command: unit tests (with the `lemmse course` smoke and the browser test),
# every course chapter executed once under the quick profile (nbval on converted COPIES in a
# temporary folder: a learner's paired course/*.ipynb and their saved outputs are never touched;
# converted notebooks carry no outputs, so their asserts are the checks), then the book: the
# content build checked (no error, no warning) and one chapter executed through the book's own
# Jupyter server, offline. Run from the repository root after `pip install -e ".[dev,course]"`.
set -euo pipefail
cd "$(dirname "$0")/.."
export LEMMSE_PROFILE="${LEMMSE_PROFILE:-quick}"
export MPLBACKEND="${MPLBACKEND:-Agg}"
if [ "$(id -u)" = "0" ] && [ -z "${JUPYTER_CONFIG_DIR:-}" ]; then
    export JUPYTER_CONFIG_DIR="$PWD/.ci/jupyter"   # allow_root for kernels started as root
fi

pytest_ok() {  # pytest's exit 5 ("no tests collected") is not a failure of the suite
    local rc=0; python -m pytest "$@" || rc=$?
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
}
step() { echo "== $1 ($(date +%T))"; }

step "unit tests"
pytest_ok -q --durations=10 tests

shopt -s nullglob
chapters=(course/*.md)
if [ "${#chapters[@]}" -gt 0 ]; then
    step "course notebooks (LEMMSE_PROFILE=$LEMMSE_PROFILE), converted copies"
    copies="$(mktemp -d)"
    trap 'rm -rf "$copies"' EXIT
    for md in "${chapters[@]}"; do
        jupytext --quiet --to ipynb --output "$copies/$(basename "${md%.md}").ipynb" "$md"
    done
    pytest_ok -q --nbval-lax --nbval-current-env --durations=0 -p no:cacheprovider "$copies"
fi

if [ -f book/myst.yml ]; then
    step "book content build"
    python scripts/check_book.py --log book-build.log
    step "book: one chapter executed offline (smoke)"
    python scripts/check_book.py --execute --only 00 --log book-smoke.log
fi
step "done"
