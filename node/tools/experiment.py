"""``fedchain experiment robustness``: attacks x malicious fraction x aggregation rules.

Each trial is a real run of the protocol: a fresh FedChain contract on a real anvil devnet, a
real embedded store, and one ``Peer`` per member (honest or with an attack behaviour). To fit a
grid of hundreds of trials on a laptop, the peers of a trial live in one process and are driven
round by round (all submit, then all vote) instead of polling as separate processes; every
transaction, artifact and aggregate is the same as in ``fedchain simulate``.
"""
from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from ..chain import ChainClient, Outcome
from ..ml.data import load_dataset, partition, train_test_split
from .deployment import deploy_task
from .devnet import Devnet
from ..aggregation import pin_rule
from ..errors import FedChainError
from ..ledger.history import round_history
from ..protocol.task import ModelSpec, TrainConfig
from ..ledger.updates import load_model
from ..peer import Peer
from .simulate import backdoor_success_rate
from ..store import EmbeddedStore
from ..protocol.task import Task
from ..ml.training import evaluate
from .attacks import make_attack, malicious_indices

__all__ = ["robustness_summary", "separated_by", "SUMMARY_HEADERS", "TrialConfig", "run_trial", "run_grid", "plot_results"]


@dataclass
class TrialConfig:
    dataset: str = "digits"
    rule: str = "fedavg"
    attack: str | None = None
    malicious: float = 0.0
    peers: int = 10
    rounds: int = 8
    seed: int = 0
    epochs: int = 2
    lr: float = 0.05
    hidden: tuple[int, ...] = (64,)
    commit_reveal: bool = False
    partition: str = "iid"  # or "dirichlet": label skew with concentration ``alpha``
    alpha: float = 0.5

    def malicious_peers(self) -> list[int]:
        return malicious_indices(self.peers, self.attack, self.malicious)


class _Quiet:
    def __call__(self, *args, **kwargs):
        pass


def run_trial(cfg: TrialConfig, devnet: Devnet, workdir: Path, *, datasets_cache: dict | None = None) -> dict:
    cache = datasets_cache if datasets_cache is not None else {}
    if cfg.dataset not in cache:
        ds = load_dataset(cfg.dataset)
        cache[cfg.dataset] = (ds, *train_test_split(ds, seed=0))
    ds, train, test = cache[cfg.dataset]
    parts = partition(train, cfg.peers, alpha=cfg.alpha if cfg.partition == "dirichlet" else None, seed=cfg.seed)
    store = EmbeddedStore(workdir / "store")
    task = pin_rule(Task(
        name=f"{cfg.dataset}-robustness", dataset=cfg.dataset,
        model=ModelSpec(ds.features, ds.classes, tuple(cfg.hidden)), train=TrainConfig(epochs=cfg.epochs, lr=cfg.lr),
        rule=cfg.rule, sample_cap=math.ceil(1.5 * len(train.y) / cfg.peers), rounds=cfg.rounds,
        submit_blocks=300, vote_blocks=300, reveal_blocks=300 if cfg.commit_reveal else 0,
    ))
    deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
    members = devnet.addresses[1 : cfg.peers + 1]
    dep = deploy_task(deployer, store, task, members, seed=cfg.seed)
    bad = set(cfg.malicious_peers())
    peers = []
    for i in range(cfg.peers):
        chain = ChainClient(devnet.rpc_url, dep.contract, Account.from_key(devnet.keys[i + 1]))
        shard = train.__class__(train.name, train.x[parts[i]], train.y[parts[i]], train.classes)
        plugins = make_attack(cfg.attack if i in bad else None, colluders=[members[j] for j in sorted(bad)])
        peers.append(Peer(chain, store, task, dep.task_cid, shard, seed=cfg.seed * 1000 + i, log=_Quiet(), plugins=plugins))
    observer = ChainClient(devnet.rpc_url, dep.contract)
    deployer.contract = observer.contract  # the deployer also settles members and closes failed rounds

    accuracy, reputation = [], []
    for _ in range(cfg.rounds):
        state = observer.round_state()
        r = state.round
        for p in peers:
            try:
                p.submit(r, p.chain.member_info(p.address))
            except FedChainError:
                pass
        for p in peers:
            state = observer.round_state()
            try:
                p.vote(r, p.chain.member_info(p.address), expected=state.submissions if state.round == r else None)
            except FedChainError:
                pass
        if cfg.commit_reveal:
            st = observer.round_state()
            if st.round == r and st.phase.name != "REVEAL":  # not everyone committed: wait out the window
                reveal_opens = st.vote_deadline - task.reveal_blocks
                devnet.mine(max(reveal_opens - observer.block_number(), 1))
            for p in peers:
                try:
                    p.reveal(r)
                except FedChainError:
                    pass
        if observer.round_state().round == r:  # no quorum: fail the round like a real network would
            devnet.mine(task.submit_blocks + task.vote_blocks + task.reveal_blocks)
            deployer.advance()
        history = round_history(observer, from_block=dep.deploy_block)
        finalized = [h for h in history if h.status == "finalized"]
        model_cid = finalized[-1].model if finalized else dep.initial_model
        accuracy.append(evaluate(task.model, load_model(store, model_cid, task), test))
        reputation.append([_settled_reputation(deployer, p.address, dep.deploy_block) for p in peers])
    final_state = load_model(store, model_cid, task)
    return {
        "dataset": cfg.dataset, "rule": cfg.rule, "attack": cfg.attack or "none", "malicious": cfg.malicious,
        "peers": cfg.peers, "rounds": cfg.rounds, "seed": cfg.seed, "malicious_peers": sorted(bad),
        "partition": cfg.partition, "alpha": cfg.alpha if cfg.partition == "dirichlet" else None,
        "final_accuracy": accuracy[-1], "accuracy": accuracy, "reputation": reputation,
        "rounds_finalized": sum(1 for h in history if h.status == "finalized"),
        "backdoor_success_rate": backdoor_success_rate(task.model, final_state, test) if cfg.attack == "backdoor" else None,
    }


