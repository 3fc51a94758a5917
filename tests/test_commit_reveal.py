"""Commit-reveal voting: votes are committed as salted hashes and revealed later, so a lazy peer
cannot copy the votes of others; an unrevealed vote counts as dissent."""
import os

import pytest

from fedchain.node import errors as E
from fedchain.node.chain import Outcome, Phase

NONE = Outcome.none()


def _salt():
    return os.urandom(32)


def _submit_all(d, r, previous=NONE):
    for c in d.clients:
        c.submit(r, os.urandom(32), previous)


def test_plain_vote_is_refused_in_a_commit_reveal_task(deploy):
    d = deploy(3, reveal_blocks=20)
    _submit_all(d, 1)
    with pytest.raises(E.ContractError, match="FedChainCommitRevealRequired"):
        d.clients[0].vote(1, os.urandom(32), 7, NONE)


def test_commit_is_refused_in_a_plain_task(deploy):
    d = deploy(3)
    _submit_all(d, 1)
    with pytest.raises(E.ContractError, match="FedChainCommitRevealDisabled"):
        d.clients[0].commit_vote(1, os.urandom(32), NONE)


def test_commits_hide_votes_until_the_reveal_window_then_quorum_finalizes(deploy):
    d = deploy(4, reveal_blocks=20)
    _submit_all(d, 1)
    model, included = os.urandom(32), 0b1111
    salts = [_salt() for _ in d.clients]
    for c, s in zip(d.clients, salts):
        c.commit_vote(1, c.commitment(1, model, included, s, c.address), NONE)
    # Nothing a lazy peer could copy: no VoteCast yet, only opaque commitments.
    assert d.clients[0].events("VoteCast", from_block=d.block) == []
    assert len(d.clients[0].events("VoteCommitted", from_block=d.block)) == 4
    assert d.clients[0].round_state().phase is Phase.REVEAL  # every member committed
    for c, s in zip(d.clients[:3], salts):
        c.reveal_vote(1, model, included, s)
    assert d.clients[0].round_state().round == 2  # 3 of 4 equal reputations pass 2/3
    assert d.clients[0].is_outcome(1, model, included)
    d.clients[3].reveal_vote(1, model, included, salts[3])  # late reveal still recorded
    assert len(d.clients[0].events("VoteCast", from_block=d.block)) == 4


def test_reveal_before_the_window_reverts(deploy):
    d = deploy(3, reveal_blocks=20)
    _submit_all(d, 1)
    c = d.clients[0]
    s = _salt()
    c.commit_vote(1, c.commitment(1, b"\1" * 32, 1, s, c.address), NONE)
    with pytest.raises(E.VotingNotOpen):
        c.reveal_vote(1, b"\1" * 32, 1, s)


def test_reveal_that_does_not_match_the_commitment_reverts(deploy):
    d = deploy(3, reveal_blocks=20)
    _submit_all(d, 1)
    s = _salt()
    for c in d.clients:
        c.commit_vote(1, c.commitment(1, b"\1" * 32, 1, s, c.address), NONE)
    with pytest.raises(E.ContractError, match="FedChainCommitmentMismatch"):
        d.clients[0].reveal_vote(1, b"\2" * 32, 1, s)
    with pytest.raises(E.ContractError, match="FedChainCommitmentMismatch"):
        d.clients[0].reveal_vote(1, b"\1" * 32, 1, _salt())


def test_a_commitment_cannot_be_revealed_twice_or_by_someone_who_did_not_commit(deploy):
    d = deploy(4, reveal_blocks=20)
    _submit_all(d, 1)
    model, s = os.urandom(32), _salt()
    for c in d.clients[:3]:
        c.commit_vote(1, c.commitment(1, model, 0b1111, s, c.address), NONE)
    d.mine(45)  # commit window over: reveals open although member 3 never committed
    d.clients[0].reveal_vote(1, model, 0b1111, s)
    with pytest.raises(E.AlreadyVoted):
        d.clients[0].reveal_vote(1, model, 0b1111, s)
    with pytest.raises(E.AlreadyVoted):  # FedChainNothingToReveal
        d.clients[3].reveal_vote(1, model, 0b1111, s)


def test_an_unrevealed_vote_is_penalized_as_dissent(deploy):
    d = deploy(4, reveal_blocks=20)
    _submit_all(d, 1)
    model, included, s = os.urandom(32), 0b1111, _salt()
    for c in d.clients:
        c.commit_vote(1, c.commitment(1, model, included, s, c.address), NONE)
    for c in d.clients[:3]:
        c.reveal_vote(1, model, included, s)
    assert d.clients[0].round_state().round == 2
    outcome = Outcome(model, included)
    for c in d.clients:
        c.submit(2, os.urandom(32), outcome)  # settles round 1
    reps = [c.member_info(c.address).reputation for c in d.clients]
    assert reps[:3] == [1150] * 3  # included +100, agreed +50
    assert reps[3] == (1000 + 100) // 2  # included, but never revealed: halved


def test_the_expiry_includes_the_reveal_window(deploy):
    d = deploy(3, submit_blocks=5, vote_blocks=5, reveal_blocks=7)
    st = d.clients[0].round_state()
    assert st.vote_deadline == st.start_block + 5 + 5 + 7


def _finalize_with_three_reveals(d):
    _submit_all(d, 1)
    model, included = os.urandom(32), 0b1111
    salts = [_salt() for _ in d.clients]
    for c, s in zip(d.clients, salts):
        c.commit_vote(1, c.commitment(1, model, included, s, c.address), NONE)
    for c, s in zip(d.clients[:3], salts):
        c.reveal_vote(1, model, included, s)
    assert d.clients[0].is_outcome(1, model, included)
    return Outcome(model, included), salts


def test_an_outsider_cannot_settle_a_vote_as_dissent_before_its_late_reveal(deploy):
    d = deploy(4, reveal_blocks=20)
    out, salts = _finalize_with_three_reveals(d)
    late = d.clients[3]
    d.outsider.settle(late.address, out)  # would have halved the unrevealed vote: now a no-op
    info = d.outsider.member_info(late.address)
    assert (info.reputation, info.settled_round) == (1000, 0)
    late.reveal_vote(1, out.model, out.included, salts[3])
    d.outsider.settle(late.address, out)
    # Revealed inside round 2's submission window: paid like the reveals that finalized.
    assert d.outsider.member_info(late.address).reputation == 1000 + 100 + 50


def test_a_late_reveal_after_the_member_settled_its_round_is_applied_at_once(deploy):
    d = deploy(4, reveal_blocks=20)
    out, salts = _finalize_with_three_reveals(d)
    late = d.clients[3]
    late.settle(late.address, out)  # settle() waits for the reveal, even when the member asks
    assert d.outsider.member_info(late.address).settled_round == 0
    late.submit(2, os.urandom(32), out)  # its own choice: the unrevealed vote counts as dissent
    assert d.outsider.member_info(late.address).reputation == (1000 + 100) // 2
    late.reveal_vote(1, out.model, out.included, salts[3])
    assert d.outsider.member_info(late.address).reputation == (1000 + 100) // 2 + 50
