"""Front-running (issue 8, section 2): an attacker reads a member's pending ``submit`` from the
transaction pool and sends the same digest first with a 20x tip. Real peers, the real contract on
a real anvil (automining paused so that both transactions wait in the pool together)."""
from __future__ import annotations

import threading
import time

import pytest

from fedchain.node.chain import Outcome

from _network import build

PEERS, ROUNDS, VICTIM, ATTACKER = 4, 2, 0, 3


def _pending(net) -> dict:
    return net.observer.w3.provider.make_request("txpool_content", [])["result"]["pending"]


def _wait(cond, timeout=120.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _in_thread(fn):
    box = {}

    def run():
        try:
            box["result"] = fn()
        except BaseException as exc:  # surfaced by the caller
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_frontrunner_copies_pending_digest_first_yet_is_excluded_and_victim_is_included(devnet, tmp_path):
    net = build(devnet, tmp_path, {ATTACKER: "frontrun"}, peers=PEERS, rounds=ROUNDS)
    victim, attacker = net.peers[VICTIM], net.peers[ATTACKER]
    rpc = net.observer.w3.provider
    for r in range(1, ROUNDS + 1):
        rpc.make_request("evm_setAutomine", [False])
        try:
            tv, bv = _in_thread(lambda: victim.submit(r, victim.chain.member_info(victim.address)))
            _wait(lambda: victim.address.lower() in {a.lower() for a in _pending(net)})
            ta, ba = _in_thread(lambda: attacker.submit(r, attacker.chain.member_info(attacker.address)))
            _wait(lambda: len(_pending(net)) == 2)
            net.mine(1)
            tv.join(60)
            ta.join(60)
        finally:
            rpc.make_request("evm_setAutomine", [True])
        assert "error" not in bv and "error" not in ba, (bv, ba)  # the author is never blocked
        subs = net.observer.events("UpdateSubmitted", from_block=net.deploy_block, round=r)
        assert [s.args.peer.lower() for s in subs] == [attacker.address.lower(), victim.address.lower()]
        assert bytes(subs[0].args.update) == bytes(subs[1].args.update)  # the copy landed first
        for p in net.peers[1:3]:
            p.submit(r, p.chain.member_info(p.address))
        state = net.observer.round_state()
        for p in net.peers:
            if net.observer.is_finalized(r):
                break
            p.vote(r, p.chain.member_info(p.address), expected=state.submissions)
        assert net.observer.is_finalized(r), f"round {r} did not finalize"
        out = net.outcome(r)
        assert (out.included >> VICTIM) & 1 and not (out.included >> ATTACKER) & 1, bin(out.included)
        inputs = victim.round_inputs(r, expected=state.submissions)
        assert [x.member for x in inputs.excluded] == [ATTACKER]
        assert "names peer" in inputs.excluded[0].reason
    reps = net.settle_all()
    assert reps[ATTACKER] < min(reps[i] for i in range(PEERS) if i != ATTACKER), reps


def test_an_update_whose_artifact_names_another_peer_is_invalid():
    from fedchain.node.errors import ArtifactInvalid
    from fedchain.node.protocol.artifact import encode
    from fedchain.node.protocol.round import update_metadata, validate_update
    import torch

    schema = {"w": ((2,), "F32")}
    meta = update_metadata("task", 1, "base", 10, "0xAbC0000000000000000000000000000000000001")
    data = encode({"w": torch.zeros(2)}, meta)
    kw = dict(max_bytes=1 << 20, task_cid="task", round_=1, base_cid="base")
    validate_update(data, schema, submitter="0xabc0000000000000000000000000000000000001", **kw)  # case-insensitive
    with pytest.raises(ArtifactInvalid, match="names peer"):
        validate_update(data, schema, submitter="0x0000000000000000000000000000000000000002", **kw)
