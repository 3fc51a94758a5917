"""The issue #11 privacy targets on digits, measured on real networks (not a timed test).

Target: DP at epsilon <= 8 (delta 1e-5) keeps test accuracy within 3 percentage points of the
non-private run, and membership-inference advantage at most 0.05, for both attacks of
``fedchain experiment privacy`` (loss threshold, offline LiRA). Prints each figure, whether it
meets its target, and the advantage guessing reaches one time in twenty on these set sizes.

    python benchmarks/privacy.py --epsilon 8 --clip 3 --out /tmp/privacy-bench
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from fedchain.node.tools.privacy import privacy_experiment


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--clip", type=float, default=3.0)
    ap.add_argument("--out", default="runs/privacy-bench")
    args = ap.parse_args()
    results, _ = privacy_experiment(epsilons=[math.inf, args.epsilon], clip=args.clip, out=Path(args.out), progress=print)
    base, dp = results
    report = {
        "epsilon": args.epsilon, "clip": args.clip, "accuracy_no_dp": base["accuracy"], "accuracy_dp": dp["accuracy"],
        "accuracy_drop_pp": round(100 * (base["accuracy"] - dp["accuracy"]), 2),
        "loss_advantage": dp["loss_advantage"], "lira_advantage": dp["lira_advantage"],
        "chance_advantage95": dp["chance_advantage95"],
    }
    report["accuracy_target_met"] = report["accuracy_drop_pp"] <= 3.0
    report["advantage_target_met"] = max(dp["loss_advantage"], dp["lira_advantage"]) <= 0.05
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
