"""Absent members (issue 8, section 3): the quorum is at least 2/3 of the reputation counted at
the round's start; a member that took part in none of the last DORMANCY_ROUNDS rounds is dormant
and not counted, so the network recovers within DORMANCY_ROUNDS + 1 rounds of its last activity."""
from __future__ import annotations

import os

from web3.logs import DISCARD

from fedchain.node.chain import Outcome

from _network import build, play_round

NONE = Outcome.none()
K = 3  # FedChain.DORMANCY_ROUNDS


def _weights(d) -> list[int]:
    return [d.deployer.vote_weight(a)[0] for a in d.members]


def _run_round(d, r, present, previous, *, finalize=True) -> Outcome | None:
    for i in present:
        d.clients[i].submit(r, os.urandom(32), previous)
    d.mine(max(d.deployer.round_state().submit_deadline - d.deployer.block_number(), 0))
    out = Outcome(os.urandom(32), sum(1 << i for i in present))
    for i in present:
        if d.deployer.is_finalized(r):
            break
        d.clients[i].vote(r, out.model, out.included, previous)
    if d.deployer.is_finalized(r):
        return out
    assert not finalize, f"round {r} did not finalize"
    d.mine(40)
    d.deployer.contract = d.clients[0].contract
    d.deployer.advance()
    return None


def test_contract_recovers_from_four_of_ten_absent_within_the_dormancy_bound(deploy):
    d = deploy(10, submit_blocks=10, vote_blocks=10, max_rounds=8)
    assert d.deployer._call("DORMANCY_ROUNDS") == K
    present = list(range(6))
    previous = NONE
    for r in range(1, K + 1):  # 6000 of 10000 < 2/3: these rounds fail, and cost the present nothing
        assert d.deployer.round_state().total_reputation == 10_000
        previous = _run_round(d, r, present, previous, finalize=False) or NONE
        assert d.deployer._call("isFailed", r)
    # Round K + 1 counts only the members that took part in one of the last K rounds.
    st = d.deployer.round_state()
    assert (st.round, st.total_reputation) == (K + 1, 6000)
    assert _weights(d) == [1000] * 6 + [0] * 4
    out = _run_round(d, K + 1, present, NONE)
    # A member coming back is halved for its absence, and counts from the next round on.
    receipt = d.clients[9].submit(K + 2, os.urandom(32), NONE)
    changed = d.deployer.contract.events.ReputationChanged().process_receipt(receipt, errors=DISCARD)
    assert [(e.args.round, e.args.previous, e.args.current) for e in changed] == [(K + 2, 1000, 500)]
    assert d.deployer.vote_weight(d.members[9]) == (0, K + 2)
    assert d.deployer.round_state().total_reputation == 6000
    out2 = _run_round(d, K + 2, present, out)
    # Round K + 1 settled on the round K + 2 submissions: 4 voters finalized it (4000 of 6000).
    reps = [d.deployer.member_info(a).reputation for a in d.members]
    assert reps == [1150] * 4 + [1100] * 2 + [1000] * 3 + [500]
    assert out2 is not None
    assert d.deployer.round_state().total_reputation == sum(reps[:6]) + 500  # 9's weight is back


def test_one_of_three_absent_every_round_finalizes_with_real_peers(devnet, tmp_path):
    rounds = K + 2
    net = build(devnet, tmp_path, {2: "absent"}, peers=3, rounds=rounds, submit_blocks=40, vote_blocks=40)
    assert [play_round(net, r) for r in range(1, rounds + 1)] == [True] * rounds
    reps = net.settle_all()
    assert reps[2] < min(reps[:2]), reps
    assert net.observer.vote_weight(net.peers[2].address)[0] == 0  # dormant: it weighs nothing


def test_four_of_ten_absent_rounds_finalize_again_within_the_bound_with_real_peers(devnet, tmp_path):
    rounds = K + 2
    net = build(devnet, tmp_path, {i: "absent" for i in range(6, 10)}, peers=10, rounds=rounds,
                submit_blocks=40, vote_blocks=40)
    finalized = [play_round(net, r) for r in range(1, rounds + 1)]
    assert finalized == [False] * K + [True, True], finalized  # recovered in round K + 1
    reps = net.settle_all()
    assert max(reps[6:]) < min(reps[:6]), reps
