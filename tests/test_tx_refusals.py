"""Every way a node refuses a transaction maps to one fedchain error: an unfunded account is a
clear, final error (never a ChainUnavailable retried forever), a passing condition is retried, and
anything unknown is a TransactionRefused with the node's own words."""
from __future__ import annotations

import os

import pytest
from eth_account import Account

from fedchain.node import errors as E
from fedchain.node.chain import ChainClient, Outcome
from fedchain.node.chain.client import refusal_error

from _support import clean_env, run_cli

SENDER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.mark.parametrize("message, cls", [
    # geth / Erigon / Besu / anvil / Hardhat (EDR) wordings
    ("insufficient funds for gas * price + value: address 0x7099 have 0 want 1000", E.InsufficientFunds),
    ("Insufficient funds for gas * price + value", E.InsufficientFunds),
    ("sender doesn't have enough funds to send tx. The max upfront cost is: 2000 and the sender's balance is: 0.", E.InsufficientFunds),
    ("replacement transaction underpriced", E.ChainUnavailable),
    ("transaction underpriced: tip needed 1, tip permitted 0", E.ChainUnavailable),
    ("max fee per gas less than block base fee: address 0x..., maxFeePerGas: 1, baseFee: 7", E.ChainUnavailable),
    ("txpool is full", E.ChainUnavailable),
    ("nonce too high", E.ChainUnavailable),
    ("invalid chain id for signer: have 1 want 31337", E.ConfigError),
    ("only replay-protected (EIP-155) transactions allowed over RPC", E.ConfigError),
    ("exceeds block gas limit", E.TransactionRefused),
    ("intrinsic gas too low: gas 21000, minimum needed 21432", E.TransactionRefused),
    ("something no client says today", E.TransactionRefused),
])
def test_every_refusal_is_classified(message, cls):
    err = refusal_error(message, SENDER)
    assert type(err) is cls
    assert message.split(":")[0].strip().lower() in str(err).lower()  # the node's words are kept
    if cls is E.InsufficientFunds:
        assert SENDER in str(err) and "fund it" in str(err)
        assert not isinstance(err, (E.ChainUnavailable, E.ContractError))  # peers do not retry it


def test_an_unfunded_member_gets_insufficient_funds_from_a_real_node(deploy, devnet):
    broke = Account.create()  # a member whose account holds no ether
    d = deploy(2, members=[broke.address, devnet.addresses[2]])
    client = ChainClient(devnet.rpc_url, d.address, broke)
    with pytest.raises(E.InsufficientFunds, match="cannot pay for gas"):
        client.submit(1, os.urandom(32), Outcome.none())


def test_deploy_from_an_unfunded_key_is_one_line_and_exit_1(devnet, tmp_path):
    key = "0x" + os.urandom(32).hex()
    r = run_cli(["deploy", "--rpc", devnet.rpc_url, "--members", SENDER, "--store", str(tmp_path / "store"),
                 "-o", str(tmp_path / "deployment.json")], env=clean_env(FEDCHAIN_KEY=key), cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot pay for gas" in lines[0] and "internal error" not in lines[0], r.stderr
    assert not (tmp_path / "deployment.json").exists()
