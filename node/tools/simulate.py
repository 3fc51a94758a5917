"""``fedchain simulate``: a devnet, a deployment and N peer processes on one machine.

The simulation is only an observer: peers are separate OS processes, each with its own key and
its own shard, talking to the chain and the store exactly as they would across organizations.
The observer reads the chain to show progress and evaluates each finalized model on a held-out
test split that no peer sees.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

from .attacks import malicious_indices
from ..chain import ChainClient, Phase
from ..ml.data import Dataset, load_dataset, load_shard, partition, save_shard, standardize, train_test_split
from ..ml.importers import ImportOptions, import_source, with_holdout
from ..ml.models import schema_of
from .deployment import deploy_task
from .devnet import Devnet, die_with_parent, free_port
from ..aggregation import check_secure_bits, check_secure_rule, pin_rule
from ..errors import ConfigError, FedChainError
from ..ledger.history import participation, round_history
from ..protocol.task import PrivacyConfig, TrainConfig
from .operations import SecureOptions
from ..ledger.updates import load_model
from ..store import EmbeddedStore
from ..protocol.task import Task
from ..ml.training import evaluate

__all__ = ["SimulationConfig", "run_simulation", "gas_report"]


@dataclass
class SimulationConfig:
    peers: int = 4
    rounds: int = 5
    dataset: str = "digits"
    partition: str = "iid"
    alpha: float = 0.5
    seed: int = 0
    rule: str = "fedavg"
    hidden: tuple[int, ...] = (64,)
    epochs: int = 5
    lr: float = 0.05
    block_time: float = 1.0
    submit_blocks: int = 60
    vote_blocks: int = 60
    quorum_bps: int = 6_667
    commit_reveal: bool = False
    update_reveal_blocks: int = 20  # sealed updates by default; 0: plain submissions
    resume: bool = False
    workdir: str | None = None
    timeout: float = 900.0
    attack: str | None = None
    malicious: float = 0.0
    extra_node_args: dict[int, list[str]] = field(default_factory=dict)
    health_ports: list[int] = field(default_factory=list)
    data: str | None = None  # the user's own data (a file or image folder) instead of ``dataset``
    import_options: ImportOptions = field(default_factory=ImportOptions)
    model: str = "mlp"
    optimizer: str = "sgd"
    batch_size: int = 32  # of local training (DP-SGD: the expected Poisson batch)
    holdout: float = 0.0  # fraction of each peer's shard kept as its local holdout (federated evaluation)
    dp: PrivacyConfig | None = None  # sample-level DP-SGD at every peer, pinned with the task
    secure: SecureOptions | None = None  # secure aggregation (then update_reveal_blocks must be 0)
    # Tabular ``data``: the task declares per-feature standardization constants published by
    # this peer (an index, or "largest": the peer with the most samples), as `deploy
    # --standardize-from` its shard would. None: features are used as they are.
    standardize_peer: int | str | None = None

    def __post_init__(self):
        from ..aggregation import make_rule
        from .attacks import make_attack

        if not 1 <= self.peers <= 256:
            raise ConfigError(f"peers must be between 1 and 256, got {self.peers}")
        if not 1 <= self.rounds <= 1_000_000:
            raise ConfigError(f"rounds must be between 1 and 1000000, got {self.rounds}")
        TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer, dp=self.dp)  # raises on epochs < 1, lr <= 0 or not finite
        if self.partition == "dirichlet" and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"alpha must be a positive finite number, got {self.alpha}")
        if not (math.isfinite(self.block_time) and 0 <= self.block_time <= 60):
            raise ConfigError(f"block time must be between 0 and 60 seconds, got {self.block_time}")
        make_rule(self.rule)
        make_attack(self.attack)
        if not (math.isfinite(self.holdout) and 0 <= self.holdout < 1):
            raise ConfigError(f"holdout must be a fraction in [0, 1), got {self.holdout}")
        if self.standardize_peer in ("none", "auto"):
            # auto: your own tabular data is standardized with its largest shard's constants (the
            # simulation's stand-in for a member that publishes them); built-ins and images are not.
            self.standardize_peer = "largest" if self.standardize_peer == "auto" and self.data and not _is_image_source(self.data) else None
        if self.standardize_peer is not None:
            if not self.data:
                raise ConfigError("standardizing from a peer's shard needs your own tabular data (--data)")
            if self.standardize_peer != "largest" and not (isinstance(self.standardize_peer, int) and 0 <= self.standardize_peer < self.peers):
                raise ConfigError(f"the peer that publishes standardization constants is an index 0..{self.peers - 1} or 'largest', "
                                  f"got {self.standardize_peer!r}")

    def malicious_peers(self) -> set[int]:
        return set(malicious_indices(self.peers, self.attack, self.malicious))


def _spawn_peer(cfg: SimulationConfig, i: int, key: str, deployment: Path, shard: Path, logdir: Path, *, mode: str = "ab",
                colluders: list[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "FEDCHAIN_KEY": key, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fedchain.cli.main", "node", "run", "--deployment", str(deployment),
           "--data", str(shard), "--key-env", "FEDCHAIN_KEY", "--json-log", "--seed", str(cfg.seed * 1000 + i),
           "--wait-deployment", "300", "--state-dir", str(logdir.parent / "state"), "--health-port", str(cfg.health_ports[i]) if cfg.health_ports else "0",
           *(["--attack", cfg.attack, "--colluders", ",".join(colluders)] if i in cfg.malicious_peers() else []),
           *cfg.extra_node_args.get(i, [])]
    log = open(logdir / f"peer-{i}.log", mode)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=die_with_parent)


def _colluders(cfg: SimulationConfig, devnet) -> list[str]:
    """The addresses of the adversarial members, which attack together."""
    return [Account.from_key(devnet.keys[j + 1]).address for j in sorted(cfg.malicious_peers())]


def gas_report(chain: ChainClient, from_block: int, members: list[str]) -> dict:
    """Gas by transaction kind and per peer per round, read back from the chain's receipts."""
    w3 = chain.w3
    by_kind: dict[str, list[int]] = defaultdict(list)
    per_peer_round: dict[tuple[str, int], int] = defaultdict(int)
    member_set = {m.lower() for m in members}
    for number in range(from_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block.transactions:
            if not tx.get("to") or tx["to"].lower() != chain.contract.address.lower():
                continue
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            fn, args = chain.contract.decode_function_input(tx["input"])
            kind = fn.fn_name
            by_kind[kind].append(receipt["gasUsed"])
            sender = tx["from"].lower()
            # Per round: what a peer's submit and vote cost. The once-per-task final settle and
            # the occasional advance are reported by kind only.
            # Secure aggregation's masked updates and reveals (publish, round > 0) count too; the
            # once-per-task identity key (round 0) is reported by kind only.
            if sender in member_set and "round" in args and (
                    kind in ("submit", "revealUpdate", "vote", "commitVote", "revealVote")
                    or (kind == "publish" and int(args["round"]) > 0)):
                per_peer_round[(sender, int(args["round"]))] += receipt["gasUsed"]
    values = list(per_peer_round.values())
    return {
        "by_kind": {k: {"count": len(v), "mean": round(sum(v) / len(v)), "max": max(v), "total": sum(v)} for k, v in sorted(by_kind.items())},
        "per_peer_per_round": {
            "mean": round(sum(values) / len(values)) if values else 0,
            "max": max(values, default=0),
            "samples": len(values),
        },
    }


def run_simulation(cfg: SimulationConfig, progress=print) -> dict:
    """Run a whole simulated network; returns the summary that ``--json`` prints."""
    if cfg.resume:
        return _resume(cfg, progress)
    work = Path(cfg.workdir or tempfile.mkdtemp(prefix="fedchain-sim-"))
    if (work / "deployment.json").exists():
        raise ConfigError(f"{work} already holds a simulation: use --resume to continue it, or another --workdir")
    (work / "shards").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    store = EmbeddedStore(work / "store")

    ds = import_source(cfg.data, cfg.import_options) if cfg.data else load_dataset(cfg.dataset)
    if cfg.data:
        cfg.dataset = ds.name
    train, test = train_test_split(ds, seed=cfg.seed)
    parts = partition(train, cfg.peers, alpha=None if cfg.partition == "iid" else cfg.alpha, seed=cfg.seed)
    if min(len(p) for p in parts) == 0 or len(test.y) == 0:
        raise ConfigError(f"{len(ds.y)} samples are too few for {cfg.peers} peers and a test split")
    task = _task(cfg, ds, train, parts)
    shards = []
    for i, idx in enumerate(parts):
        path = work / "shards" / f"peer-{i}.safetensors"
        shard = Dataset(train.name, train.x[idx], train.y[idx], train.classes, info=train.info)
        save_shard(path, with_holdout(shard, cfg.holdout, seed=cfg.seed * 1000 + i) if cfg.holdout else shard)
        shards.append(path)
    save_shard(work / "test.safetensors", test)
    test = standardize(test, *(task.data.mean, task.data.std) if task.data else ((), ()))
    progress(f"data: {cfg.dataset}, {len(train.y)} training samples in {cfg.peers} {cfg.partition} shards "
             f"({', '.join(str(len(p)) for p in parts)}{f', each keeping {cfg.holdout:g} as its holdout' if cfg.holdout else ''}), "
             f"{len(test.y)} held out for testing")

    # The chain's state is saved in the work folder every second, so `--resume` can continue.
    devnet = Devnet(accounts=cfg.peers + 1, block_time=cfg.block_time, state_file=str(work / "anvil-state.json"), state_interval=1)
    procs: list[subprocess.Popen] = []
    t_start = time.monotonic()
    try:
        devnet.start()
        progress(f"devnet: anvil at {devnet.rpc_url} (block time {cfg.block_time or 'automine'})")
        dep_path = work / "deployment.json"
        dep_path.unlink(missing_ok=True)
        cfg.health_ports = [free_port() for _ in range(cfg.peers)]
        # Peers start first (loading torch takes a while) and wait for the deployment file, so
        # that round 1's submission window is not spent importing libraries.
        for i in range(cfg.peers):
            procs.append(_spawn_peer(cfg, i, devnet.keys[i + 1], dep_path, shards[i], work / "logs", colluders=_colluders(cfg, devnet)))
        if cfg.malicious_peers():
            progress(f"adversarial peers {sorted(cfg.malicious_peers())} run attack {cfg.attack!r}")
        progress(f"started {cfg.peers} peer processes (logs in {work / 'logs'}); "
                 f"peer 0 serves http://127.0.0.1:{cfg.health_ports[0]}/metrics and /healthz")
        deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]), retry_seconds=10)
        members = devnet.addresses[1 : cfg.peers + 1]
        dep = deploy_task(deployer, store, task, members, seed=cfg.seed)
        dep.save(dep_path)
        progress(f"deployed FedChain at {dep.contract} (block {dep.deploy_block}); task {dep.task_cid}; initial model {dep.initial_model}")
        chain = ChainClient(devnet.rpc_url, dep.contract, retry_seconds=10)
        return _observe(cfg, progress, work, store, task, test, dep, dep_path, chain, procs, members, t_start)
    finally:
        _shutdown(procs, devnet)


