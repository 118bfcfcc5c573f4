"""Print the max abs error of every fast estimator against the float64 oracle.

    python tests/report_errors.py            # 8×8, P = 3, N = 5, batch of 2, grey and colour

One row per estimator × operator × pre-inverse × channels, one column per σ; a trailing '!'
marks an error above the budget of course/05_closed_form.md (see tolerance() in test_estimators_oracle.py).
"""

from __future__ import annotations

import os
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_estimators_oracle import CASES, ESTIMATORS, SIGMAS, grid_errors, tolerance


def main() -> int:
    header = f"{'estimator':<9} {'operator':<8} {'B':<9} {'C':>1} " + " ".join(
        f"σ={s:<9g}" for s in SIGMAS
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    bad = 0
    for est in ESTIMATORS:
        for op, pre in CASES:
            for C in (1, 3):
                cells = []
                try:
                    errs = grid_errors(est, op, pre, C)
                except Exception as exc:  # noqa: BLE001 - report, keep going
                    errs = {s: exc for s in SIGMAS}
                    if os.environ.get("REPORT_TRACEBACK"):
                        traceback.print_exc()
                for s in SIGMAS:
                    e = errs[s]
                    if isinstance(e, Exception):
                        bad += 1
                        cells.append(f"{type(e).__name__[:9]:>9}!")
                        continue
                    flag = "!" if e > tolerance(op, pre, s) else " "
                    bad += flag == "!"
                    worst = max(worst, e)
                    cells.append(f"{e:9.2e}{flag}")
                print(
                    f"{est:<9} {op:<8} {pre or 'I':<9} {C:>1} "
                    + " ".join(f"{c:<11}" for c in cells)
                )
    print(f"\nworst error {worst:.3g}; cells over budget or failing: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
