"""``fedchain experiment robustness``: attacks x malicious fraction x aggregation rules.

Each trial is a real run of the protocol: a fresh FedChain contract on a real anvil devnet, a
real embedded store, and one ``Peer`` per member (honest or with an attack behaviour). To fit a
grid of hundreds of trials on a laptop, the peers of a trial live in one process and are driven
round by round (all submit, then, for sealed updates, all reveal, then all vote) instead of
polling as separate processes; every transaction, artifact and aggregate is the same as in
``fedchain simulate``. Honest peers submit one after another; a colluding team of adaptive
attackers submits concurrently (one thread each), sharing its benign updates over a private
channel, as colluders talking off-chain would, and votes first (the votes after the quorum are
late and earn less, and a strategic attacker does not wait).

Tasks use sealed updates by default, like ``fedchain deploy`` (``update_reveal_blocks`` 20): the
adaptive attackers then see the previous rounds' revealed updates and their team's own benign
updates, not the round's honest ones. ``update_reveal_blocks=0`` gives the plain protocol, where
they see every honest update of the round before crafting (the omniscient worst case).
"""
from __future__ import annotations

import csv
import json
import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from ..chain import ChainClient, Outcome, Phase
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
from .attacks import ADAPTIVE, ATTACKS, Collusion, make_attack, malicious_indices

__all__ = ["HONEST_ONLY", "attacker_inclusion", "robustness_summary", "reputation_summary", "separated_by", "SUMMARY_HEADERS", "REPUTATION_HEADERS", "TrialConfig", "run_trial", "run_grid", "plot_results"]


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
    update_reveal_blocks: int = 20  # sealed updates (deploy's default); 0: plain, omniscient attackers
    absent: tuple[int, ...] = ()  # peers left out with their shards (the honest-only reference)

    def malicious_peers(self) -> list[int]:
        return malicious_indices(self.peers, self.attack, self.malicious)

    def present(self) -> list[int]:
        """The indices (into the ``peers`` shards) of the members that take part."""
        return [i for i in range(self.peers) if i not in set(self.absent)]


