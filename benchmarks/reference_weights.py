"""The default rule with another weighting of its exclusion test's reference, on the robustness grid.

The default rule's reference counts every member once (``vote``). This runs `experiment
robustness` with the reference weighted by the aggregate's own weights (``weights``, the version
before the vote) or by those weights capped at their lower median (``capped``), to measure the
vote against them (README, Robustness results: one member, one vote). Every run is a real network
on a real anvil, as in `fedchain experiment robustness`; only the rule's reference changes, in
this process.

    python benchmarks/reference_weights.py --reference weights --attacks ipm-spread,ipm-spread-cap \\
        --datasets digits --partition dirichlet --alpha 0.5 --seeds 0,1,2 --out runs/reference-weights
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from fedchain.node.aggregation import mean
from fedchain.node.tools.experiment import run_grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", choices=mean.REFERENCES, required=True)
    ap.add_argument("--attacks", default="ipm-spread")
    ap.add_argument("--datasets", default="digits")
    ap.add_argument("--partition", choices=("iid", "dirichlet"), default="dirichlet")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--peers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("runs/reference-weights"))
    args = ap.parse_args()
    mean.fedavg_clipped = functools.partial(mean.fedavg_clipped, reference=args.reference)  # FedAvg.combine calls it by name
    run_grid(datasets=args.datasets.split(","), rules=["fedavg"], attacks=args.attacks.split(","), fractions=[args.fraction],
             peers=args.peers, rounds=args.rounds, seeds=[int(s) for s in args.seeds.split(",")], partition=args.partition,
             alpha=args.alpha, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
