"""Both devnet engines behave the same where fedchain relies on it: dev keys, mining, reverts.

Hardhat's node is skipped where `npm ci` has not installed it; anvil always runs.
"""
from __future__ import annotations

import time

import pytest
from eth_account import Account

from fedchain.node.errors import ConfigError
from fedchain.node.tools.devnet import ENGINES, Devnet, find_hardhat


def _has_hardhat() -> bool:
    try:
        find_hardhat()
        return True
    except ConfigError:
        return False


ENGINE_PARAMS = [pytest.param("anvil"), pytest.param("hardhat", marks=pytest.mark.skipif(not _has_hardhat(), reason="npm ci not run"))]


@pytest.fixture(scope="module", params=ENGINE_PARAMS)
def net(request):
    with Devnet(accounts=3, engine=request.param) as net:
        yield net


def test_engine_publishes_funded_keys_of_its_addresses(net):
    assert net.rpc("eth_chainId", []) == hex(31337)
    assert [Account.from_key(k).address.lower() for k in net.keys] == [a.lower() for a in net.addresses]
    assert int(net.rpc("eth_getBalance", [net.addresses[2], "latest"]), 16) > 10**18


def test_mine_advances_exactly_that_many_blocks(net):
    before = int(net.rpc("eth_blockNumber", []), 16)
    net.mine(7)
    assert int(net.rpc("eth_blockNumber", []), 16) == before + 7


def test_reverting_transaction_is_mined_with_status_zero(net):
    """Both engines answer a reverting transaction with its hash, as real nodes do (Hardhat
    would otherwise fail eth_sendTransaction itself; the devnet configures it not to)."""
    revert_on_create = "0x60006000fd"  # PUSH1 0 PUSH1 0 REVERT
    tx = net.rpc("eth_sendTransaction", [{"from": net.addresses[1], "data": revert_on_create, "gas": hex(100_000)}])
    deadline = time.monotonic() + 10  # anvil's automine mines a few milliseconds after accepting
    while not (receipt := net.rpc("eth_getTransactionReceipt", [tx])) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert receipt and receipt["status"] == "0x0"


def test_a_256_member_task_deploys_under_the_per_transaction_gas_cap(net):
    """Hardhat enforces EIP-7825's 16,777,216-gas cap per transaction, as chains past Osaka do:
    the largest task (256 members) still deploys, in batches, and round 1 opens over all of them."""
    from fedchain.node.chain import ChainClient, deploy_contract
    from fedchain.node.chain.client import TX_GAS_CAP

    client = ChainClient(net.rpc_url, account=Account.from_key(net.keys[0]))
    members = ["0x%040x" % (0x1000 + i) for i in range(256)]
    first = client.block_number() + 1
    deploy_contract(client, members=members, initial_model=b"\1" * 32, task=b"\2" * 32, submit_blocks=5, vote_blocks=5,
                    quorum_bps=6667, max_rounds=2, rule=0, reveal_blocks=5, update_reveal_blocks=5)
    used = [int(net.rpc("eth_getTransactionReceipt", [tx])["gasUsed"], 16)
            for b in range(first, client.block_number() + 1) for tx in net.rpc("eth_getBlockByNumber", [hex(b), False])["transactions"]]
    assert len(used) == 3 and max(used) < TX_GAS_CAP, used
    state = client.round_state()
    assert (state.round, state.total_reputation, len(client.members())) == (1, 256_000, 256)


def test_unknown_engine_and_hardhat_state_file_are_refused(tmp_path):
    assert set(ENGINES) == {"anvil", "hardhat"}
    with pytest.raises(ConfigError, match="unknown devnet engine"):
        Devnet(engine="ganache")
    with pytest.raises(ConfigError, match="cannot save or load chain state"):
        Devnet(engine="hardhat", state_file=str(tmp_path / "state.json")).start()


def test_engine_default_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FEDCHAIN_DEVNET_ENGINE", "hardhat")
    assert Devnet().engine == "hardhat"
    monkeypatch.delenv("FEDCHAIN_DEVNET_ENGINE")
    assert Devnet().engine == "anvil"


def test_the_checkouts_tools_are_found_from_any_working_directory(tmp_path, monkeypatch):
    from fedchain.node.tools.devnet import find_anvil, repo_root

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FEDCHAIN_ANVIL", raising=False)
    assert (repo_root() / "package.json").exists()
    assert str(repo_root()) in find_anvil()