def _task(cfg: SimulationConfig, ds, train, parts=None) -> Task:
    """The task a simulation deploys: the built-in dataset's as before (same task JSON, same
    CIDs), or one defined by the user's data schema and model."""
    from .operations import model_label, model_spec
    from ..ml.data import Dataset, feature_stats
    from ..protocol.task import DataSchema

    kind = ds.kind
    schema = None
    if cfg.data:
        mean = std = ()
        if cfg.standardize_peer is not None:
            who = max(range(len(parts)), key=lambda i: len(parts[i])) if cfg.standardize_peer == "largest" else cfg.standardize_peer
            mean, std = feature_stats(Dataset(train.name, train.x[parts[who]], train.y[parts[who]], train.classes))
        schema = DataSchema(inputs=ds.inputs, classes=ds.classes, kind=kind, mean=mean, std=std,
                            feature_names=tuple(ds.info.get("feature_names", ())), label_names=tuple(ds.info.get("label_names", ())))
    task = pin_rule(Task(
        name=f"{cfg.dataset}-{model_label(cfg.model)}", dataset=cfg.dataset,
        model=model_spec(cfg.model, ds.inputs, ds.classes, tuple(cfg.hidden)),
        train=TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, kind=kind, dp=cfg.dp), rule=cfg.rule,
        sample_cap=math.ceil(1.5 * len(train.y) / cfg.peers), rounds=cfg.rounds,
        submit_blocks=cfg.submit_blocks, vote_blocks=cfg.vote_blocks, quorum_bps=cfg.quorum_bps,
        reveal_blocks=cfg.vote_blocks if cfg.commit_reveal else 0, update_reveal_blocks=cfg.update_reveal_blocks,
        data=schema, secure_aggregation=cfg.secure.config(cfg.peers) if cfg.secure is not None else None,
    ))
    check_secure_rule(task, cfg.peers)
    check_secure_bits(task.secure_aggregation, schema_of(task.model), cfg.peers)
    return task


