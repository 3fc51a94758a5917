"""The round loop as a state machine: ``next_action`` decided from a table of facts, and
``Peer.step`` driven through every path against the real contract on anvil.

Blocks move with ``anvil_mine`` on the automining session devnet. A client with
``confirmations`` reads events that many blocks behind the head and waits that many blocks after
each of its transactions: in step-by-step tests it mines those blocks itself (``SelfConfirming``);
whole networks run while a ``Miner`` thread adds a block every few milliseconds.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
from eth_account import Account

from fedchain.node.chain import ChainClient, MemberInfo, Outcome, Phase, deploy_contract
from fedchain.node.ledger.history import round_history
from fedchain.node.ml.data import Dataset
from fedchain.node.ml.models import ModelSpec
from fedchain.node.ml.training import TrainConfig
from fedchain.node.peer import Action, Facts, Peer, next_action
from fedchain.node.protocol.cid import cid_to_digest
from fedchain.node.protocol.task import Task
from fedchain.node.store import EmbeddedStore
from fedchain.node.tools.deployment import deploy_task

S, V, X, C, R = Phase.SUBMISSION, Phase.VOTING, Phase.EXPIRED, Phase.COMPLETE, Phase.REVEAL
WAIT, ADVANCE, LATE_VOTE, REVEAL, SUBMIT, VOTE = (
    Action.WAIT, Action.ADVANCE, Action.LATE_VOTE, Action.REVEAL, Action.SUBMIT, Action.VOTE)


# =============================================================================== next_action
def F(round_, phase, sub, voted, *, cr=False, abstained=(), revealed=(), prev_final=False) -> Facts:
    return Facts(round_, phase, sub, voted, cr, frozenset(abstained), frozenset(revealed), prev_final)


TABLE = [
    # ---- plain votes, nothing owed for the previous round
    ("fresh member submits", F(1, S, 0, 0), (SUBMIT, 1)),
    ("submitted: wait for voting", F(1, S, 1, 0), (WAIT, 1)),
    ("voting opens: vote", F(1, V, 1, 0), (VOTE, 1)),
    ("voted: wait", F(1, V, 1, 1), (WAIT, 1)),
    ("missed the submission window: still vote", F(1, V, 0, 0), (VOTE, 1)),
    ("plugins abstained: no vote", F(1, V, 1, 0, abstained={1}), (WAIT, 1)),
    ("expired round: advance", F(1, X, 1, 0), (ADVANCE, 1)),
    ("expired, already voted: advance", F(2, X, 2, 2), (ADVANCE, 2)),
    ("task complete: nothing left", F(6, C, 5, 5, prev_final=True), (WAIT, 6)),
    ("reveal phase of a plain task never happens: wait", F(1, R, 1, 1), (WAIT, 1)),
    ("next round after voting: submit", F(2, S, 1, 1, prev_final=True), (SUBMIT, 2)),
    ("previous round failed: no late vote, submit", F(2, S, 1, 0, prev_final=False), (SUBMIT, 2)),
    # ---- plain late vote: the previous round finalized before our vote got in
    ("late vote before submitting", F(2, S, 1, 0, prev_final=True), (LATE_VOTE, 1)),
    ("late vote before voting", F(2, V, 1, 0, prev_final=True), (LATE_VOTE, 1)),
    ("late vote before advancing", F(2, X, 1, 0, prev_final=True), (LATE_VOTE, 1)),
    ("late vote for the last round at task end", F(6, C, 5, 4, prev_final=True), (LATE_VOTE, 5)),
    ("late vote given up (could not land): submit", F(2, S, 1, 0, abstained={1}, prev_final=True), (SUBMIT, 2)),
    ("no late vote without a submission there", F(2, S, 0, 0, prev_final=True), (SUBMIT, 2)),
    ("no late vote after submitting the next round", F(2, S, 2, 0, prev_final=True), (WAIT, 2)),
    ("no late vote in round 1", F(1, S, 0, 0, prev_final=True), (SUBMIT, 1)),
    # ---- commit-reveal
    ("cr: fresh member submits", F(1, S, 0, 0, cr=True), (SUBMIT, 1)),
    ("cr: commit in the voting window", F(1, V, 1, 0, cr=True), (VOTE, 1)),
    ("cr: committed: wait for the reveal window", F(1, V, 1, 1, cr=True), (WAIT, 1)),
    ("cr: reveal in the window", F(1, R, 1, 1, cr=True), (REVEAL, 1)),
    ("cr: revealed: wait", F(1, R, 1, 1, cr=True, revealed={1}), (WAIT, 1)),
    ("cr: never committed: nothing to reveal", F(1, R, 1, 0, cr=True), (WAIT, 1)),
    ("cr: abstained: nothing to reveal", F(1, R, 1, 1, cr=True, abstained={1}), (WAIT, 1)),
    ("cr: expired before revealing: advance", F(1, X, 1, 1, cr=True), (ADVANCE, 1)),
    ("cr: late reveal before submitting", F(2, S, 1, 1, cr=True, prev_final=True), (REVEAL, 1)),
    ("cr: late reveal before committing", F(2, V, 1, 1, cr=True, prev_final=True), (REVEAL, 1)),
    ("cr: late reveal before advancing", F(2, X, 0, 1, cr=True, prev_final=True), (REVEAL, 1)),
    ("cr: late reveal of the last round at task end", F(4, C, 3, 3, cr=True, prev_final=True), (REVEAL, 3)),
    ("cr: late reveal without a submission", F(2, S, 0, 1, cr=True, prev_final=True), (REVEAL, 1)),
    ("cr: revealed in time: submit", F(2, S, 1, 1, cr=True, revealed={1}, prev_final=True), (SUBMIT, 2)),
    ("cr: previous round failed: nothing to reveal", F(2, S, 1, 1, cr=True), (SUBMIT, 2)),
    ("cr: late reveal given up: submit", F(2, S, 1, 1, cr=True, abstained={1}, prev_final=True), (SUBMIT, 2)),
    ("cr: no late vote under commit-reveal", F(2, S, 1, 0, cr=True, prev_final=True), (SUBMIT, 2)),
    ("cr: no late reveal after submitting the next round", F(2, S, 2, 1, cr=True, prev_final=True), (WAIT, 2)),
    ("cr: committed this round, previous revealed", F(2, R, 2, 2, cr=True, revealed={1}, prev_final=True), (REVEAL, 2)),
]


@pytest.mark.parametrize("facts,expected", [(f, e) for _, f, e in TABLE], ids=[name for name, _, _ in TABLE])
def test_next_action_table(facts, expected):
    assert next_action(facts) == expected


def _owed(f: Facts) -> tuple[Action, int] | None:
    """The previous round's step that must land first: the contract still takes it (the round
    just before the open one, finalized, nothing sent since that settles it) and skipping it
    costs the member (no agreement reward; under commit-reveal, halving)."""
    prev = f.round - 1
    if prev < 1 or not f.previous_finalized or prev in f.abstained or f.submitted_round >= f.round:
        return None
    if f.commit_reveal and f.voted_round == prev and prev not in f.revealed:
        return REVEAL, prev
    if not f.commit_reveal and f.submitted_round == prev and f.voted_round < prev:
        return LATE_VOTE, prev
    return None


def _accepted(f: Facts, action: Action, r: int) -> bool:
    """Whether the contract takes ``action`` in the state ``f`` describes (the model of
    FedChain.sol's checks this table is held against)."""
    if action is ADVANCE:
        return f.phase is X
    if action is SUBMIT:
        return f.phase is S and r == f.round and f.submitted_round != r
    if action is VOTE:
        return f.phase is V and r == f.round and f.voted_round != r
    if action is LATE_VOTE:
        return not f.commit_reveal and r == f.round - 1 and f.previous_finalized and f.voted_round < r \
            and f.submitted_round <= r
    if action is REVEAL:
        if not f.commit_reveal or f.voted_round != r or r in f.revealed:
            return False
        return (r == f.round and f.phase is R) or (r == f.round - 1 and f.previous_finalized)
    return True


def test_next_action_over_every_combination_of_its_inputs():
    """Every combination of facts around rounds 1..3: the action is one the contract accepts,
    a step the previous round still needs always comes first, and the peer never idles while it
    could submit, vote or reveal."""
    checked = 0
    for r, phase, cr, prev_final in itertools.product((1, 2, 3), Phase, (False, True), (False, True)):
        rounds = range(max(r - 2, 0), r + 1)
        near = [x for x in (r - 1, r) if x >= 1]
        subsets = [frozenset(c) for k in range(len(near) + 1) for c in itertools.combinations(near, k)]
        for sub, voted, abstained, revealed in itertools.product(rounds, rounds, subsets, subsets):
            f = Facts(r, phase, sub, voted, cr, abstained, revealed if cr else frozenset(), prev_final and r > 1)
            action, target = next_action(f)
            checked += 1
            assert target in (r, r - 1), f
            assert _accepted(f, action, target), (f, action, target)
            owed = _owed(f)
            if owed:
                assert (action, target) == owed, f
                continue
            assert target == r, f
            if phase is C:
                assert action is WAIT, f
            elif phase is X:
                assert action is ADVANCE, f
            elif phase is S:
                assert action is (SUBMIT if sub != r else WAIT), f
            elif phase is V:
                assert action is (VOTE if voted != r and r not in abstained else WAIT), f
            elif phase is R:
                can_reveal = cr and voted == r and r not in revealed and r not in abstained
                assert action is (REVEAL if can_reveal else WAIT), f
    assert checked > 5_000


# =============================================================================== on anvil
class Log:
    """An EventLog stand-in that keeps the records."""

    def __init__(self):
        self.records: list[tuple[str, int | None, dict]] = []

    def __call__(self, event, round_=None, **fields):
        self.records.append((event, round_, fields))

    def events(self, name: str) -> list[tuple[int | None, dict]]:
        return [(r, f) for e, r, f in self.records if e == name]


class Miner:
    """Adds a block every ``interval`` seconds while in use (a block time for automine)."""

    def __init__(self, chain: ChainClient, interval: float = 0.05):
        self.chain = ChainClient(chain.rpc_url)  # a connection of its own
        self.interval = interval
        self.mined = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            try:  # a slow answer on a loaded machine must not stop the chain for good
                self.chain.w3.provider.make_request("anvil_mine", ["0x1"])
                self.mined += 1
            except Exception:
                continue

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class SelfConfirming(ChainClient):
    """A client that mines the blocks its confirmation wait needs: on automine no block comes
    on its own, and a step that sends when it should have waited fails instead of hanging."""

    def _wait_confirmations(self, block: int) -> None:
        missing = block + self.confirmations - self.block_number()
        if missing > 0:
            self.w3.provider.make_request("anvil_mine", [hex(missing)])
        super()._wait_confirmations(block)


def wait_until(predicate, timeout: float, what: str, *, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Net:
    devnet: object
    task: Task
    task_cid: str
    store: EmbeddedStore
    contract: str
    deploy_block: int
    members: list[str]
    shards: list[Dataset]
    observer: ChainClient
    peers: list[Peer] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)

    def mine(self, n: int = 1) -> None:
        self.observer.w3.provider.make_request("anvil_mine", [hex(n)])

    def state(self):
        return self.observer.round_state()

    def peer(self, i: int, *, confirmations: int = 0, fetch_timeout: float = 5.0, client=SelfConfirming) -> Peer:
        """A (new) Peer process for member ``i``: no memory but what the chain and store hold."""
        chain = client(self.devnet.rpc_url, self.contract, Account.from_key(self.devnet.keys[i + 1]),
                       confirmations=confirmations)
        return Peer(chain, self.store, self.task, self.task_cid, self.shards[i], seed=i, poll=0.05, log=Log(),
                    fetch_timeout=fetch_timeout)

    def step(self, i: int) -> tuple:
        """One step of member ``i``'s peer at the current head; what it did (``Peer.last_step``)."""
        p = self.peers[i]
        p.step(p.chain.round_state())
        return p.last_step

    def steps(self, *members: int) -> list[tuple]:
        return [self.step(i) for i in members]

    def rep(self, i: int) -> int:
        return self.observer.member_info(self.members[i]).reputation

    def votes(self, r: int) -> dict[str, tuple[bytes, int]]:
        return {ev.args.peer.lower(): (bytes(ev.args.model), int(ev.args.included))
                for ev in self.observer.events("VoteCast", from_block=self.deploy_block, round=r)}


def _shard(i: int, n: int = 24) -> Dataset:
    rng = np.random.default_rng(100 + i)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return Dataset("toy", x, y, 2)


@pytest.fixture
def net(devnet, tmp_path):
    """Factory: a task on the session devnet with ``n`` members and one Peer each."""

    def _net(n=3, *, rounds=3, reveal_blocks=0, windows=60, quorum_bps=6_000, confirmations=None,
             client=SelfConfirming) -> Net:
        task = Task(name="loop", dataset="toy", model=ModelSpec(6, 2, (4,)), train=TrainConfig(epochs=1, batch_size=8),
                    rounds=rounds, submit_blocks=windows, vote_blocks=windows, reveal_blocks=reveal_blocks,
                    quorum_bps=quorum_bps, sample_cap=100)
        store = EmbeddedStore(tmp_path / "store")
        deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
        members = devnet.addresses[1 : n + 1]
        dep = deploy_task(deployer, store, task, members)
        out = Net(devnet, task, dep.task_cid, store, dep.contract, dep.deploy_block, members,
                  [_shard(i) for i in range(n)], ChainClient(devnet.rpc_url, dep.contract))
        for i in range(n):
            out.peers.append(out.peer(i, confirmations=(confirmations or [0] * n)[i], client=client))
            out.logs.append(out.peers[i].log)
        return out

    return _net


def _finalized(net: Net, r: int):
    return next((h for h in round_history(net.observer, from_block=net.deploy_block) if h.round == r and h.status == "finalized"), None)


# ------------------------------------------------------------------------------- plain votes
def test_step_submits_waits_votes_and_finalizes(net):
    n = net(3)
    assert n.step(0) == (SUBMIT, 1, "sent")
    assert n.step(0) == (WAIT, 1, "idle")  # submitted; voting opens when everyone has
    assert n.step(1) == (SUBMIT, 1, "sent")
    assert n.step(2) == (SUBMIT, 1, "sent")
    assert n.state().phase is V
    assert n.step(0) == (VOTE, 1, "sent")
    assert n.step(0) == (WAIT, 1, "idle")
    assert n.step(1) == (VOTE, 1, "sent")
    rec = _finalized(n, 1)  # 2 of 3 equal reputations pass the 60% quorum
    assert rec and rec.included_count == 3
    assert len(set(n.votes(1).values())) == 1


def test_a_late_vote_lands_before_the_next_submission_and_is_rewarded(net):
    n = net(3)
    n.steps(0, 1, 2)
    n.steps(0, 1)
    assert n.state().round == 2  # finalized without member 2's vote
    assert n.step(2) == (LATE_VOTE, 1, "sent")
    votes = n.votes(1)
    assert n.observer.is_outcome(1, *votes[n.members[2].lower()])  # it agrees with the outcome
    assert n.step(2) == (SUBMIT, 2, "sent")  # settles round 1: included +100, agreed in time +50
    assert n.rep(2) == 1150  # not being in the deciding quorum costs nothing
    assert n.step(0) == (SUBMIT, 2, "sent")
    assert n.rep(0) == 1150


def test_an_expired_round_is_advanced(net):
    n = net(3, windows=20)
    n.step(0)
    n.mine(41)
    assert n.state().phase is X
    assert n.step(1) == (ADVANCE, 1, "sent")
    assert n.state().round == 2 and n.state().phase is S
    assert [h.status for h in round_history(n.observer, from_block=n.deploy_block)] == ["failed", "open"]
    assert n.step(1) == (SUBMIT, 2, "sent")


def test_an_idle_peer_says_what_it_waits_for_once_per_change(net):
    n = net(3, windows=20)
    assert n.step(0) == (SUBMIT, 1, "sent")
    n.step(0)
    n.step(0)  # nothing changed: no second line
    waits = n.logs[0].events("waiting")
    assert len(waits) == 1 and waits[0][1]["reason"].startswith("1 of 3 updates; submission window closes in ")
    n.step(1)
    n.step(0)
    assert n.logs[0].events("waiting")[-1][1]["reason"].startswith("2 of 3 updates")


def test_a_peer_that_missed_the_submission_window_says_so(net):
    n = net(3, windows=20)
    n.step(0)
    n.step(1)
    n.mine(21)  # the submission window closes without member 2
    assert n.state().phase is V
    n.step(0)  # member 0 votes
    n.step(2)  # member 2 votes too (it can still vote), then, idle, says it missed the window
    n.step(2)
    missed = n.logs[2].events("missed_window")
    assert len(missed) == 1 and missed[0][0] == 1 and "before this peer submitted" in missed[0][1]["reason"]
    assert not n.logs[0].events("missed_window")


def test_a_late_vote_the_chain_moved_past_is_skipped_and_the_peer_moves_on(net):
    n = net(3, windows=20)
    n.steps(0, 1, 2)
    n.steps(0, 1)
    stale = n.peers[2].chain.round_state()  # round 2: member 2 still owes its late vote for round 1
    n.mine(41)
    n.peers[0].chain.advance()  # round 2 fails; round 3 opens: a vote for round 1 no longer lands
    p = n.peers[2]
    assert p.step(stale) is False
    assert p.last_step == (LATE_VOTE, 1, "skipped")
    assert n.step(2) == (SUBMIT, 3, "sent")  # carries on with the open round
    assert n.rep(2) == 1100  # round 1 settled as included, without a vote


def test_a_restarted_peer_whose_submission_already_landed_carries_on(net):
    n = net(3)
    before = n.peers[0].chain.member_info(n.members[0])
    assert n.step(0) == (SUBMIT, 1, "sent")
    again = n.peer(0)  # restarted; its first look at the chain predates its previous life's submission

    class StaleOnce(ChainClient):
        stale: MemberInfo | None = before

        def member_info(self, peer):
            info, StaleOnce.stale = StaleOnce.stale, None
            return info or super().member_info(peer)

    again.chain.__class__ = StaleOnce
    assert again.step(again.chain.round_state()) is False
    assert again.last_step == (SUBMIT, 1, "already")
    assert again.step(again.chain.round_state()) is False
    assert again.last_step == (WAIT, 1, "idle")
    assert n.state().submissions == 1


def test_an_invalid_or_missing_update_is_excluded_and_the_peers_still_agree(net):
    n = net(4, quorum_bps=6_000)
    for i in range(3):
        n.peers[i].fetch_timeout = 0.5
        n.step(i)
    garbage = n.store.add(b"not an artifact" * 10)
    n.peers[3].chain.submit(1, cid_to_digest(garbage), Outcome.none())  # member 3 records garbage
    assert n.step(0) == (VOTE, 1, "sent")
    assert n.step(1) == (VOTE, 1, "sent")
    assert n.step(2) == (VOTE, 1, "sent")
    rec = _finalized(n, 1)
    assert rec and rec.included == 0b0111
    assert all(any(f["member"] == 3 for _, f in n.logs[i].events("excluded")) for i in range(3))
    # round 2: member 3 records a digest whose artifact nobody has; it is excluded after the fetch timeout
    for i in range(3):
        assert n.step(i) == (SUBMIT, 2, "sent")
    n.peers[3].chain.submit(2, os.urandom(32), n.observer.outcome(1, from_block=n.deploy_block))
    for i in range(3):
        assert n.step(i) == (VOTE, 2, "sent")
    rec = _finalized(n, 2)
    assert rec and rec.included == 0b0111


def test_a_base_model_that_is_no_model_is_skipped_without_ending_the_peer(devnet, tmp_path):
    task = Task(name="bad-base", dataset="toy", model=ModelSpec(6, 2, (4,)), rounds=1, submit_blocks=20, vote_blocks=20)
    store = EmbeddedStore(tmp_path / "store")
    task_cid = store.add(task.to_bytes())
    deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
    address, _ = deploy_contract(deployer, members=devnet.addresses[1:3], initial_model=cid_to_digest(store.add(b"junk" * 64)),
                                 task=cid_to_digest(task_cid), submit_blocks=20, vote_blocks=20, quorum_bps=6_000,
                                 max_rounds=1, rule=0)
    peer = Peer(ChainClient(devnet.rpc_url, address, Account.from_key(devnet.keys[1])), store, task, task_cid, _shard(0),
                log=Log())
    assert peer.step(peer.chain.round_state()) is False
    assert peer.last_step == (SUBMIT, 1, "skipped")
    assert "unusable base model" in peer.log.events("skipped")[-1][1]["reason"]
    deployer.w3.provider.make_request("anvil_mine", [hex(40)])
    assert peer.step(peer.chain.round_state()) is True
    assert peer.last_step == (ADVANCE, 1, "sent")  # it still keeps the task moving


# ------------------------------------------------------------------------------- confirmations
def test_a_peer_behind_the_head_waits_for_the_round_start(net):
    n = net(3, confirmations=[2, 0, 0])
    p = n.peers[0]
    assert n.step(0) == (SUBMIT, 1, "waiting")  # RoundStarted is in the head block, not 2 behind it
    assert "not visible yet" in p.log.events("waiting")[-1][1]["reason"]
    n.mine(2)
    assert n.step(0) == (SUBMIT, 1, "sent")
    assert n.state().submissions == 1


def test_a_voter_behind_the_head_waits_for_every_submission_and_agrees(net):
    n = net(3, confirmations=[0, 0, 3])
    n.mine(3)
    assert n.step(2) == (SUBMIT, 1, "sent")  # the lagging member submits first (and 3 blocks follow)
    n.steps(0, 1)  # automine: the last two submissions are the two head blocks
    assert n.state().phase is V
    assert n.step(2) == (VOTE, 1, "waiting")  # 1 of 3 submissions in view: no aggregate yet
    assert "1 of 3 submissions" in n.logs[2].events("waiting")[-1][1]["reason"]
    assert n.step(0) == (VOTE, 1, "sent")
    n.mine(3)
    assert n.step(2) == (VOTE, 1, "sent")
    votes = n.votes(1)
    assert len(votes) == 2 and len(set(votes.values())) == 1  # the same aggregate from both views
    assert votes[n.members[2].lower()][1] == 0b111


def test_a_late_voter_behind_the_head_waits_for_the_rounds_end_and_agrees(net):
    n = net(3, confirmations=[0, 0, 3])
    n.mine(3)
    n.step(2)
    n.steps(0, 1)
    n.steps(0, 1)  # finalized in the head block: round 2 has started, 0 blocks behind
    assert n.state().round == 2
    assert n.step(2) == (LATE_VOTE, 1, "waiting")  # round 1's end is in the head block
    n.mine(3)
    assert n.step(2) == (LATE_VOTE, 1, "sent")
    assert n.step(2) == (SUBMIT, 2, "sent")
    assert n.rep(2) == 1150


def test_a_peer_behind_the_head_settles_its_last_round_once_the_outcome_is_in_view(net):
    n = net(3, rounds=1, confirmations=[0, 0, 3])
    n.mine(3)
    assert n.step(2) == (SUBMIT, 1, "sent")
    n.steps(0, 1)
    n.mine(3)
    assert n.step(2) == (VOTE, 1, "sent")
    assert n.step(0) == (VOTE, 1, "sent")  # finalizes the task's only round in the head block
    assert n.state().phase is C
    finishing = threading.Thread(target=n.peers[2].run, daemon=True)
    finishing.start()
    wait_until(lambda: any(r == 1 for r, _ in n.logs[2].events("waiting")), 30, "the settlement to wait")
    assert finishing.is_alive()  # settling with the outcome out of view would revert: it waits
    n.mine(3)
    finishing.join(30)
    assert not finishing.is_alive()
    assert [e for e, _, _ in n.logs[2].records][-2:] == ["settled", "task_complete"]
    assert n.rep(2) == 1150


def test_a_late_voter_behind_the_head_waits_for_the_last_rounds_end_and_agrees(net):
    n = net(3, rounds=1, confirmations=[0, 0, 3])
    n.mine(3)
    n.step(2)
    n.steps(0, 1)
    n.steps(0, 1)  # the task's only round finalized in the head block: no round 2 will ever start
    assert n.state().phase is C
    assert n.step(2) == (LATE_VOTE, 1, "waiting")
    assert "the end of round 1" in n.logs[2].events("waiting")[-1][1]["reason"]
    n.mine(3)
    assert n.step(2) == (LATE_VOTE, 1, "sent")
    assert n.observer.is_outcome(1, *n.votes(1)[n.members[2].lower()])
    assert n.step(2) == (WAIT, 2, "idle")


# ------------------------------------------------------------------------------- commit-reveal
def test_commit_then_reveal_in_the_window_finalizes(net):
    n = net(3, reveal_blocks=60)
    for i in range(3):
        assert n.step(i) == (SUBMIT, 1, "sent")
    for i in range(3):
        assert n.step(i) == (VOTE, 1, "sent")  # commitments
    assert n.votes(1) == {}
    assert n.state().phase is R  # everyone committed: reveals open at once
    assert n.step(0) == (REVEAL, 1, "sent")
    assert n.step(0) == (WAIT, 1, "idle")
    assert n.step(1) == (REVEAL, 1, "sent")
    assert _finalized(n, 1) is not None


def test_a_slow_honest_revealer_reveals_late_before_submitting_and_is_not_halved(net):
    n = net(3, reveal_blocks=60)
    n.steps(0, 1, 2)  # submissions
    n.steps(0, 1, 2)  # commitments
    n.steps(0, 1)
    assert n.state().round == 2  # finalized before member 2 revealed
    assert n.step(2) == (REVEAL, 1, "sent")  # the late reveal comes before the next submission
    assert n.observer.is_outcome(1, *n.votes(1)[n.members[2].lower()])
    assert n.step(2) == (SUBMIT, 2, "sent")
    assert n.rep(2) == 1150  # included (+100) and agreeing late, in time (+50): not halved as a dissenter


def test_a_restarted_revealer_recomputes_its_vote_behind_the_head_and_reveals_late(net):
    n = net(3, reveal_blocks=60, confirmations=[0, 0, 2])
    n.mine(2)
    n.step(2)
    n.steps(0, 1)
    n.mine(2)  # every submission in view of the lagging member
    assert n.step(2) == (VOTE, 1, "sent")  # its commitment
    n.steps(0, 1)
    n.steps(0, 1)
    assert n.state().round == 2
    again = n.peer(2, confirmations=2)  # the commitment's ballot died with the old process
    assert again.step(again.chain.round_state()) is False
    assert again.last_step == (REVEAL, 1, "waiting")  # round 1's end is not in view yet
    n.mine(2)
    assert again.step(again.chain.round_state()) is True
    assert again.last_step == (REVEAL, 1, "sent")  # the same salt and ballot: it matches
    assert again.step(again.chain.round_state()) is True
    assert again.last_step == (SUBMIT, 2, "sent")
    assert n.rep(2) == 1150


def test_a_restarted_peer_whose_reveal_is_not_in_view_yet_does_not_reveal_again(net):
    n = net(3, reveal_blocks=60)
    n.steps(0, 1, 2)  # submissions
    n.steps(0, 1, 2)  # commitments
    assert n.step(2) == (REVEAL, 1, "sent")
    again = n.peer(2, confirmations=3)  # restarted, now reading 3 blocks behind: its reveal is out of view
    assert again.step(again.chain.round_state()) is False
    assert again.last_step == (REVEAL, 1, "already")  # the contract says it is revealed
    assert again.step(again.chain.round_state()) is False
    assert again.last_step == (WAIT, 1, "idle")
    assert n.step(0) == (REVEAL, 1, "sent")
    assert _finalized(n, 1) is not None


def test_the_last_rounds_late_reveal_lands_before_the_peer_calls_the_task_complete(net):
    n = net(3, rounds=1, reveal_blocks=60)
    n.steps(0, 1, 2)  # submissions
    n.steps(0, 1, 2)  # commitments
    n.steps(0, 1)
    assert n.state().phase is C
    done = threading.Thread(target=n.peers[2].run, daemon=True)
    done.start()
    done.join(60)
    assert not done.is_alive()
    assert [e for e, _, _ in n.logs[2].records][-2:] == ["settled", "task_complete"]
    assert n.logs[2].events("voted")[-1][1]["revealed"] is True
    assert n.rep(2) == 1150


# ------------------------------------------------------------------------------- whole networks
def _run_network(n: Net, timeout: float) -> list[str]:
    """Every peer's ``run`` in a thread, a block every 50 ms; windows of 1200 blocks (a minute)
    leave a loaded machine time to train, and rounds end as soon as everyone has voted."""
    errors: list[str] = []

    def run(p):
        try:
            p.run()
        except Exception as exc:  # surfaced below
            errors.append(f"{p.address}: {exc!r}")

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in n.peers]
    with Miner(n.observer) as miner:
        for t in threads:
            t.start()
        try:
            wait_until(lambda: not any(t.is_alive() for t in threads), timeout, "every peer to finish the task")
        except AssertionError:
            stuck = {i: log.records[-6:] for i, log in enumerate(n.logs)}
            raise AssertionError(f"peers did not finish; chain at {n.state()}, {miner.mined} blocks mined; "
                                 f"alive {[t.is_alive() for t in threads]}; last log records: {stuck}") from None
    return errors


