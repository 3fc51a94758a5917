"""How alike honest updates are, in clean runs: what the default rule's near-copy count (a set of
updates at cosine >= 15/16 weighs as one, ``aggregation.mean.PARALLEL_COS``) costs honest peers.

Runs ``experiment.run_grid`` (real anvil, real store, clean runs only) with the default rule's
``combine`` wrapped to record the exact rows it sees, and reports per partition: the largest
cosine between two updates of a round, and how many rounds had a near-parallel pair.

    python benchmarks/near_copies.py --partitions iid,0.5,0.1 --seeds 0,1,2 --out near-copies.json
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

from fedchain.node.aggregation import mean as mean_rule
from fedchain.node.aggregation._exact import exact_products
from fedchain.node.tools.experiment import run_grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--partitions", default="iid,0.5,0.1", help="iid, or Dirichlet alphas")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--peers", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    seen: list[list[list[int]]] = []
    original = mean_rule.FedAvg.combine

    def recording(self, rows, weights):
        seen.append(exact_products(rows))
        return original(self, rows, weights)

    mean_rule.FedAvg.combine = recording
    report = []
    for part in args.partitions.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            seen.clear()
            with tempfile.TemporaryDirectory() as tmp:
                [res] = run_grid(datasets=[args.dataset], rules=["fedavg"], attacks=["none"], fractions=[0.0], peers=args.peers,
                                 rounds=args.rounds, seeds=[seed], partition="iid" if part == "iid" else "dirichlet",
                                 alpha=0.5 if part == "iid" else float(part), out=Path(tmp), progress=lambda *_: None)
            # every peer computes each round's aggregate; the rows are the same, so one per round
            rounds = {}
            for gram in seen:
                rounds.setdefault(tuple(gram[i][i] for i in range(len(gram))), gram)
            worst, pairs = -1.0, 0
            for gram in rounds.values():
                n = len(gram)
                pairs += sum(len(group) - 1 for group in mean_rule.near_parallel(gram)) // 2  # the rule's own test
                for i in range(n):
                    for j in range(i + 1, n):
                        if gram[i][i] and gram[j][j]:
                            worst = max(worst, gram[i][j] / math.sqrt(gram[i][i] * gram[j][j]))
            row = {"partition": part, "seed": seed, "rounds": len(rounds), "max_cosine": round(worst, 4),
                   "near_parallel_pairs": pairs, "final_accuracy": res["final_accuracy"],
                   "lowest_reputation": min(res["reputation"][-1])}
            report.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
