"""An in-process stand-in for ``fedchain experiment privacy``, for quick DP hyperparameter sweeps (not a timed test).

No chain, no peer processes: the same split, shards, 20% holdouts, initial model, DP-SGD (Opacus,
each peer's noise multiplier from the same accountant), sample-weighted FedAvg and both attacks
as ``experiment privacy`` runs them, in one process. Each peer's training seed differs from a
real peer's, so its DP noise draws, and its figures, differ from a real run's of the same seed:
use it to choose settings, then measure them with ``benchmarks/privacy.py``. Each argument is
one run's settings as JSON; one JSON line per run is printed.

    python benchmarks/privacy_sweep.py '{"eps": 8, "clip": 3, "bs": 64, "model": "logreg", "seed": 1}' '{"eps": "inf"}'

Its output for the runs behind the README's exploration note is docs/results/privacy-v2/exploration/runs.jsonl.
"""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import replace

import numpy as np


def run(eps, clip=1.0, bs=32, lr=0.05, epochs=5, rounds=5, seed=0, model="mlp", hidden=(64,), momentum=0.9, peers=4, shadows=8) -> dict:
    """One stand-in run: accuracy of the final model and both attacks' AUC, advantage and cross-fitted advantage."""
    import torch

    from fedchain.node.ml.data import Dataset, load_dataset, partition, train_test_split
    from fedchain.node.ml.importers import with_holdout
    from fedchain.node.ml.models import init_state
    from fedchain.node.ml.privacy import noise_multiplier_for, train_private
    from fedchain.node.ml.training import evaluate, train_local
    from fedchain.node.protocol.task import PrivacyConfig, TrainConfig
    from fedchain.node.tools import privacy as P
    from fedchain.node.tools.operations import model_spec

    torch.set_num_threads(1)
    ds = load_dataset("digits")
    train, test = train_test_split(ds, seed=seed)
    parts = partition(train, peers, alpha=None, seed=seed)
    shards = [with_holdout(Dataset(train.name, train.x[idx], train.y[idx], train.classes), 0.2, seed=seed * 1000 + i) for i, idx in enumerate(parts)]
    spec = model_spec(model, ds.inputs, ds.classes, tuple(hidden))
    dp = None if eps == math.inf else PrivacyConfig(delta=1e-5, max_grad_norm=clip, epsilon=eps)
    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=lr, momentum=momentum, dp=dp)
    state = init_state(spec, seed)
    sigmas = [noise_multiplier_for(dp, cfg, rounds, len(s.y)) if dp else None for s in shards]
    for r in range(1, rounds + 1):
        deltas, weights = [], []
        for i, s in enumerate(shards):
            peer_seed = seed * 100_003 + r + 7919 * i
            if dp:
                d, _, _ = train_private(spec, state, s, cfg, noise_multiplier=sigmas[i], seed=peer_seed)
            else:
                d, _ = train_local(spec, state, s, cfg, seed=peer_seed)
            deltas.append(d)
            weights.append(len(s.y))
        state = {k: state[k] + sum(w * d[k] for w, d in zip(weights, deltas)) / sum(weights) for k in state}
    mx, my = np.concatenate([s.x for s in shards]), np.concatenate([s.y for s in shards])
    aux = Dataset("aux", np.concatenate([s.x_holdout for s in shards]), np.concatenate([s.y_holdout for s in shards]), train.classes)
    lm, ln = P.loss_threshold_scores(P.per_example_losses(spec, state, mx, my), P.per_example_losses(spec, state, test.x, test.y))
    tx, ty = np.concatenate([mx, test.x]), np.concatenate([my, test.y])
    shadow = P.shadow_logits(spec, replace(cfg, dp=None), aux, tx, ty, shadows=shadows, epochs=rounds * epochs, seed=seed)
    lira = P.lira_offline_scores(P.true_label_logits(spec, state, tx, ty), shadow)
    li_m, li_n = lira[: len(my)], lira[len(my):]
    return {"eps": eps, "clip": clip, "bs": bs, "lr": lr, "epochs": epochs, "rounds": rounds, "seed": seed, "model": model, "hidden": list(hidden),
            "sigma": sigmas[0], "acc": evaluate(spec, state, test), "loss_adv": P.membership_advantage(lm, ln), "lira_adv": P.membership_advantage(li_m, li_n),
            "loss_auc": P.roc_auc(lm, ln), "lira_auc": P.roc_auc(li_m, li_n), "loss_cv": P.crossfit_advantage(lm, ln, seed=seed),
            "lira_cv": P.crossfit_advantage(li_m, li_n, seed=seed)}


def main() -> int:
    warnings.filterwarnings("ignore")  # Opacus's secure-RNG notice, once per peer and round
    for arg in sys.argv[1:]:
        kw = json.loads(arg)
        if kw.get("eps") == "inf":
            kw["eps"] = math.inf
        t0 = time.time()
        res = run(**kw) | {"s": round(time.time() - t0, 1)}
        print(json.dumps({k: ("inf" if v == math.inf else round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