HONEST_ONLY = "honest-only"  # the reference run: no attack, only the honest peers and their shards


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
        update_reveal_blocks=cfg.update_reveal_blocks,
    ))
    deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
    present = cfg.present()
    members = [devnet.addresses[i + 1] for i in present]
    dep = deploy_task(deployer, store, task, members, seed=cfg.seed)
    bad = set(cfg.malicious_peers()) & set(present)
    colluders = [devnet.addresses[i + 1] for i in sorted(bad)]
    team = getattr(ATTACKS.get(cfg.attack or ""), "takes_colluders", False)
    channel = Collusion(len(bad)) if team and bad else None
    peers = []
    for i in present:
        chain = ChainClient(devnet.rpc_url, dep.contract, Account.from_key(devnet.keys[i + 1]))
        shard = train.__class__(train.name, train.x[parts[i]], train.y[parts[i]], train.classes)
        plugins = make_attack(cfg.attack if i in bad else None, colluders=colluders, channel=channel)
        peers.append(Peer(chain, store, task, dep.task_cid, shard, seed=cfg.seed * 1000 + i, log=_Quiet(), plugins=plugins))
    honest_peers = [p for i, p in zip(present, peers) if i not in bad]
    team_peers = [p for i, p in zip(present, peers) if i in bad]
    observer = ChainClient(devnet.rpc_url, dep.contract)
    deployer.contract = observer.contract  # the deployer also settles members and closes failed rounds

    def submit(p: Peer, r: int) -> None:
        try:
            p.submit(r, p.chain.member_info(p.address))
        except FedChainError:
            pass

    accuracy, reputation = [], []
    for _ in range(cfg.rounds):
        state = observer.round_state()
        r = state.round
        for p in (peers if channel is None else honest_peers):
            submit(p, r)
        if channel is not None:  # the colluding team: concurrently, so that each can wait for the others
            with ThreadPoolExecutor(len(team_peers)) as pool:
                list(pool.map(lambda p: submit(p, r), team_peers))
        if task.update_reveal_blocks:
            st = observer.round_state()
            if st.round == r and st.phase is not Phase.UPDATE_REVEAL:  # someone did not commit: the window runs out
                devnet.mine(max(st.submit_deadline - observer.block_number(), 1))
            for p in peers:
                try:
                    p.reveal_update(r)
                except FedChainError:
                    pass
            st = observer.round_state()
            if st.round == r and st.phase is Phase.UPDATE_REVEAL:  # someone did not reveal: the window runs out
                devnet.mine(max(st.submit_deadline + task.update_reveal_blocks - observer.block_number(), 1))
        # A colluding team votes as soon as voting opens: the first quorum of votes finalizes and the
        # rest land after it (paid the same inside the next submission window), so the vote order
        # must not handicap the attackers.
        for p in (peers if channel is None else team_peers + honest_peers):
            state = observer.round_state()
            try:
                p.vote(r, p.chain.member_info(p.address), expected=p._expected(state) if state.round == r else None,
                       commitments=state.submissions if state.round == r else None)
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
            devnet.mine(task.submit_blocks + task.update_reveal_blocks + task.vote_blocks + task.reveal_blocks)
            deployer.advance()
        history = round_history(observer, from_block=dep.deploy_block)
        finalized = [h for h in history if h.status == "finalized"]
        model_cid = finalized[-1].model if finalized else dep.initial_model
        accuracy.append(evaluate(task.model, load_model(store, model_cid, task), test))
        reputation.append([_settled_reputation(deployer, p.address, dep.deploy_block) for p in peers])
    final_state = load_model(store, model_cid, task)
    return {
        "dataset": cfg.dataset, "rule": cfg.rule, "attack": (cfg.attack or "none") if not cfg.absent else HONEST_ONLY,
        "malicious": cfg.malicious, "peers": len(present), "rounds": cfg.rounds, "seed": cfg.seed,
        "malicious_peers": [present.index(i) for i in sorted(bad)], "absent_peers": sorted(cfg.absent), "shards": cfg.peers,
        "update_reveal_blocks": cfg.update_reveal_blocks, "protocol": "sealed" if cfg.update_reveal_blocks else "plain",
        "vote_order": "attackers first" if channel is not None else "member order",
        "partition": cfg.partition, "alpha": cfg.alpha if cfg.partition == "dirichlet" else None,
        "final_accuracy": accuracy[-1], "accuracy": accuracy, "reputation": reputation,
        "rounds_finalized": sum(1 for h in history if h.status == "finalized"),
        "included": [h.included if h.status == "finalized" else None for h in history],  # bitmask over members, per round
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
    update_reveal_blocks: int = 20, honest_only: bool = False, progress=print,
) -> list[dict]:
    """Every dataset x attack x fraction x rule x seed, one fresh contract each (``run_trial``).

    ``update_reveal_blocks``: sealed updates (the default, as deployed), or 0 for the plain
    protocol. ``honest_only``: also, per malicious fraction, an attack-free run of only the peers
    that are honest at that fraction, on the same shards (attack ``HONEST_ONLY``): what the honest
    data alone reaches, to tell the attackers' missing data from the damage their updates do."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds) if seeds else [0 if seed is None else seed]
    kinds = [*attacks, *([HONEST_ONLY] if honest_only else [])]
    trials = [(d, r, a, f, s) for s in seeds for d in datasets for a in kinds for f in fractions for r in rules
              if not (a == "none" and f > 0) and not (a != "none" and f == 0)]
    import torch

    torch.set_num_threads(1)  # tiny models: threads only add overhead, and runs stay comparable
    results: list[dict] = []
    cache: dict = {}
    started = time.monotonic()
    with Devnet(accounts=peers + 1) as devnet, tempfile.TemporaryDirectory(prefix="fedchain-exp-") as tmp:
        for n, (d, rule, attack, frac, s) in enumerate(trials, 1):
            t0 = time.monotonic()
            absent = tuple(malicious_indices(peers, attack, frac)) if attack == HONEST_ONLY else ()
            res = run_trial(TrialConfig(dataset=d, rule=rule, attack=None if attack in ("none", HONEST_ONLY) else attack,
                                        malicious=frac, peers=peers, rounds=rounds, seed=s, partition=partition, alpha=alpha,
                                        update_reveal_blocks=update_reveal_blocks, absent=absent),
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


SUMMARY_HEADERS = ["dataset", "partition", "attack", "malicious", "best rule", "best acc", "vs no attack", "fedavg-plain",
                   "multi-krum", "backdoor ASR (best rule)", "malicious below honest from round (multi-krum)"]


def _partition_of(r: dict) -> str:
    return "iid" if r.get("partition", "iid") == "iid" else f"dirichlet {r.get('alpha')}"


def _mean_std(values: list[float], fmt: str = ".4f") -> str:
    """``mean`` for one value, ``mean +- std`` (population std) for several."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return format(mean, fmt)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return f"{format(mean, fmt)} ± {format(std, fmt)}"


