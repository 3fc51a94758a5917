"""Sealed updates (issue 9): members commit to their update during the submission window and
reveal it only after the window closes, so nobody can see, fetch or copy an update before
committing their own. The contract on a real anvil; the peer's pure state machine; and the
ledger's view of a sealed round."""
from __future__ import annotations

import os

import pytest

from fedchain.node import errors as E
from fedchain.node.chain import Outcome, Phase
from fedchain.node.peer.runtime import Action, Facts, next_action

NONE = Outcome.none()
W = 20  # update-reveal window


def _commit(c, r, update, salt, previous=NONE):
    return c.submit(r, c.update_commitment(r, update, salt, c.address), previous)


def _sealed_round(d, r, previous=NONE, who=None):
    """Every member in ``who`` (default: all) commits; returns {index: (update, salt)}."""
    sealed = {}
    for i in who if who is not None else range(len(d.clients)):
        sealed[i] = (os.urandom(32), os.urandom(32))
        _commit(d.clients[i], r, *sealed[i], previous)
    return sealed


def _refused(name, fn, *args):
    with pytest.raises(E.ContractError) as info:
        fn(*args)
    assert info.value.name == name, str(info.value)
    return info.value


# ---------------------------------------------------------------------------------- contract
def test_plain_task_reveals_nothing_and_refuses_reveals(deploy):
    d = deploy(3)
    assert d.deployer.config()["update_reveal_blocks"] == 0
    receipt = d.clients[0].submit(1, os.urandom(32), NONE)
    assert d.clients[0].events("UpdateSubmitted", from_block=d.block)
    assert receipt["gasUsed"] > 0
    _refused("FedChainSealedUpdatesDisabled", d.clients[0].reveal_update, 1, os.urandom(32), os.urandom(32))


def test_commitments_hide_updates_until_every_member_committed_then_reveals_open_voting(deploy):
    d = deploy(3, update_reveal_blocks=W)
    v = d.deployer
    assert v.config()["update_reveal_blocks"] == W
    sealed = _sealed_round(d, 1, who=[0, 1])
    # Only commitments are on chain: no digest of any update.
    assert v.events("UpdateSubmitted", from_block=d.block) == []
    assert v.events("UpdateRevealed", from_block=d.block) == []
    assert len(v.events("UpdateCommitted", from_block=d.block)) == 2
    assert v.round_state().phase is Phase.SUBMISSION
    err = _refused("FedChainUpdateRevealNotOpen", d.clients[0].reveal_update, 1, *sealed[0])
    assert err.revert_args == (1, v.round_state().submit_deadline)
    sealed.update(_sealed_round(d, 1, who=[2]))
    rs = v.round_state()
    assert (rs.phase, rs.submissions, rs.reveals) == (Phase.UPDATE_REVEAL, 3, 0)
    _refused("FedChainVotingNotOpen", d.clients[0].vote, 1, os.urandom(32), 7, NONE)
    for i in range(3):
        d.clients[i].reveal_update(1, *sealed[i])
        assert v.update_seal(d.members[i]) == b"\0" * 19
    rs = v.round_state()
    # Everyone committed and revealed: voting opens at once, long before the window's end.
    assert (rs.phase, rs.reveals) == (Phase.VOTING, 3)
    assert v.block_number() < rs.submit_deadline + W
    revealed = v.events("UpdateRevealed", from_block=d.block)
    assert [(e.args.peer.lower(), bytes(e.args.update), e.args.reputation) for e in revealed] \
        == [(d.members[i].lower(), sealed[i][0], 1000) for i in range(3)]
    model = os.urandom(32)
    for c in d.clients[:2]:
        c.vote(1, model, 0b111, NONE)
    assert v.is_outcome(1, model, 0b111)
    rs = v.round_state()
    assert (rs.round, rs.submissions, rs.reveals) == (2, 0, 0)


