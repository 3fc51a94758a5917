"""Membership inference against the final model, and ``fedchain experiment privacy``.

What an attacker learns about whether one sample was in some member's training data, from the
final global model (public: every finalized model is in the store):

* **Loss threshold** (Yeom et al., "Privacy Risk in Machine Learning: Analyzing the Connection
  to Overfitting", CSF 2018): a sample is called a member when the model's loss on it is low.
  The score is minus the per-example cross-entropy.
* **Shadow models, offline LiRA** (Carlini et al., "Membership Inference Attacks From First
  Principles", IEEE S&P 2022; shadow models after Shokri et al., S&P 2017): the attacker trains
  shadow models like the target on data of the same distribution that it holds itself, none of
  which contains the samples attacked. For each attacked sample it fits a Gaussian to the shadow
  models' logit-scaled confidence on the sample's true label (the sample's "out" distribution)
  and scores the target's confidence by how far above that distribution it lies (one-sided
  likelihood-ratio test against the out hypothesis, with one variance shared by all samples, as
  the paper advises with few shadow models).

Both are measured by the ROC AUC over members and non-members and by the membership advantage
``max over thresholds of TPR - FPR`` (Yeom et al.'s advantage; 0 for an attacker no better than
chance, 1 for a perfect one), and by the same advantage cross-fitted (``crossfit_advantage``: the
threshold fitted on half the samples and scored on the other half, so that guessing scores 0 on
average rather than ``chance_levels``' ``advantage_mean``). Members are the training samples of the members' shards,
non-members the test split no member holds; the shadow models' data are the members' holdouts
(never trained on by anyone), so the three sets are disjoint and from one distribution.

``privacy_experiment`` runs a real simulation (devnet, contract, peer processes) per epsilon and
attacks each final model; it also inverts every member's round-1 update as anyone fetches it (its
CID from the chain's public update events, its bytes from the store; see ``inversion.py``), and
writes results.csv, results.json and the plots.
"""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["roc_auc", "membership_advantage", "crossfit_advantage", "attack_metrics", "loss_threshold_scores", "lira_offline_scores",
           "per_example_losses", "true_label_logits", "chance_levels", "shadow_logits", "parse_epsilons", "privacy_experiment",
           "plot_privacy", "PRIVACY_HEADERS", "privacy_rows", "invert_published_updates"]


# ---------------------------------------------------------------------------- metrics (NumPy)
def roc_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """ROC AUC of scores where higher means "member": the probability that a random member
    outscores a random non-member, ties counting one half (Mann-Whitney U over mid-ranks)."""
    m, n = np.asarray(members, dtype=np.float64).ravel(), np.asarray(nonmembers, dtype=np.float64).ravel()
    if m.size == 0 or n.size == 0:
        raise ValueError("AUC needs at least one member and one non-member score")
    scores = np.concatenate([m, n])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size, dtype=np.float64)
    sorted_scores = scores[order]
    # Mid-ranks: every run of equal scores gets the mean of its 1-based positions.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], scores.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2.0
    return float(u / (m.size * n.size))


