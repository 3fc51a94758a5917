"""Shared fixtures: a real anvil devnet (one per test session) and contract deployments on it.

Each test deploys its own contract, so tests do not depend on each other's state or order.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# One math thread per process, set before anything imports torch: `make test` runs three workers
# on two cores, and each network test starts several peer processes, which inherit this. Tests
# that measure thread counts (test_determinism) set their own.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
from eth_account import Account

from fedchain.node.chain import ChainClient, deploy_contract
from fedchain.node.tools.devnet import Devnet


@pytest.fixture(scope="session")
def devnet():
    """An automining devnet with 20 funded accounts (index 0 deploys, the rest are peers).

    anvil by default; FEDCHAIN_DEVNET_ENGINE=hardhat runs the same tests against Hardhat's node."""
    with Devnet(accounts=20, engine=os.environ.get("FEDCHAIN_DEVNET_ENGINE", "anvil")) as net:
        yield net


@dataclass
class Deployed:
    address: str
    deployer: ChainClient
    clients: list[ChainClient]  # one per member, in member index order
    members: list[str]
    outsider: ChainClient  # a funded account that is not a member
    block: int
    devnet: Devnet

    def mine(self, n: int = 1) -> None:
        self.devnet.mine(n)  # anvil_mine or hardhat_mine, whichever engine runs


@pytest.fixture
def deploy(devnet):
    """Factory: deploy FedChain with ``n`` members and the given config overrides."""

    def _deploy(n: int = 4, **overrides) -> Deployed:
        cfg = dict(initial_model=os.urandom(32), task=os.urandom(32), submit_blocks=20, vote_blocks=20,
                   quorum_bps=6667, max_rounds=5, rule=0)
        cfg.update(overrides)
        deployer = ChainClient(devnet.rpc_url, account=Account.from_key(devnet.keys[0]))
        members = devnet.addresses[1 : n + 1]
        address, block = deploy_contract(deployer, members=cfg.pop("members", members), **cfg)
        clients = [ChainClient(devnet.rpc_url, address, Account.from_key(k)) for k in devnet.keys[1 : n + 1]]
        outsider = ChainClient(devnet.rpc_url, address, Account.from_key(devnet.keys[19]))
        return Deployed(address, deployer, clients, members, outsider, block, devnet)

    return _deploy