def _pp(difference: float) -> str:
    """An accuracy difference in percentage points, signed; never "-0.0"."""
    return f"{round(100 * difference, 1) + 0.0:+.1f} pp"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def robustness_summary(results: list[dict]) -> list[list[str]]:
    """One row per dataset x partition x attack x malicious fraction (``SUMMARY_HEADERS``): the
    rule with the best mean final accuracy over seeds (mean +- std) against the best attack-free
    rule's mean, the baselines, the backdoor success rate, and the round from which Multi-Krum
    left every attacker below every honest peer (one entry per seed)."""
    rows = []
    for d, part in sorted({(r["dataset"], _partition_of(r)) for r in results}):
        here = [r for r in results if r["dataset"] == d and _partition_of(r) == part]

        def by_rule(cell):
            out: dict[str, list[dict]] = {}
            for r in cell:
                out.setdefault(r["rule"], []).append(r)
            return out

        def acc(runs):
            return [r["final_accuracy"] for r in runs]

        clean = by_rule([r for r in here if r["attack"] == "none"])
        base_rule = max(clean, key=lambda k: _mean(acc(clean[k])), default=None)
        base = _mean(acc(clean[base_rule])) if base_rule else float("nan")
        if base_rule:
            rows.append([d, part, "none", "0", base_rule, _mean_std(acc(clean[base_rule])), "", "", "", "", ""])
        for attack in sorted({r["attack"] for r in here} - {"none"}):
            for frac in sorted({r["malicious"] for r in here if r["attack"] == attack}):
                cell = by_rule([r for r in here if r["attack"] == attack and r["malicious"] == frac])
                best = max(cell, key=lambda k: _mean(acc(cell[k])))
                plain, krum = cell.get("fedavg-plain"), cell.get("multi-krum")
                asr = [r["backdoor_success_rate"] for r in cell[best] if r["backdoor_success_rate"] is not None]
                seps = [separated_by(r) for r in krum] if krum else []
                rows.append([d, part, attack, f"{frac:.2f}", best, _mean_std(acc(cell[best])),
                             _pp(_mean(acc(cell[best])) - base) if base_rule else "-",
                             _mean_std(acc(plain)) if plain else "-", _mean_std(acc(krum)) if krum else "-",
                             _mean_std(asr, ".3f") if asr else "-",
                             ",".join(str(x) if x else "never" for x in seps) if krum else "-"])
    return rows


REPUTATION_HEADERS = ["dataset", "partition", "protocol", "rule", "attack", "malicious", "seeds", "final acc",
                      "vs clean (same rule)", "vs honest-only (same rule)", "lowest honest rep", "highest attacker rep", "attacker above an honest peer",
                      "honest below start", "attackers below every honest from round", "attacker updates aggregated"]


def _protocol_of(r: dict) -> str:
    return r.get("protocol", "plain")  # results from before sealed updates were all plain