def test_reveal_refusals_mismatch_double_and_non_submitter(deploy):
    d = deploy(3, update_reveal_blocks=W)
    sealed = _sealed_round(d, 1, who=[0, 1])
    d.mine(d.deployer.round_state().submit_deadline - d.deployer.block_number())  # window over: member 2 never committed
    assert d.deployer.round_state().phase is Phase.UPDATE_REVEAL
    update, salt = sealed[0]
    _refused("FedChainCommitmentMismatch", d.clients[0].reveal_update, 1, os.urandom(32), salt)
    _refused("FedChainCommitmentMismatch", d.clients[0].reveal_update, 1, update, os.urandom(32))
    _refused("FedChainNoSealedUpdate", d.clients[2].reveal_update, 1, update, salt)  # committed nothing
    _refused("FedChainRoundNotOpen", d.clients[0].reveal_update, 2, update, salt)
    _refused("FedChainZeroDigest", d.clients[0].reveal_update, 1, b"\0" * 32, salt)
    _refused("FedChainNotMember", d.outsider.reveal_update, 1, update, salt)
    d.clients[0].reveal_update(1, update, salt)
    _refused("FedChainNoSealedUpdate", d.clients[0].reveal_update, 1, update, salt)  # twice
    assert d.deployer.round_state().phase is Phase.UPDATE_REVEAL  # member 1 has yet to reveal
    d.clients[1].reveal_update(1, *sealed[1])
    # The window is over and every committer revealed: voting opens without waiting for W blocks.
    assert d.deployer.round_state().phase is Phase.VOTING


def test_unrevealed_commitment_keeps_voting_closed_until_the_window_ends_then_is_excluded_and_halved(deploy):
    d = deploy(3, update_reveal_blocks=W)
    v = d.deployer
    sealed = _sealed_round(d, 1)
    for i in (0, 1):
        d.clients[i].reveal_update(1, *sealed[i])
    rs = v.round_state()
    assert rs.phase is Phase.UPDATE_REVEAL
    opens = rs.submit_deadline + W
    err = _refused("FedChainVotingNotOpen", d.clients[0].vote, 1, os.urandom(32), 0b11, NONE)
    assert err.revert_args == (1, opens)
    assert rs.vote_deadline == rs.start_block + 20 + W + 20  # expiry moves by the window
    d.mine(opens - 1 - v.block_number())  # the next transaction lands in block `opens`
    err = _refused("FedChainUpdateRevealClosed", d.clients[2].reveal_update, 1, *sealed[2])
    assert err.revert_args == (1, opens)  # refused as of block `opens` (estimated against the pending block)
    d.mine(1)
    assert v.round_state().phase is Phase.VOTING
    model = os.urandom(32)
    for c in d.clients[:2]:
        c.vote(1, model, 0b011, NONE)  # the unrevealed member 2 is left out
    assert v.is_outcome(1, model, 0b011)
    for i, c in enumerate(d.clients):
        v.settle(c.address, Outcome(model, 0b011))
    assert [v.member_info(a).reputation for a in d.members] == [1150, 1150, 500]


def test_copied_commitment_or_someone_elses_reveal_gains_nothing(deploy):
    d = deploy(3, update_reveal_blocks=W)
    v = d.deployer
    victim, thief = d.clients[0], d.clients[2]
    update, salt = os.urandom(32), os.urandom(32)
    commitment = victim.update_commitment(1, update, salt, victim.address)
    thief.submit(1, commitment, NONE)  # copied from the pool before the victim's lands
    victim.submit(1, commitment, NONE)  # the author is never blocked
    _commit(d.clients[1], 1, other := os.urandom(32), other_salt := os.urandom(32))
    assert v.round_state().phase is Phase.UPDATE_REVEAL
    # The submitter is inside the hash: the victim's (update, salt) opens no commitment of the thief.
    _refused("FedChainCommitmentMismatch", thief.reveal_update, 1, update, salt)
    victim.reveal_update(1, update, salt)
    d.clients[1].reveal_update(1, other, other_salt)
    _refused("FedChainCommitmentMismatch", thief.reveal_update, 1, update, salt)  # still, once public
    revealed = {e.args.peer.lower() for e in v.events("UpdateRevealed", from_block=d.block)}
    assert thief.address.lower() not in revealed
    d.mine(v.round_state().submit_deadline + W - v.block_number())
    model = os.urandom(32)
    for c in d.clients[:2]:
        c.vote(1, model, 0b011, NONE)
    for c in d.clients:
        v.settle(c.address, Outcome(model, 0b011))
    assert v.member_info(thief.address).reputation == 500  # excluded: halved
    assert v.member_info(victim.address).reputation == 1150


# ---------------------------------------------------------------------------------- state machine
def _facts(**kw) -> Facts:
    base = dict(round=3, phase=Phase.SUBMISSION, submitted_round=2, voted_round=2, sealed=True)
    return Facts(**{**base, **kw})