def _resume(cfg: SimulationConfig, progress) -> dict:
    """Continue an interrupted simulation from its work folder: the chain's saved state, the
    store, the shards and the deployment file are all it needs."""
    from urllib.parse import urlparse

    from .deployment import Deployment

    if not cfg.workdir:
        raise ConfigError("--resume needs the --workdir of the interrupted simulation")
    work = Path(cfg.workdir)
    dep_path = work / "deployment.json"
    dep = Deployment.load(dep_path)
    if not (work / "anvil-state.json").exists():
        raise ConfigError(f"{work} has no saved chain state (anvil-state.json) to resume from")
    task = Task.from_dict(dep.task)
    shards = sorted((work / "shards").glob("peer-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    cfg.peers, cfg.rounds, cfg.dataset, cfg.rule = len(shards), task.rounds, task.dataset, task.rule
    if (work / "test.safetensors").exists():
        test = load_shard(work / "test.safetensors")
        test = standardize(test, *(task.data.mean, task.data.std) if task.data else ((), ()))
    else:  # simulations from before the test split was kept in the work folder
        _, test = train_test_split(load_dataset(task.dataset), seed=cfg.seed)
    store = EmbeddedStore(work / "store")
    devnet = Devnet(port=urlparse(dep.rpc_url).port or 0, accounts=cfg.peers + 1, block_time=cfg.block_time,
                    state_file=str(work / "anvil-state.json"), state_interval=1)
    procs: list[subprocess.Popen] = []
    t_start = time.monotonic()
    try:
        devnet.start()
        chain = ChainClient(devnet.rpc_url, dep.contract, retry_seconds=10)
        chain.check_deployed()
        state = chain.round_state()
        progress(f"resuming {work}: chain restored at block {chain.block_number()}, round {state.round} ({state.phase.name.lower()})")
        cfg.health_ports = [free_port() for _ in range(cfg.peers)]
        members = devnet.addresses[1 : cfg.peers + 1]
        for i in range(cfg.peers):
            procs.append(_spawn_peer(cfg, i, devnet.keys[i + 1], dep_path, shards[i], work / "logs", colluders=_colluders(cfg, devnet)))
        progress(f"restarted {cfg.peers} peer processes")
        return _observe(cfg, progress, work, store, task, test, dep, dep_path, chain, procs, members, t_start)
    finally:
        _shutdown(procs, devnet)


def _shutdown(procs: list[subprocess.Popen], devnet: Devnet) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    devnet.stop()


def _observe(cfg, progress, work, store, task, test, dep, dep_path, chain, procs, members, t_start) -> dict:
    """Show progress until the task completes; then gather the summary."""
    accuracy: dict[int, float] = {}
    seen_rounds: dict[int, str] = {}
    round_seen_at: dict[int, float] = {1: time.monotonic()}
    round_wall: dict[int, float] = {}
    last_line = ""
    while True:
        state = chain.round_state()
        history = round_history(chain, from_block=dep.deploy_block)
        for rec in history:
            if rec.status in ("finalized", "failed") and rec.round not in seen_rounds:
                seen_rounds[rec.round] = rec.status
                now = time.monotonic()
                round_wall[rec.round] = now - round_seen_at.get(rec.round, now)
                round_seen_at[rec.round + 1] = now
                if rec.status == "finalized":
                    accuracy[rec.round] = evaluate(task.model, load_model(store, rec.model, task), test, kind=task.train.kind)
                    progress(f"round {rec.round}: finalized {rec.model}  updates {rec.included_count}/{len(rec.submissions)}  "
                             f"votes {len(rec.votes)} (weight {rec.weight}/{rec.total_reputation})  "
                             f"test {'MSE' if task.train.kind == 'regression' else 'accuracy'} {accuracy[rec.round]:.4f}")
                else:
                    progress(f"round {rec.round}: failed without quorum; previous model carries over")
        if state.phase is not Phase.COMPLETE:
            line = f"round {state.round}: {state.phase.name.lower()}  updates {state.submissions}/{cfg.peers}"
            current = next((r for r in history if r.round == state.round), None)
            if current:
                line += f"  votes {len(current.votes)}/{cfg.peers}"
            if line != last_line:
                progress(line)
                last_line = line
        alive = [p for p in procs if p.poll() is None]
        if state.phase is Phase.COMPLETE and not alive:
            break
        if not alive and state.phase is not Phase.COMPLETE:
            raise FedChainError(f"every peer process exited before the task completed; see {work / 'logs'}")
        if time.monotonic() - t_start > cfg.timeout:
            raise FedChainError(f"simulation timed out after {cfg.timeout:.0f}s; see {work / 'logs'}")
        time.sleep(0.5)

    failures = [i for i, p in enumerate(procs) if p.returncode != 0]
    history = round_history(chain, from_block=dep.deploy_block)
    timings = _collect_timings(work / "logs", cfg.peers)
    gas = gas_report(chain, dep.deploy_block + 1, members)
    finalized = [r for r in history if r.status == "finalized"]
    final_round = finalized[-1].round if finalized else 0
    final_cid = finalized[-1].model if finalized else dep.initial_model
    final_state = load_model(store, final_cid, task)
    final_acc = evaluate(task.model, final_state, test, kind=task.train.kind)
    backdoor_asr = backdoor_success_rate(task.model, final_state, test) if cfg.attack == "backdoor" else None
    peers = [{**row, "malicious": row["index"] in cfg.malicious_peers()} for row in participation(chain, history)]
    federated = _federated(chain, store, task, dep, history, members, work / "logs")
    privacy = _privacy(chain, store, task, dep, history, members, work / "logs")
    secure = _secure(chain, store, task, dep, history, members)
    rounds = []
    for rec in history:
        rounds.append({
            "round": rec.round, "status": rec.status, "model": rec.model, "updates": len(rec.submissions),
            "included": rec.included_count, "votes": len(rec.votes), "vote_weight": rec.weight,
            "total_reputation": rec.total_reputation, "test_accuracy": accuracy.get(rec.round),
            "federated_metric": federated[rec.round].to_dict() if rec.round in federated else None,
            "wall_seconds": round(round_wall.get(rec.round, 0.0), 3), "seconds": timings.get(rec.round, {}),
            "blocks": None if rec.end_block is None else rec.end_block - rec.start_block,
            **({"dp_epsilon": privacy["per_round"].get(rec.round, {})} if privacy else {}),
            **({"secure_aggregation": secure["per_round"].get(rec.round)} if secure else {}),
        })
    return {
        "peers": cfg.peers, "rounds_requested": cfg.rounds, "dataset": cfg.dataset, "partition": cfg.partition,
        "model": task.model.arch, "task_kind": task.train.kind,
        # What test_accuracy and final_test_accuracy hold: accuracy, or the MSE of a regression.
        "test_metric": "mse" if task.train.kind == "regression" else "accuracy",
        # The members' own holdouts (no central test set): each round's federated_metric, and the initial model's.
        "federated_metric": "mse" if task.train.kind == "regression" else "accuracy", "holdout": cfg.holdout,
        "initial_federated_metric": federated[0].to_dict() if 0 in federated else None,
        "alpha": cfg.alpha if cfg.partition != "iid" else None, "seed": cfg.seed, "rule": cfg.rule,
        "attack": cfg.attack, "malicious_fraction": cfg.malicious, "commit_reveal": cfg.commit_reveal,
        "update_reveal_blocks": task.update_reveal_blocks, "malicious_peers": sorted(cfg.malicious_peers()),
        "backdoor_success_rate": backdoor_asr, "privacy": privacy, "secure_aggregation": secure,
        "rounds_finalized": sum(1 for r in history if r.status == "finalized"),
        "rounds_failed": sum(1 for r in history if r.status == "failed"),
        "final_model": final_cid, "final_model_round": final_round, "final_test_accuracy": final_acc,
        "rounds": rounds, "gas": gas, "peer_reputation": peers,
        "peer_exit_codes": [p.returncode for p in procs], "peer_failures": failures,
        "wall_seconds": round(time.monotonic() - t_start, 2), "workdir": str(work), "contract": dep.contract,
        "deployment": str(dep_path),
    }


def _secure(chain, store, task, dep, history, members) -> dict | None:
    """A secure-aggregation task's rounds: dealers, survivors, dropouts and their recovery, and,
    with distributed DP, the epsilon every member has spent by each round (zCDP composed over
    rounds; None without noise: secure aggregation alone hides updates but gives no DP)."""
    sa = task.secure_aggregation
    if sa is None:
        return None
    from ..ledger.secure import secure_summary
    from ..secagg.accountant import total_epsilon

    per_round, rhos = {}, []
    for rec in history:
        if rec.status != "finalized":
            continue
        summary = secure_summary(chain, store, task, dep.task_cid, rec.round, start_block=rec.start_block, members=members,
                                 deploy_block=dep.deploy_block, base_cid=rec.base_model)
        if summary["dp_rho"] is not None:
            rhos.append(summary["dp_rho"])
        summary["dp_epsilon"] = total_epsilon(rhos, sa.delta) if rhos else None
        per_round[rec.round] = summary
    return {"threshold": sa.threshold, "buckets": sa.buckets, "clip": sa.clip, "noise_multiplier": sa.noise_multiplier,
            "delta": sa.delta, "final_epsilon": total_epsilon(rhos, sa.delta) if rhos else None,
            "dropped": sum(len(x["dropped"]) for x in per_round.values()),
            "recovered": sum(len(x["recovered"]) for x in per_round.values()),
            "dealt_ahead": sum(bool(x["dealt_ahead"]) for x in per_round.values()), "per_round": per_round}


def _federated(chain, store, task, dep, history, members, logdir: Path) -> dict:
    """The federated metric of every round: from the updates on record, and the last round's
    model from the peers' logs."""
    from ..ledger.evaluation import evaluations_from_logs, federated_metrics, published_evaluations

    published = published_evaluations(chain, store, task, dep.task_cid, history, chain.members(), dep.initial_model)
    logged = evaluations_from_logs(sorted(logdir.glob("peer-*.log")), task, members)
    return federated_metrics(history, task, published, logged)


def _privacy(chain, store, task, dep, history, members, logdir: Path) -> dict | None:
    """A DP task's privacy per peer: the cumulative epsilon each peer's update of each round
    reports (chain and store), each peer's last, and which peers said their budget was spent."""
    from ..ledger.privacy import published_privacy

    dp = task.train.dp
    if dp is None:
        return None
    index = {m.lower(): i for i, m in enumerate(members)}
    published = published_privacy(chain, store, task, dep.task_cid, history, members)
    per_round = {r: {index[m]: p.epsilon for m, p in sorted(found.items(), key=lambda kv: index[kv[0]])}
                 for r, found in published.items()}
    final: list[float | None] = [None] * len(members)
    noise: list[float | None] = [None] * len(members)
    for r in sorted(published):
        for m, p in published[r].items():
            final[index[m]], noise[index[m]] = p.epsilon, p.noise_multiplier
    spent = []
    for i in range(len(members)):
        path = logdir / f"peer-{i}.log"
        if path.exists() and '"dp_budget_spent"' in path.read_text(errors="replace"):
            spent.append(i)
    return {"delta": dp.delta, "epsilon_budget": dp.epsilon, "max_grad_norm": dp.max_grad_norm,
            "noise_multiplier": noise, "final_epsilon": final, "per_round": per_round, "budget_spent": spent}


def backdoor_success_rate(spec, state, test) -> float:
    """Share of test samples not of the target class that the trigger flips to the target."""
    import numpy as np
    import torch

    from .attacks import BACKDOOR_TARGET, add_trigger
    from ..ml.models import build_model

    keep = test.y != BACKDOOR_TARGET
    model = build_model(spec)
    model.load_state_dict(state)
    with torch.no_grad():
        pred = model(torch.from_numpy(add_trigger(test.x[keep]))).argmax(1).numpy()
    return float(np.mean(pred == BACKDOOR_TARGET))


def _collect_timings(logdir: Path, peers: int) -> dict[int, dict[str, float]]:
    """Mean over peers of each phase's seconds per round, from the peers' JSON logs."""
    sums: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i in range(peers):
        path = logdir / f"peer-{i}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("event") == "round_timing":
                for phase in ("train", "store", "chain", "aggregate"):
                    if phase in rec:
                        sums[rec["round"]][phase].append(float(rec[phase]))
    return {r: {p: round(sum(v) / len(v), 4) for p, v in phases.items()} for r, phases in sums.items()}


def _is_image_source(path: str) -> bool:
    """An image folder (ImageFolder layout) rather than a tabular file."""
    import os

    return os.path.isdir(path)
