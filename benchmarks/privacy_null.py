"""A null control for ``fedchain experiment privacy``'s membership inference (not a timed test).

Both attacks, exactly as the experiment runs them (the same split, shards, holdouts, members,
non-members and shadow models), aimed at a model that trained on neither the members nor the
non-members: a logreg trained centrally, without DP, on a random 70% of the attacker's own
holdout data. Whatever advantage the attacks show here is the measurement's noise floor on real
data, to compare with what guessing reaches on these set sizes (``chance_levels``). No chain:
the data and the attacks are the experiment's, the target is not.

    python benchmarks/privacy_null.py --seeds 0,1,2 --targets 3
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--targets", type=int, default=3, help="null targets per seed")
    ap.add_argument("--shadows", type=int, default=8)
    args = ap.parse_args()

    from fedchain.node.ml.data import Dataset, load_dataset, partition, train_test_split
    from fedchain.node.ml.importers import with_holdout
    from fedchain.node.ml.models import init_state
    from fedchain.node.ml.training import train_local
    from fedchain.node.protocol.task import TrainConfig
    from fedchain.node.tools import privacy as P
    from fedchain.node.tools.operations import model_spec

    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        ds = load_dataset("digits")
        train, test = train_test_split(ds, seed=seed)  # as simulate splits, partitions and keeps holdouts
        parts = partition(train, 4, alpha=None, seed=seed)
        shards = [with_holdout(Dataset(train.name, train.x[idx], train.y[idx], train.classes), 0.2, seed=seed * 1000 + i)
                  for i, idx in enumerate(parts)]
        spec = model_spec("logreg", ds.inputs, ds.classes)
        cfg = TrainConfig(epochs=25, batch_size=64, lr=0.05)
        mx, my = np.concatenate([s.x for s in shards]), np.concatenate([s.y for s in shards])
        aux = Dataset("aux", np.concatenate([s.x_holdout for s in shards]), np.concatenate([s.y_holdout for s in shards]), train.classes)
        tx, ty = np.concatenate([mx, test.x]), np.concatenate([my, test.y])
        shadow = P.shadow_logits(spec, cfg, aux, tx, ty, shadows=args.shadows, epochs=cfg.epochs, seed=seed)
        for k in range(args.targets):
            pick = np.random.default_rng(100 + k).permutation(len(aux.y))[: int(0.7 * len(aux.y))]
            base = init_state(spec, seed=999 + k)
            delta, _ = train_local(spec, base, Dataset("null", aux.x[pick], aux.y[pick], aux.classes), cfg, seed=k)
            state = {n: base[n] + delta[n] for n in base}
            lm, ln = P.loss_threshold_scores(P.per_example_losses(spec, state, mx, my), P.per_example_losses(spec, state, test.x, test.y))
            lira = P.lira_offline_scores(P.true_label_logits(spec, state, tx, ty), shadow)
            li_m, li_n = lira[: len(my)], lira[len(my):]
            rows.append({"seed": seed, "target": k, "loss_advantage": P.membership_advantage(lm, ln), "lira_advantage": P.membership_advantage(li_m, li_n),
                         "loss_advantage_cv": P.crossfit_advantage(lm, ln, seed=seed), "lira_advantage_cv": P.crossfit_advantage(li_m, li_n, seed=seed),
                         "loss_auc": P.roc_auc(lm, ln), "lira_auc": P.roc_auc(li_m, li_n)})
            print(json.dumps(rows[-1]), flush=True)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("seed", "target")}
    print(json.dumps({"mean": mean, "chance": P.chance_levels(len(my), len(test.y))}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