@pytest.mark.parametrize("rounds,reveal_blocks", [(3, 0), (2, 120)], ids=["plain", "commit-reveal"])
def test_a_network_two_blocks_behind_the_head_finalizes_every_round(net, rounds, reveal_blocks):
    """Real peers (``Peer.run``, the real client) on a chain that makes a block every 50 ms."""
    n = net(3, rounds=rounds, windows=1200, reveal_blocks=reveal_blocks, confirmations=[2, 2, 2], client=ChainClient)
    assert _run_network(n, 240) == []
    history = round_history(n.observer, from_block=n.deploy_block)
    assert [h.status for h in history] == ["finalized"] * rounds
    for h in history:
        assert h.included_count == 3
        assert len({(v["model"], v["included"]) for v in h.votes}) == 1  # one aggregate, every view
    # every member included and agreeing every round: +150 a round on time, +125 when its vote or
    # reveal landed after the round finalized (late agreement pays 25, not 50); nobody halved
    assert all(1000 + 125 * rounds <= n.rep(i) <= 1000 + 150 * rounds for i in range(3)), [n.rep(i) for i in range(3)]
    for log in n.logs:
        assert log.records[-1][0] == "task_complete"


def test_a_network_at_different_depths_behind_the_head_agrees_on_every_aggregate(net):
    rounds = 2
    n = net(3, rounds=rounds, windows=1200, confirmations=[0, 1, 4], client=ChainClient)
    assert _run_network(n, 240) == []
    history = round_history(n.observer, from_block=n.deploy_block)
    assert [h.status for h in history] == ["finalized"] * rounds
    for h in history:
        assert h.included_count == 3 and len(h.votes) == 3
        assert len({(v["model"], v["included"]) for v in h.votes}) == 1