def membership_advantage(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """``max over thresholds t of TPR(t) - FPR(t)``, calling "member" when score >= t; in [0, 1]."""
    m, n = np.asarray(members, dtype=np.float64).ravel(), np.asarray(nonmembers, dtype=np.float64).ravel()
    if m.size == 0 or n.size == 0:
        raise ValueError("the advantage needs at least one member and one non-member score")
    thresholds = np.unique(np.concatenate([m, n]))
    m_sorted, n_sorted = np.sort(m), np.sort(n)
    tpr = 1.0 - np.searchsorted(m_sorted, thresholds, side="left") / m.size  # share of members >= t
    fpr = 1.0 - np.searchsorted(n_sorted, thresholds, side="left") / n.size
    return float(max(0.0, np.max(tpr - fpr)))


def _advantage_at(members: np.ndarray, nonmembers: np.ndarray, threshold: float) -> float:
    """TPR - FPR of calling "member" when score >= ``threshold`` (may be negative)."""
    return float(np.mean(members >= threshold) - np.mean(nonmembers >= threshold))


def _best_threshold(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """A threshold reaching ``membership_advantage``'s maximum TPR - FPR on these scores: midway
    between the maximizing score (the lowest on ties) and the next lower one, so that it does not
    sit on the edge of the fitted scores."""
    thresholds = np.unique(np.concatenate([members, nonmembers]))
    m_sorted, n_sorted = np.sort(members), np.sort(nonmembers)
    gap = np.searchsorted(n_sorted, thresholds, side="left") / n_sorted.size - np.searchsorted(m_sorted, thresholds, side="left") / m_sorted.size
    best = int(np.argmax(gap))
    return float(thresholds[best] if best == 0 else (thresholds[best] + thresholds[best - 1]) / 2)


def crossfit_advantage(members: np.ndarray, nonmembers: np.ndarray, *, seed: int = 0) -> float:
    """The membership advantage with the threshold fitted on other samples than those it is
    scored on (two-fold cross-fitting): members and non-members are each split at random into two
    halves; the best threshold on one half (``membership_advantage``'s) is scored on the other
    half as TPR - FPR, both ways, and the two are averaged.

    ``membership_advantage`` picks its threshold on the very samples it scores, so it is biased
    upward: an attacker that knows nothing reaches about 0.63 x sqrt((m + n) / (m n)) on average
    (``chance_levels``' ``advantage_mean``; 0.038 for 1,153 members and 359 non-members).
    This estimate is not: guessing scores 0 on average (negative values are guessing's noise),
    and a threshold that separates the sets does so on the held-out half too."""
    m, n = np.asarray(members, dtype=np.float64).ravel(), np.asarray(nonmembers, dtype=np.float64).ravel()
    if m.size < 2 or n.size < 2:
        raise ValueError("cross-fitting needs at least two member and two non-member scores")
    rng = np.random.default_rng(seed)
    pm, pn = rng.permutation(m.size), rng.permutation(n.size)
    folds = [(m[pm[: m.size // 2]], n[pn[: n.size // 2]]), (m[pm[m.size // 2:]], n[pn[n.size // 2:]])]
    return float(np.mean([_advantage_at(*folds[1 - k], _best_threshold(*folds[k])) for k in (0, 1)]))


def attack_metrics(members: np.ndarray, nonmembers: np.ndarray) -> dict[str, float]:
    return {"auc": roc_auc(members, nonmembers), "advantage": membership_advantage(members, nonmembers)}


def chance_levels(members: int, nonmembers: int) -> dict[str, float]:
    """What an attacker with no information reaches by luck on sets of these sizes, 95% of the
    time (two-sided for the AUC): the AUC's normal approximation under the null, 0.5 + 1.96 x
    sqrt((m + n + 1) / (12 m n)) (Mann-Whitney), and the advantage's, which is the two-sample
    Kolmogorov-Smirnov statistic: 1.358 x sqrt((m + n) / (m n)). Measured values below these are
    indistinguishable from guessing. ``advantage_mean`` is what guessing reaches on average: the
    advantage is the one-sided statistic, whose limit law P(D > x) = exp(-2 x^2) has mean
    sqrt(pi / 8) = 0.627, times the same scale (0.038 for 1,153 members and 359 non-members)."""
    m, n = members, nonmembers
    return {"auc": 0.5 + 1.96 * math.sqrt((m + n + 1) / (12 * m * n)), "advantage": 1.358 * math.sqrt((m + n) / (m * n)),
            "advantage_mean": math.sqrt(math.pi / 8) * math.sqrt((m + n) / (m * n))}


def loss_threshold_scores(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yeom et al.'s attack: the lower the loss, the likelier a member."""
    return -np.asarray(member_losses, dtype=np.float64), -np.asarray(nonmember_losses, dtype=np.float64)


def lira_offline_scores(target: np.ndarray, shadow_out: np.ndarray) -> np.ndarray:
    """Offline LiRA: ``target`` holds the target model's logit-scaled confidence per sample,
    ``shadow_out`` (shadows x samples) the shadow models' (none trained on the samples). The
    score is the sample's z-score above its own out-distribution mean, with the variance pooled
    over all samples."""
    target = np.asarray(target, dtype=np.float64)
    shadow_out = np.asarray(shadow_out, dtype=np.float64)
    if shadow_out.ndim != 2 or shadow_out.shape[1] != target.size or shadow_out.shape[0] < 2:
        raise ValueError("LiRA needs at least two shadow models' scores for every target sample")
    mu = shadow_out.mean(axis=0)
    sigma = float(np.sqrt(np.mean(shadow_out.var(axis=0, ddof=1)))) or 1e-12
    return (target - mu) / sigma


# ---------------------------------------------------------------------------- model queries (torch)
def _outputs(spec, state, x: np.ndarray):
    import torch

    from ..ml.models import build_model

    model = build_model(spec)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).double()


def per_example_losses(spec, state, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cross-entropy of the model on each (x, y)."""
    import torch

    logits = _outputs(spec, state, x)
    return torch.nn.functional.cross_entropy(logits, torch.from_numpy(y), reduction="none").numpy()


def true_label_logits(spec, state, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's statistic: log(p_y / (1 - p_y)) of the softmax confidence p_y on the true label,
    computed stably as logit_y - logsumexp(other logits)."""
    import torch

    logits = _outputs(spec, state, x)
    idx = torch.from_numpy(y).long()
    true = logits.gather(1, idx[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, idx[:, None], float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


def shadow_logits(spec, train_cfg, aux, targets_x: np.ndarray, targets_y: np.ndarray, *, shadows: int, epochs: int,
                  seed: int) -> np.ndarray:
    """(shadows x samples) LiRA statistics of ``shadows`` models trained, like the target's
    members train (same architecture, optimizer and learning rate, ``epochs`` passes, no DP), each
    on a random half of the attacker's own data ``aux``."""
    from dataclasses import replace

    from ..ml.data import Dataset
    from ..ml.models import init_state
    from ..ml.training import train_local

    rng = np.random.default_rng(seed)
    cfg = replace(train_cfg, epochs=epochs, dp=None)
    out = []
    for k in range(shadows):
        pick = rng.permutation(len(aux.y))[: len(aux.y) // 2]
        base = init_state(spec, seed=seed * 1_000 + k)
        delta, _ = train_local(spec, base, Dataset(aux.name, aux.x[pick], aux.y[pick], aux.classes), cfg, seed=seed * 1_000 + k)
        out.append(true_label_logits(spec, {n: base[n] + delta[n] for n in base}, targets_x, targets_y))
    return np.stack(out)


# ---------------------------------------------------------------------------- the experiment
def parse_epsilons(text: str) -> list[float]:
    """``inf,8,4,1`` -> [inf, 8.0, 4.0, 1.0]; ``inf`` is the run without DP."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            value = math.inf if part in ("inf", "none") else float(part)
        except ValueError:
            raise ConfigError(f"--epsilons must be numbers or inf, got {part!r}") from None
        if not (value == math.inf or (math.isfinite(value) and 0 < value <= 1_000)):
            raise ConfigError(f"--epsilons: each epsilon must be in (0, 1000] or inf, got {part!r}")
        out.append(value)
    if not out:
        raise ConfigError("--epsilons needs at least one value")
    return out


def _attack(work: Path, summary: dict, *, shadows: int, seed: int) -> dict:
    """Both attacks on a finished simulation's final model."""
    from ..ledger.updates import load_model
    from ..ml.data import Dataset, load_shard
    from ..protocol.task import Task
    from ..store import EmbeddedStore
    from .deployment import Deployment

    dep = Deployment.load(work / "deployment.json")
    task = Task.from_dict(dep.task)
    if task.train.kind != "classification":
        raise ConfigError("membership inference here attacks classifiers")
    state = load_model(EmbeddedStore(work / "store"), summary["final_model"], task)
    shards = [load_shard(p) for p in sorted((work / "shards").glob("peer-*.safetensors"))]
    test = load_shard(work / "test.safetensors")
    mx, my = np.concatenate([s.x for s in shards]), np.concatenate([s.y for s in shards])
    holdouts = [s for s in shards if s.x_holdout is not None]
    if not holdouts:
        raise ConfigError("the shadow models need the members' holdouts: run with a holdout")
    aux = Dataset("aux", np.concatenate([s.x_holdout for s in holdouts]), np.concatenate([s.y_holdout for s in holdouts]),
                  shards[0].classes)
    loss_m, loss_n = loss_threshold_scores(per_example_losses(task.model, state, mx, my),
                                           per_example_losses(task.model, state, test.x, test.y))
    tx, ty = np.concatenate([mx, test.x]), np.concatenate([my, test.y])
    shadow = shadow_logits(task.model, task.train, aux, tx, ty, shadows=shadows, epochs=task.rounds * task.train.epochs, seed=seed)
    lira = lira_offline_scores(true_label_logits(task.model, state, tx, ty), shadow)
    loss, lr = attack_metrics(loss_m, loss_n), attack_metrics(lira[: len(my)], lira[len(my):])
    chance = chance_levels(len(my), len(test.y))
    return {"members": int(len(my)), "nonmembers": int(len(test.y)), "shadow_samples": int(len(aux.y)),
            "chance_auc95": chance["auc"], "chance_advantage95": chance["advantage"], "chance_advantage_mean": chance["advantage_mean"],
            "loss_auc": loss["auc"], "loss_advantage": loss["advantage"], "lira_auc": lr["auc"], "lira_advantage": lr["advantage"],
            "loss_advantage_cv": crossfit_advantage(loss_m, loss_n, seed=seed),
            "lira_advantage_cv": crossfit_advantage(lira[: len(my)], lira[len(my):], seed=seed)}


def _data_of(work: Path, task, member: int):
    """(the member's training inputs, the test split no member holds), as the model sees them."""
    from ..ml.data import load_shard, standardize

    constants = (task.data.mean, task.data.std) if task.data else ((), ())
    shard = standardize(load_shard(work / "shards" / f"peer-{member}.safetensors"), *constants)
    test = standardize(load_shard(work / "test.safetensors"), *constants)
    return shard.x, test.x


def invert_published_updates(work: Path, *, round_: int = 1, k: int = 64, matching_batch: int = 8, seed: int = 0) -> dict:
    """Both update inversions (``inversion.py``) on every member's update of ``round_`` in a
    finished simulation, each fetched as anyone can: the run's chain is restarted from its saved
    state, the updates' CIDs read from its public update events (``public_updates``: the revealed
    ones in a sealed task) and the round's base model from the round history, the bytes from the
    store. Each member's reconstructions are measured against its own training inputs and as
    many non-members (the test split), then pooled over the members: ``inversion_*`` (analytic,
    first layer) and ``matching_*`` (gradient matching); ``*_distinct`` sums the training
    examples recovered per member, ``*_nn_chance95`` is the match rate guessing stays under 95% of
    the time (binomial, normal approximation) for that many reconstructions."""
    from ..chain import ChainClient
    from ..ledger.history import round_history
    from ..ledger.updates import load_model, public_updates
    from ..protocol.cid import digest_to_cid
    from ..protocol.secure import KIND_MASKED
    from ..protocol.task import Task
    from ..store import EmbeddedStore
    from .deployment import Deployment
    from .devnet import Devnet

    dep = Deployment.load(work / "deployment.json")
    task = Task.from_dict(dep.task)
    peers = len(list((work / "shards").glob("peer-*.safetensors")))
    devnet = Devnet(accounts=peers + 1, state_file=str(work / "anvil-state.json"))
    try:
        devnet.start()
        chain = ChainClient(devnet.rpc_url, dep.contract, retry_seconds=10)
        if task.secure_aggregation is not None:  # what is public of an update: the masked artifact
            published = {str(ev.args.peer).lower(): digest_to_cid(bytes(ev.args.digest)) for ev in chain.events(
                "Published", from_block=dep.deploy_block, round=round_, kind=KIND_MASKED)}
        else:
            published = {u.peer.lower(): u.cid for u in public_updates(chain, round_, from_block=dep.deploy_block)}
        record = next((r for r in round_history(chain, from_block=dep.deploy_block) if r.round == round_), None)
        base_cid = record.base_model if record else None
        accounts = [a.lower() for a in devnet.addresses[1 : peers + 1]]  # the simulation's member i holds account i + 1
    finally:
        devnet.stop()
    targets = [(i, published[a]) for i, a in enumerate(accounts) if a in published]
    if not targets or base_cid is None:
        raise ConfigError(f"no member published an update in round {round_} of {work}")
    store = EmbeddedStore(work / "store")
    base = load_model(store, base_cid, task)
    per = [_invert_one(work, task, store, base, i, cid, k=k, matching_batch=matching_batch, seed=seed) for i, cid in targets]
    out: dict = {"inversion_round": round_, "inversion_updates": len(per)}
    if record is not None and record.model:
        out["update_step_cosine_max"] = max(abs(_step_cosine(store, task, base, record.model, cid)) for _, cid in targets)
    for attack in ("inversion", "matching"):
        rows = [p[attack] for p in per]
        n = sum(r["reconstructions"] for r in rows)
        pooled = lambda key: sum(r[key] * r["reconstructions"] for r in rows if r["reconstructions"]) / n if n else math.nan  # noqa: E731
        out |= {f"{attack}_reconstructions": n, f"{attack}_psnr_mean": pooled("psnr_mean"), f"{attack}_nn_match": pooled("nn_match"),
                f"{attack}_distinct": sum(r["distinct"] for r in rows),
                f"{attack}_distinct_nonmembers": sum(r["distinct_nonmembers"] for r in rows),
                f"{attack}_nn_chance95": 0.5 + 1.96 * math.sqrt(0.25 / n) if n else math.nan,
                f"{attack}_per_member": [{"member": p["member"], "update": p["update"], **p[attack]} for p in per]}
    return out


def _step_cosine(store, task, base, model_cid: str, update_cid: str) -> float:
    """Cosine between a published update (as its tensors read: float deltas, or a masked update's
    int64 values) and the round's actual step (its finalized model minus its base), over every
    floating-point coordinate in canonical order."""
    import torch

    from ..ledger.updates import load_model
    from ..protocol.artifact import decode
    from ..protocol.fixedpoint import quantize

    new = load_model(store, model_cid, task)
    names = [n for n in sorted(base) if base[n].is_floating_point()]
    step = torch.cat([(quantize(new[n].reshape(-1)) - quantize(base[n].reshape(-1))).double() for n in names])
    art = decode(store.get(update_cid, max_bytes=task.max_update_bytes), max_bytes=task.max_update_bytes)
    vec = torch.cat([art.tensors[n].reshape(-1).double() for n in names])
    denom = float(vec.norm() * step.norm())
    return float(vec @ step) / denom if denom else 0.0


def _invert_one(work: Path, task, store, base, member: int, cid: str, *, k: int, matching_batch: int, seed: int) -> dict:
    """Both inversions of one member's update ``cid``, measured against its training inputs."""
    from .inversion import balanced, gradient_matching, invert_artifact, reconstruction_metrics, update_tensors

    data = store.get(cid, max_bytes=task.max_update_bytes)
    train_x, test_x = _data_of(work, task, member)
    members, nonmembers = balanced(train_x.reshape(len(train_x), -1), test_x.reshape(len(test_x), -1), seed=seed + member)
    lo, hi = float(test_x.min()), float(test_x.max())  # the attacker's own data of the same distribution
    analytic = invert_artifact(data, task.model, k=k, max_bytes=task.max_update_bytes, clip=(lo, hi)).x
    matched = gradient_matching(task.model, base, update_tensors(data, max_bytes=task.max_update_bytes), batch=matching_batch,
                                seed=seed + member, clip=(lo, hi))
    return {"member": member, "update": cid, "inversion": reconstruction_metrics(analytic, members, nonmembers),
            "matching": reconstruction_metrics(matched, members, nonmembers)}


def privacy_experiment(*, epsilons: list[float], dataset: str = "digits", peers: int = 4, rounds: int = 5, epochs: int = 5,
                       lr: float = 0.05, delta: float = 1e-5, clip: float = 1.0, shadows: int = 8, seed: int = 0,
                       out: Path, progress=print, secure: bool = False, model: str = "mlp",
                       batch_size: int = 32) -> tuple[list[dict], list[Path]]:
    """One simulation per epsilon (``inf``: no DP), each attacked by both attacks; writes
    results.csv, results.json and the plots in ``out``. Returns (results, files written).
    ``model``, ``batch_size``, ``lr``, ``epochs`` and ``rounds`` are the same in every run, the
    one without DP included, so each epsilon is compared with like.
    ``secure``: every epsilon once more under secure aggregation (one bucket, fedavg-plain), where
    the update an attacker can fetch is the masked one."""
    from ..protocol.task import PrivacyConfig
    from .operations import SecureOptions
    from .simulate import SimulationConfig, run_simulation

    if not 2 <= shadows <= 256:
        raise ConfigError(f"--shadows must be between 2 and 256, got {shadows}")
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for eps, masked in [(e, False) for e in epsilons] + ([(e, True) for e in epsilons] if secure else []):
        name = ("inf" if eps == math.inf else f"{eps:g}") + (" + secure aggregation" if masked else "")
        work = out / "runs" / f"eps-{name.split()[0]}{'-secagg' if masked else ''}"
        if (work / "deployment.json").exists():
            raise ConfigError(f"{work} already holds a run: choose another --out")
        dp = None if eps == math.inf else PrivacyConfig(delta=delta, max_grad_norm=clip, epsilon=eps)
        cfg = SimulationConfig(peers=peers, rounds=rounds, dataset=dataset, seed=seed, epochs=epochs, lr=lr, holdout=0.2, model=model, batch_size=batch_size,
                               workdir=str(work), dp=dp, block_time=1.0, **(
                                   {"secure": SecureOptions(), "update_reveal_blocks": 0, "rule": "fedavg-plain"} if masked else {}))
        t0 = time.monotonic()
        progress(f"epsilon {name}: simulating {peers} peers, {rounds} rounds of {epochs} epochs on {dataset} ({model}, batch {batch_size}, "
                 f"lr {lr:g}{'' if dp is None else f', clip {clip:g}'})")
        summary = run_simulation(cfg, progress=lambda msg: None)
        if summary["rounds_finalized"] != rounds or summary["peer_failures"]:
            raise ConfigError(f"epsilon {name}: {summary['rounds_finalized']}/{rounds} rounds finalized, "
                              f"peer failures {summary['peer_failures']}; see {work / 'logs'}")
        attacked = _attack(work, summary, shadows=shadows, seed=seed) | invert_published_updates(work, seed=seed)
        spent = [e for e in (summary["privacy"] or {}).get("final_epsilon", []) if e is not None]
        row = {"epsilon": eps, "secure_aggregation": masked, "model": model, "batch_size": batch_size, "lr": lr, "epochs": epochs,
               "rounds": rounds, "clip": None if dp is None else clip, "seed": seed, "epsilon_spent_max": max(spent) if spent else None, "delta": None if dp is None else delta,
               "noise_multiplier": (summary["privacy"] or {}).get("noise_multiplier"), "accuracy": summary["final_test_accuracy"],
               "rounds_finalized": summary["rounds_finalized"], **attacked, "seconds": round(time.monotonic() - t0, 1)}
        results.append(row)
        progress(f"epsilon {name}: accuracy {row['accuracy']:.4f}, loss-threshold AUC {row['loss_auc']:.3f} adv {row['loss_advantage']:.3f}, "
                 f"LiRA AUC {row['lira_auc']:.3f} adv {row['lira_advantage']:.3f}; inverting the {row['inversion_updates']} round-1 updates: "
                 f"PSNR {row['inversion_psnr_mean']:.1f} dB, NN match {row['inversion_nn_match']:.3f}, "
                 f"{row['inversion_distinct']} training examples recovered; gradient matching: PSNR {row['matching_psnr_mean']:.1f} dB, "
                 f"NN match {row['matching_nn_match']:.3f} ({row['seconds']}s)")
        _write(results, out)
    return results, plot_privacy(results, out)


PRIVACY_HEADERS = ["epsilon", "spent (max)", "accuracy", "vs no DP", "loss AUC", "loss adv", "LiRA AUC", "LiRA adv",
                   "adv cross-fitted (loss/LiRA)", "chance AUC/adv (95%)", "inversion PSNR", "NN match (chance)", "recovered (non-members)"]


def privacy_rows(results: list[dict]) -> list[list[str]]:
    base = next((r["accuracy"] for r in results if r["epsilon"] == math.inf and not r.get("secure_aggregation")), None)
    rows = []
    for r in results:
        setting = "inf (no DP)" if r["epsilon"] == math.inf else f"{r['epsilon']:g}"
        rows.append([setting + (" + secure agg." if r.get("secure_aggregation") else ""),
                     "-" if r["epsilon_spent_max"] is None else f"{r['epsilon_spent_max']:.3f}", f"{r['accuracy']:.4f}",
                     "-" if base is None or (r["epsilon"] == math.inf and not r.get("secure_aggregation"))
                     else f"{100 * (r['accuracy'] - base):+.1f} pp",
                     f"{r['loss_auc']:.3f}", f"{r['loss_advantage']:.3f}", f"{r['lira_auc']:.3f}", f"{r['lira_advantage']:.3f}",
                     f"{r['loss_advantage_cv']:.3f}/{r['lira_advantage_cv']:.3f}" if "lira_advantage_cv" in r else "-",
                     f"{r['chance_auc95']:.3f}/{r['chance_advantage95']:.3f}", *_inversion_cells(r)])
    return rows


def _inversion_cells(r: dict) -> list[str]:
    if "inversion_nn_match" not in r:
        return ["-", "-", "-"]
    return [f"{r['inversion_psnr_mean']:.1f} dB", f"{r['inversion_nn_match']:.3f} ({r['inversion_nn_chance95']:.3f})",
            f"{r['inversion_distinct']}/{r['inversion_reconstructions']} ({r.get('inversion_distinct_nonmembers', '-')})"]


_CSV = ["epsilon", "secure_aggregation", "model", "batch_size", "lr", "epochs", "rounds", "clip", "seed", "update_step_cosine_max", "epsilon_spent_max", "delta", "accuracy", "loss_auc", "loss_advantage", "lira_auc", "lira_advantage",
        "loss_advantage_cv", "lira_advantage_cv", "chance_auc95", "chance_advantage95", "chance_advantage_mean", "members", "nonmembers", "shadow_samples", "rounds_finalized", "seconds",
        "inversion_round", "inversion_updates", "inversion_reconstructions", "inversion_psnr_mean", "inversion_nn_match",
        "inversion_nn_chance95", "inversion_distinct", "inversion_distinct_nonmembers", "matching_reconstructions", "matching_psnr_mean", "matching_nn_match",
        "matching_nn_chance95", "matching_distinct"]


def _write(results: list[dict], out: Path) -> None:
    (out / "results.json").write_text(json.dumps([{**r, "epsilon": "inf" if r["epsilon"] == math.inf else r["epsilon"]}
                                                  for r in results], indent=1))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(_CSV)
        for r in results:
            w.writerow(["inf" if r.get(k) == math.inf else ("" if r.get(k) is None else r[k]) for k in _CSV])


def plot_privacy(results: list[dict], out: Path) -> list[Path]:
    """accuracy-vs-epsilon.png, attack-vs-epsilon.png and, when the results hold the update
    inversion, inversion-vs-epsilon.png (no DP drawn at the right, as "inf")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if not r.get("secure_aggregation")] or results  # one point per epsilon
    finite = sorted({r["epsilon"] for r in results if r["epsilon"] != math.inf})
    labels = [f"{e:g}" for e in finite] + (["no DP"] if any(r["epsilon"] == math.inf for r in results) else [])
    pos = {e: i for i, e in enumerate(finite)} | {math.inf: len(finite)}
    ordered = sorted(results, key=lambda r: pos[r["epsilon"]])
    xs = [pos[r["epsilon"]] for r in ordered]
    written = []
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(xs, [r["accuracy"] for r in ordered], marker="o")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("privacy budget epsilon (delta = %g)" % next((r["delta"] for r in results if r["delta"]), 1e-5))
    ax.set_ylabel("test accuracy of the final model")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    written.append(_save(fig, out / "accuracy-vs-epsilon.png"))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("loss", "loss threshold (Yeom)"), ("lira", "shadow models (offline LiRA)")):
        a1.plot(xs, [r[f"{key}_auc"] for r in ordered], marker="o", label=label)
        a2.plot(xs, [r[f"{key}_advantage"] for r in ordered], marker="o", label=label)
    a1.axhline(0.5, color="grey", ls=":", lw=1)
    a1.axhline(max(r["chance_auc95"] for r in results), color="grey", ls="--", lw=1, label="chance (95%)")
    a2.axhline(max(r["chance_advantage95"] for r in results), color="grey", ls="--", lw=1, label="chance (95%)")
    for ax, what in ((a1, "membership inference AUC"), (a2, "membership advantage (max TPR - FPR)")):
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel("privacy budget epsilon")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    written.append(_save(fig, out / "attack-vs-epsilon.png"))
    if all("inversion_nn_match" in r for r in results):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        attacks = [("inversion", "analytic (first layer)")] + ([("matching", "gradient matching")]
                                                               if all("matching_nn_match" in r for r in results) else [])
        for key, label in attacks:
            a1.plot(xs, [r[f"{key}_nn_match"] for r in ordered], marker="o", label=label)
            a2.plot(xs, [r[f"{key}_psnr_mean"] for r in ordered], marker="o", label=label)
        a1.axhline(0.5, color="grey", ls=":", lw=1)
        a1.axhline(max(r["inversion_nn_chance95"] for r in results), color="grey", ls="--", lw=1, label="chance (95%, analytic)")
        a1.set_ylim(0, 1.05)
        a1.set_ylabel("share of reconstructions nearest a member")
        a1.legend(fontsize=8)
        for x, r in zip(xs, ordered):
            a2.annotate(f"{r['inversion_distinct']} recovered", (x, r["inversion_psnr_mean"]), fontsize=7,
                        textcoords="offset points", xytext=(0, 6), ha="center")
        a2.set_ylabel("PSNR to the nearest training example (dB)")
        for ax in (a1, a2):
            ax.set_xticks(range(len(labels)), labels)
            ax.set_xlabel("privacy budget epsilon")
            ax.grid(alpha=0.3)
        fig.suptitle("inverting every member's round-1 update (nearest neighbours among its training set and as many non-members)", fontsize=9)
        written.append(_save(fig, out / "inversion-vs-epsilon.png"))
    return written


def _save(fig, path: Path) -> Path:
    """Write ``fig`` to ``path`` as PNG and release it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
