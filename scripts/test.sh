#!/usr/bin/env bash
# The README's test command: unit tests, every course notebook executed under the quick profile
# (nbval; converted notebooks carry no outputs, so their asserts are the checks), then the book's
# content build. Run from the repository root after `pip install -e ".[dev,course]"`.
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

echo "== unit tests"
pytest_ok -q --durations=10 tests

shopt -s nullglob
chapters=(course/*.md)
if [ "${#chapters[@]}" -gt 0 ]; then
    echo "== course notebooks (LEMMSE_PROFILE=$LEMMSE_PROFILE)"
    jupytext --quiet --to ipynb "${chapters[@]}"
    pytest_ok -q --nbval-lax --nbval-current-env --durations=0 -p no:cacheprovider course/
fi

if [ -f book/myst.yml ]; then
    echo "== book content build"
    (cd book && jupyter book build --site > ../book-build.log 2>&1) || true
    python scripts/check_book_log.py book-build.log
fi
