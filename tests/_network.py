"""A small in-process network for attack tests: a fresh contract on the session's anvil, the real
embedded store, and one ``Peer`` per member, driven step by step like ``experiment.run_trial``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from fedchain.node.chain import ChainClient, Outcome
from fedchain.node.ml.data import load_dataset, partition, train_test_split
from fedchain.node.peer import Peer
from fedchain.node.protocol.task import ModelSpec, Task, TrainConfig
from fedchain.node.store import EmbeddedStore
from fedchain.node.tools.attacks import make_attack
from fedchain.node.tools.deployment import deploy_task

_DATA: dict = {}


class _Quiet:
    def __call__(self, *args, **kwargs):
        pass


@dataclass
class Network:
    peers: list[Peer]
    observer: ChainClient
    deployer: ChainClient
    task: Task
    deploy_block: int

    def mine(self, n: int) -> None:
        self.observer.w3.provider.make_request("anvil_mine", [hex(n)])

    def outcome(self, round_: int) -> Outcome | None:
        return self.observer.outcome(round_, from_block=self.deploy_block)

    def settle_all(self) -> list[int]:
        """Settle every member's last round (as anyone may) and return the reputations."""
        for p in self.peers:
            info = self.observer.member_info(p.address)
            last = max(info.submitted_round, info.voted_round)
            if last > info.settled_round:
                self.deployer.settle(p.address, self.outcome(last) or Outcome.none())
        return [self.observer.member_info(p.address).reputation for p in self.peers]


def build(devnet, tmp: Path, attacks: dict[int, str], *, peers: int, rounds: int, quorum_bps: int = 6667,
          submit_blocks: int = 300, vote_blocks: int = 300, update_reveal_blocks: int = 0) -> Network:
    if "digits" not in _DATA:
        ds = load_dataset("digits")
        _DATA["digits"] = (ds, *train_test_split(ds, seed=0))
    ds, train, _ = _DATA["digits"]
    parts = partition(train, peers, seed=0)
    store = EmbeddedStore(tmp / "store")
    task = Task(name="attack-test", dataset="digits", model=ModelSpec(ds.features, ds.classes, (32,)),
                train=TrainConfig(epochs=1, lr=0.05), rule="fedavg", sample_cap=math.ceil(1.5 * len(train.y) / peers),
                rounds=rounds, submit_blocks=submit_blocks, vote_blocks=vote_blocks, reveal_blocks=0, quorum_bps=quorum_bps,
                update_reveal_blocks=update_reveal_blocks)
    deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
    dep = deploy_task(deployer, store, task, devnet.addresses[1 : peers + 1], seed=0)
    out = []
    for i in range(peers):
        chain = ChainClient(devnet.rpc_url, dep.contract, Account.from_key(devnet.keys[i + 1]))
        shard = train.__class__(train.name, train.x[parts[i]], train.y[parts[i]], train.classes)
        out.append(Peer(chain, store, task, dep.task_cid, shard, seed=i, log=_Quiet(), plugins=make_attack(attacks.get(i)),
                        state_dir=tmp / "state"))
    return Network(out, ChainClient(devnet.rpc_url, dep.contract), deployer, task, dep.deploy_block)


def play_round(net: Network, r: int) -> bool:
    """Every peer submits, then votes, as a live network would; a round that gets no quorum is
    run out and failed. True if round ``r`` finalized."""
    from fedchain.node.errors import FedChainError

    for p in net.peers:
        try:
            p.submit(r, p.chain.member_info(p.address))
        except FedChainError:
            pass
    state = net.observer.round_state()
    net.mine(max(state.submit_deadline - net.observer.block_number(), 0))  # absent members never submit
    if net.task.update_reveal_blocks:
        for p in net.peers:
            try:
                p.reveal_update(r)
            except FedChainError:
                pass
        state = net.observer.round_state()
        net.mine(max(state.submit_deadline + net.task.update_reveal_blocks - net.observer.block_number(), 0))
    for p in net.peers:
        try:
            p.vote(r, p.chain.member_info(p.address), expected=p._expected(state) if state.round == r else None,
                   commitments=state.submissions if state.round == r else None)
        except FedChainError:
            pass
    if net.observer.round_state().round == r:
        net.mine(net.task.submit_blocks + net.task.update_reveal_blocks + net.task.vote_blocks)
        net.deployer.advance()
    return net.observer.is_finalized(r)
