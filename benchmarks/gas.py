"""Gas per peer per round on a real anvil devnet with the real contract.

Runs ROUNDS rounds with N members that all submit and vote for the same aggregate (the honest
case), and reports every transaction's gas from its receipt. No training: digests are random,
since the contract's cost does not depend on what the artifacts hold. Each size runs twice:
plain submissions, and sealed updates (commit, reveal, vote).

    python benchmarks/gas.py --peers 16 --rounds 4
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

from eth_account import Account

from fedchain.node.chain import ChainClient, Outcome, deploy_contract
from fedchain.node.tools.devnet import Devnet


def measure(peers: int, rounds: int, *, sealed: bool = False) -> dict:
    with Devnet(accounts=peers + 1) as net:
        deployer = ChainClient(net.rpc_url, account=Account.from_key(net.keys[0]))
        members = net.addresses[1 : peers + 1]
        address, _ = deploy_contract(deployer, members=members, initial_model=os.urandom(32), task=os.urandom(32),
                                     submit_blocks=1000, vote_blocks=1000, quorum_bps=6667, max_rounds=rounds, rule=0,
                                     update_reveal_blocks=100 if sealed else 0)
        clients = [ChainClient(net.rpc_url, address, Account.from_key(k)) for k in net.keys[1 : peers + 1]]
        per_peer_round: dict[tuple[int, int], int] = defaultdict(int)
        by_kind: dict[str, list[int]] = defaultdict(list)
        previous = Outcome.none()
        for r in range(1, rounds + 1):
            updates = [(os.urandom(32), os.urandom(32)) for _ in clients]
            for i, c in enumerate(clients):
                digest, salt = updates[i]
                recorded = c.update_commitment(r, digest, salt, c.address) if sealed else digest
                gas = c.submit(r, recorded, previous)["gasUsed"]
                per_peer_round[i, r] += gas
                by_kind["submit"].append(gas)
            for i, c in enumerate(clients if sealed else ()):
                gas = c.reveal_update(r, *updates[i])["gasUsed"]
                per_peer_round[i, r] += gas
                by_kind["revealUpdate"].append(gas)
            model, included = os.urandom(32), (1 << peers) - 1
            for i, c in enumerate(clients):
                # After the deciding vote a vote is late and settles round r: it proves r's outcome.
                late = c.is_finalized(r)
                gas = c.vote(r, model, included, Outcome(model, included) if late else previous)["gasUsed"]
                per_peer_round[i, r] += gas
                by_kind["vote"].append(gas)
            previous = Outcome(model, included)
        values = list(per_peer_round.values())
        return {
            "peers": peers, "rounds": rounds, "sealed": sealed,
            "per_peer_per_round": {"mean": round(sum(values) / len(values)), "max": max(values), "min": min(values)},
            "by_kind": {k: {"mean": round(sum(v) / len(v)), "max": max(v), "min": min(v), "count": len(v)} for k, v in by_kind.items()},
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    for n in args.peers:
        for sealed in (False, True):
            print(json.dumps(measure(n, args.rounds, sealed=sealed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