def test_sealed_peer_commits_then_reveals_then_votes():
    assert next_action(_facts()) == (Action.SUBMIT, 3)
    assert next_action(_facts(submitted_round=3)) == (Action.WAIT, 3)  # others still committing
    assert next_action(_facts(phase=Phase.UPDATE_REVEAL, submitted_round=3)) == (Action.REVEAL_UPDATE, 3)
    assert next_action(_facts(phase=Phase.UPDATE_REVEAL, submitted_round=3, update_revealed=True)) == (Action.WAIT, 3)
    assert next_action(_facts(phase=Phase.VOTING, submitted_round=3, update_revealed=True)) == (Action.VOTE, 3)


def test_sealed_peer_that_missed_the_commitment_or_the_reveal_still_votes():
    # No commitment in this round: nothing to reveal, wait for voting, then vote.
    assert next_action(_facts(phase=Phase.UPDATE_REVEAL)) == (Action.WAIT, 3)
    assert next_action(_facts(phase=Phase.VOTING)) == (Action.VOTE, 3)
    # The reveal window closed before it revealed: too late to reveal, still a voter.
    assert next_action(_facts(phase=Phase.VOTING, submitted_round=3)) == (Action.VOTE, 3)
    # A plain task never reveals an update, whatever phase a reader reports.
    assert next_action(_facts(phase=Phase.UPDATE_REVEAL, submitted_round=3, sealed=False)) == (Action.WAIT, 3)


def test_sealed_peer_owes_the_previous_rounds_late_vote_before_committing():
    f = _facts(phase=Phase.SUBMISSION, voted_round=1, previous_finalized=True)
    assert next_action(f) == (Action.LATE_VOTE, 2)


# ---------------------------------------------------------------------------------- network
def test_sealed_network_finalizes_and_shows_no_update_before_the_submission_window_closes(devnet, tmp_path):
    """Three real peers driven through ``Peer.step`` on the session's anvil and the real store.
    Until every member has committed, no update's digest is on chain and no update is in the
    store; one peer is restarted between its commitment and its reveal and reveals from its
    state folder."""
    from fedchain.node.ledger.updates import public_updates
    from fedchain.node.peer import Peer
    from fedchain.node.protocol.cid import cid_of_bytes

    from _network import build

    net = build(devnet, tmp_path, {}, peers=3, rounds=2, update_reveal_blocks=W)
    obs, store = net.observer, net.peers[0].store
    checked, restarted = set(), False
    for _ in range(400):
        state = obs.round_state()
        if state.phase is Phase.COMPLETE:
            break
        r = state.round
        if state.phase is Phase.UPDATE_REVEAL and state.reveals == 0 and r not in checked:
            # Every member committed, nobody revealed: nothing to see or fetch.
            assert public_updates(obs, r, from_block=net.deploy_block, sealed=True) == []
            assert obs.events("UpdateSubmitted", from_block=net.deploy_block) == []
            for p in net.peers:
                with pytest.raises(E.ArtifactNotFound):
                    store.get(cid_of_bytes(p._sealed[r]))
            checked.add(r)
            if not restarted:  # a new process: nothing in memory, the sealed update on disk
                old = net.peers[1]
                net.peers[1] = Peer(old.chain, store, old.task, old.task_cid, old.data, seed=1, log=old.log,
                                    state_dir=tmp_path / "state")
                restarted = True
        for p in net.peers:
            p.step(p.chain.round_state())
    assert obs.round_state().phase is Phase.COMPLETE
    assert checked == {1, 2}
    for r in (1, 2):
        out = net.outcome(r)
        assert out is not None and out.included == 0b111, (r, out)
        assert len(public_updates(obs, r, from_block=net.deploy_block)) == 3
    assert not list((tmp_path / "state").rglob("sealed-*"))  # revealed: nothing left behind


def test_frontrun_and_freeride_find_nothing_to_copy_in_a_sealed_round(devnet, tmp_path):
    """The ``frontrun`` and ``freeride`` attacks still run against sealed updates, but the pool and
    the chain hold only commitments: the front-runner ends up sending its own honest update, and
    the free-rider, with nothing of this round to copy, a zero update that the aggregate leaves out."""
    from _network import build, play_round

    net = build(devnet, tmp_path, {2: "frontrun", 3: "freeride"}, peers=4, rounds=1, update_reveal_blocks=W)
    assert play_round(net, 1)
    out = net.outcome(1)
    assert out.included == 0b0111, bin(out.included)
    inputs = net.peers[0].round_inputs(1)
    assert [c.member for c in inputs.contributions] == [0, 1, 2, 3]  # all revealed; the zero update is dropped by the rule
    assert not inputs.excluded