def _settled_reputation(settler: ChainClient, address: str, deploy_block: int) -> int:
    """The member's reputation as the contract settles it: anyone may settle a member's last round,
    and settling earlier changes nothing (later late votes are applied at once)."""
    info = settler.member_info(address)
    last = max(info.submitted_round, info.voted_round)
    if last > info.settled_round:
        try:
            settler.settle(address, settler.outcome(last, from_block=deploy_block) or Outcome.none())
        except FedChainError:
            pass  # e.g. a committed vote that can still be revealed: it settles later
        info = settler.member_info(address)
    return info.reputation


def run_grid(
    *, datasets: list[str], rules: list[str], attacks: list[str], fractions: list[float], peers: int, rounds: int,
    seed: int | None = None, seeds: list[int] | None = None, partition: str = "iid", alpha: float = 0.5, out: Path,
    progress=print,
) -> list[dict]:
    """Every dataset x attack x fraction x rule x seed, one fresh contract each (``run_trial``)."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds) if seeds else [0 if seed is None else seed]
    trials = [(d, r, a, f, s) for s in seeds for d in datasets for a in attacks for f in fractions for r in rules
              if not (a == "none" and f > 0) and not (a != "none" and f == 0)]
    import torch

    torch.set_num_threads(1)  # tiny models: threads only add overhead, and runs stay comparable
    results: list[dict] = []
    cache: dict = {}
    started = time.monotonic()
    with Devnet(accounts=peers + 1) as devnet, tempfile.TemporaryDirectory(prefix="fedchain-exp-") as tmp:
        for n, (d, rule, attack, frac, s) in enumerate(trials, 1):
            t0 = time.monotonic()
            res = run_trial(TrialConfig(dataset=d, rule=rule, attack=None if attack == "none" else attack, malicious=frac,
                                        peers=peers, rounds=rounds, seed=s, partition=partition, alpha=alpha),
                            devnet, Path(tmp) / f"t{n}", datasets_cache=cache)
            res["seconds"] = round(time.monotonic() - t0, 2)
            results.append(res)
            asr = f"  backdoor {res['backdoor_success_rate']:.3f}" if res["backdoor_success_rate"] is not None else ""
            progress(f"[{n}/{len(trials)}] {d:7} {rule:13} {attack:10} {frac:4.2f} seed {s}  acc {res['final_accuracy']:.4f}{asr}"
                     f"  ({res['seconds']}s, {time.monotonic() - started:.0f}s total)")
            _write(results, out)
    return results


def separated_by(result: dict) -> int | None:
    """First round from which every malicious peer's reputation is below every honest peer's."""
    bad = set(result["malicious_peers"])
    if not bad:
        return None
    for r, reps in enumerate(result["reputation"], 1):
        if max(reps[i] for i in bad) < min(reps[i] for i in range(result["peers"]) if i not in bad):
            return r
    return None


SUMMARY_HEADERS = ["dataset", "attack", "malicious", "best rule", "best acc", "vs no attack", "fedavg-plain",
                   "multi-krum", "backdoor ASR (best rule)", "malicious below honest from round (multi-krum)"]


def robustness_summary(results: list[dict]) -> list[list[str]]:
    """One row per dataset x attack x malicious fraction (``SUMMARY_HEADERS``): the best rule and
    its final accuracy against the best attack-free run, the baselines, the backdoor success rate,
    and the round from which Multi-Krum left every attacker below every honest peer."""
    rows = []
    for d in sorted({r["dataset"] for r in results}):
        clean = [r for r in results if r["dataset"] == d and r["attack"] == "none"]
        base = max((r["final_accuracy"] for r in clean), default=float("nan"))
        if clean:
            rows.append([d, "none", "0", max(clean, key=lambda r: r["final_accuracy"])["rule"], f"{base:.4f}", "", "", "", "", ""])
        for attack in sorted({r["attack"] for r in results if r["dataset"] == d} - {"none"}):
            for frac in sorted({r["malicious"] for r in results if r["dataset"] == d and r["attack"] == attack}):
                cell = [r for r in results if r["dataset"] == d and r["attack"] == attack and r["malicious"] == frac]
                best = max(cell, key=lambda r: r["final_accuracy"])
                by = {r["rule"]: r for r in cell}
                plain, krum = by.get("fedavg-plain"), by.get("multi-krum")
                asr = best["backdoor_success_rate"]
                sep = separated_by(krum) if krum else None
                rows.append([d, attack, f"{frac:.2f}", best["rule"], f"{best['final_accuracy']:.4f}",
                             f"{100 * (best['final_accuracy'] - base):+.1f} pp",
                             f"{plain['final_accuracy']:.4f}" if plain else "-",
                             f"{krum['final_accuracy']:.4f}" if krum else "-",
                             f"{asr:.3f}" if asr is not None else "-",
                             (str(sep) if sep else "never") if krum else "-"])
    return rows


def _write(results: list[dict], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "rule", "attack", "malicious", "final_accuracy", "backdoor_success_rate", "rounds_finalized", "seconds"])
        for r in results:
            w.writerow([r["dataset"], r["rule"], r["attack"], r["malicious"], f"{r['final_accuracy']:.4f}",
                        "" if r["backdoor_success_rate"] is None else f"{r['backdoor_success_rate']:.4f}", r["rounds_finalized"], r.get("seconds", "")])


def plot_results(results: list[dict], out: Path) -> list[Path]:
    """PNG plots: accuracy per round per rule (one panel per attack), reputation per peer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    for d in sorted({r["dataset"] for r in results}):
        rows = [r for r in results if r["dataset"] == d]
        attacks = sorted({r["attack"] for r in rows if r["attack"] != "none"})
        frac = max((r["malicious"] for r in rows if r["malicious"] <= 0.3), default=0.0)
        cols = max(1, min(3, len(attacks)))
        nrows = max(1, math.ceil(len(attacks) / cols))
        fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
        for ax, attack in zip(axes.flat, attacks):
            for r in rows:
                if r["attack"] == attack and r["malicious"] == frac:
                    ax.plot(range(1, len(r["accuracy"]) + 1), r["accuracy"], marker=".", label=r["rule"])
            base = [r for r in rows if r["attack"] == "none"]
            if base:
                ax.axhline(max(b["final_accuracy"] for b in base), color="grey", ls=":", lw=1, label="no attack (best)")
            ax.set_title(f"{attack}, {frac:.0%} malicious")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("round")
            ax.set_ylabel("test accuracy")
            ax.set_ylim(0, 1)
        for ax in list(axes.flat)[len(attacks):]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        path = out / f"accuracy-{d}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

        pick = [r for r in rows if r["malicious"] == frac and r["attack"] != "none"]
        pick.sort(key=lambda r: (r["rule"] != "multi-krum", r["rule"], r["attack"]))
        if pick:
            r = pick[0]
            fig, ax = plt.subplots(figsize=(6, 3.6))
            for i in range(r["peers"]):
                series = [rep[i] for rep in r["reputation"]]
                bad = i in r["malicious_peers"]
                ax.plot(range(1, len(series) + 1), series, color="tab:red" if bad else "tab:blue", alpha=0.8,
                        label=("malicious" if bad else "honest") if i in (0, r["peers"] - 1) else None)
            ax.set_title(f"reputation per peer: {r['attack']}, {r['rule']}, {frac:.0%} malicious")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("round")
            ax.set_ylabel("reputation")
            ax.legend()
            fig.tight_layout()
            path = out / f"reputation-{d}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written