def reputation_summary(results: list[dict], *, start: int = 1000) -> list[list[str]]:
    """One row per dataset x partition x protocol x rule x attack x fraction (``REPUTATION_HEADERS``):
    accuracy over seeds against the same rule's attack-free runs and against its honest-only
    reference at that fraction (the attackers' shards left out), the lowest final honest and
    highest final attacker reputation over all seeds, in how many seeds some attacker ended above
    some honest peer, in how many some honest peer ended below its starting reputation, and the
    round from which every attacker was below every honest peer (per seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["dataset"], _partition_of(r), _protocol_of(r), r["rule"], r["attack"], r["malicious"]), []).append(r)
    rows = []
    for (d, part, proto, rule, attack, frac), runs in sorted(groups.items(), key=lambda kv: (kv[0][:4], kv[0][4] != "none", kv[0][4:])):
        clean = groups.get((d, part, proto, rule, "none", 0.0)) or groups.get((d, part, proto, rule, "none", 0))
        reference = groups.get((d, part, proto, rule, HONEST_ONLY, frac))
        attacked = attack not in ("none", HONEST_ONLY)
        accs = [r["final_accuracy"] for r in runs]
        honest = [r["reputation"][-1][i] for r in runs for i in range(r["peers"]) if i not in set(r["malicious_peers"])]
        bad = [r["reputation"][-1][i] for r in runs for i in r["malicious_peers"]]
        above = sum(1 for r in runs if r["malicious_peers"] and max(r["reputation"][-1][i] for i in r["malicious_peers"])
                    > min(r["reputation"][-1][i] for i in range(r["peers"]) if i not in set(r["malicious_peers"])))
        below = sum(1 for r in runs if min(r["reputation"][-1][i] for i in range(r["peers"]) if i not in set(r["malicious_peers"])) < start)
        seps = [separated_by(r) for r in runs] if attacked else []
        rows.append([d, part, proto, rule, attack, f"{frac:.2f}", str(len(runs)), _mean_std(accs),
                     _pp(_mean(accs) - _mean([c['final_accuracy'] for c in clean])) if clean and attack != "none" else "",
                     _pp(_mean(accs) - _mean([c['final_accuracy'] for c in reference])) if reference and attacked else "",
                     str(min(honest)) if honest else "-", str(max(bad)) if bad else "-",
                     f"{above}/{len(runs)}" if attacked else "", f"{below}/{len(runs)}",
                     ",".join(str(x) if x else "never" for x in seps), _attackers_aggregated(runs) if attacked else ""])
    return rows


def attacker_inclusion(result: dict) -> tuple[int, int] | None:
    """How many of the attackers' updates the finalized rounds aggregated, out of how many
    (attackers x finalized rounds); None for results without the per-round inclusion record."""
    if "included" not in result:
        return None
    done = [m for m in result["included"] if m is not None]
    return sum(1 for m in done for i in result["malicious_peers"] if m >> i & 1), len(done) * len(result["malicious_peers"])


def _attackers_aggregated(runs: list[dict]) -> str:
    counts = [attacker_inclusion(r) for r in runs]
    if any(c is None for c in counts):
        return "-"
    return f"{sum(c[0] for c in counts)}/{sum(c[1] for c in counts)}"


def _write(results: list[dict], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["dataset", "protocol", "rule", "attack", "malicious", "final_accuracy", "backdoor_success_rate", "rounds_finalized",
                    "seconds"])
        for r in results:
            w.writerow([r["dataset"], _protocol_of(r), r["rule"], r["attack"], r["malicious"], f"{r['final_accuracy']:.4f}",
                        "" if r["backdoor_success_rate"] is None else f"{r['backdoor_success_rate']:.4f}", r["rounds_finalized"], r.get("seconds", "")])


def plot_results(results: list[dict], out: Path) -> list[Path]:
    """PNG plots, per dataset and partition: accuracy per round per rule (one panel per attack,
    one figure per malicious fraction, the mean over seeds), reputation per peer in one run, and
    reputation bands (mean and min-max over peers and seeds, honest vs malicious) per adaptive
    attack and rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def mean_series(runs: list[dict], key: str) -> list[float]:
        length = min(len(r[key]) for r in runs)
        return [sum(r[key][t] for r in runs) / len(runs) for t in range(length)]

    written = []
    for d, part in sorted({(r["dataset"], _partition_of(r)) for r in results}):
        rows = [r for r in results if r["dataset"] == d and _partition_of(r) == part]
        tag = d if part == "iid" else f"{d}-{part.replace(' ', '')}"
        fracs = sorted({r["malicious"] for r in rows if r["malicious"] > 0 and r["attack"] != "none"})
        attacks = sorted({r["attack"] for r in rows if r["attack"] not in ("none", HONEST_ONLY)})
        clean = [r for r in rows if r["attack"] == "none"]
        for frac in fracs:
            shown = [a for a in attacks if any(r["attack"] == a and r["malicious"] == frac for r in rows)]
            cols = max(1, min(3, len(shown)))
            nrows = max(1, math.ceil(len(shown) / cols))
            fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
            for ax, attack in zip(axes.flat, shown):
                for rule in sorted({r["rule"] for r in rows}):
                    runs = [r for r in rows if r["attack"] == attack and r["malicious"] == frac and r["rule"] == rule]
                    if runs:
                        acc = mean_series(runs, "accuracy")
                        ax.plot(range(1, len(acc) + 1), acc, marker=".", label=rule)
                if clean:
                    best = max({r["rule"] for r in clean}, key=lambda k: _mean([r["final_accuracy"] for r in clean if r["rule"] == k]))
                    ax.axhline(_mean([r["final_accuracy"] for r in clean if r["rule"] == best]), color="grey", ls=":", lw=1,
                               label="no attack (best rule)")
                reference = [r for r in rows if r["attack"] == HONEST_ONLY and r["malicious"] == frac]
                if reference:
                    ax.axhline(_mean([r["final_accuracy"] for r in reference]), color="black", ls="--", lw=1,
                               label="honest peers' shards only")
                seeds = len({r["seed"] for r in rows if r["attack"] == attack and r["malicious"] == frac})
                ax.set_title(f"{attack}, {frac:.0%} malicious, {part}" + (f", mean of {seeds} seeds" if seeds > 1 else ""), fontsize=9)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlabel("round")
                ax.set_ylabel("test accuracy")
                ax.set_ylim(0, 1)
            for ax in list(axes.flat)[len(shown):]:
                ax.axis("off")
            axes.flat[0].legend(fontsize=7)
            fig.tight_layout()
            path = out / (f"accuracy-{tag}.png" if len(fracs) == 1 else f"accuracy-{tag}-{round(100 * frac)}pct.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)

        frac = max(fracs, default=0.0)
        pick = [r for r in rows if r["malicious"] == frac and r["attack"] not in ("none", HONEST_ONLY)]
        pick.sort(key=lambda r: (r["rule"] != "multi-krum", r["rule"], r["attack"], r["seed"]))
        if pick:
            r = pick[0]
            fig, ax = plt.subplots(figsize=(6, 3.6))
            for i in range(r["peers"]):
                series = [rep[i] for rep in r["reputation"]]
                bad = i in r["malicious_peers"]
                ax.plot(range(1, len(series) + 1), series, color="tab:red" if bad else "tab:blue", alpha=0.8,
                        label=("malicious" if bad else "honest") if i in (0, r["peers"] - 1) else None)
            ax.set_title(f"reputation per peer: {r['attack']}, {r['rule']}, {frac:.0%} malicious, {part}, seed {r['seed']}", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("round")
            ax.set_ylabel("reputation")
            ax.legend()
            fig.tight_layout()
            path = out / f"reputation-{tag}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)

        panels = sorted({(r["attack"], r["rule"], r["malicious"]) for r in rows if r["attack"] in ADAPTIVE and r["malicious_peers"]})
        if panels:
            cols = max(1, min(3, len(panels)))
            nrows = math.ceil(len(panels) / cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.4 * nrows), squeeze=False)
            for ax, (attack, rule, frac) in zip(axes.flat, panels):
                runs = [r for r in rows if (r["attack"], r["rule"], r["malicious"]) == (attack, rule, frac)]
                length = min(len(r["reputation"]) for r in runs)
                x = list(range(1, length + 1))
                for bad, color, label in ((False, "tab:blue", "honest"), (True, "tab:red", "malicious")):
                    per_round = [[r["reputation"][t][i] for r in runs for i in range(r["peers"])
                                  if (i in r["malicious_peers"]) == bad] for t in range(length)]
                    ax.fill_between(x, [min(v) for v in per_round], [max(v) for v in per_round], color=color, alpha=0.2)
                    ax.plot(x, [_mean(v) for v in per_round], color=color, marker=".", label=f"{label} (mean, min-max band)")
                ax.axhline(1000, color="grey", ls=":", lw=1)
                ax.set_title(f"{attack}, {rule}, {frac:.0%} malicious, {part}, {len(runs)} seed(s)", fontsize=9)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_xlabel("round")
                ax.set_ylabel("reputation")
            for ax in list(axes.flat)[len(panels):]:
                ax.axis("off")
            axes.flat[0].legend(fontsize=7)
            fig.tight_layout()
            path = out / f"reputation-bands-{tag}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written
