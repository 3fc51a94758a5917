"""Bad input gets one clear line on stderr, a non-zero exit and no traceback."""
import json

import pytest
from eth_account import Account

from fedchain.node.protocol.cid import cid_of_bytes
from fedchain.node.chain.keys import write_keystore

from _support import clean_env, run_cli


def _assert_one_clean_error(r, *needles):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_deployment_file(tmp_path):
    _assert_one_clean_error(run_cli(["rounds", "list", "-d", str(tmp_path / "nope.json")]), "not found")


def test_unreachable_rpc(tmp_path):
    dep = tmp_path / "d.json"
    dep.write_text(json.dumps({"chain_id": 1, "rpc_url": "http://127.0.0.1:1", "contract": "0x" + "11" * 20, "deploy_block": 0,
                               "task_cid": "x", "initial_model": "x", "store": str(tmp_path), "task": {}}))
    _assert_one_clean_error(run_cli(["peers", "-d", str(dep)]), "cannot reach the chain")


def test_malformed_cid(tmp_path):
    _assert_one_clean_error(run_cli(["store", "--store", str(tmp_path), "get", "Qm-not-a-cid", "-o", str(tmp_path / "o")]), "malformed CID")


def test_missing_artifact(tmp_path):
    cid = cid_of_bytes(b"nobody added this")
    _assert_one_clean_error(run_cli(["store", "--store", str(tmp_path), "get", cid, "-o", str(tmp_path / "o")]), cid)
    assert not (tmp_path / "o").exists()


def test_wrong_keystore_password(tmp_path, devnet):
    ks = write_keystore(Account.create(), tmp_path / "key.json", "right", iterations=2)
    env = clean_env(PW="wrong")
    r = run_cli(["deploy", "--rpc", devnet.rpc_url, "--keystore", str(ks), "--password-env", "PW",
                 "--members", Account.create().address, "--store", str(tmp_path / "s"), "-o", str(tmp_path / "d.json")], env=env)
    _assert_one_clean_error(r, "wrong password")
    assert not (tmp_path / "d.json").exists()


def test_malformed_raw_key_is_not_echoed(tmp_path, devnet):
    secret = "0xdeadbeef-not-a-key"
    r = run_cli(["deploy", "--rpc", devnet.rpc_url, "--members", Account.create().address, "--store", str(tmp_path / "s")],
                env=clean_env(FEDCHAIN_KEY=secret))
    _assert_one_clean_error(r, "FEDCHAIN_KEY")
    assert secret not in r.stderr + r.stdout


def test_bad_member_address(tmp_path, devnet):
    r = run_cli(["deploy", "--rpc", devnet.rpc_url, "--members", "0x1234", "--store", str(tmp_path / "s")],
                env=clean_env(FEDCHAIN_KEY=devnet.keys[0]))
    _assert_one_clean_error(r, "not an Ethereum address")


def test_node_with_missing_shard(tmp_path):
    dep = tmp_path / "d.json"
    dep.write_text("{}")
    r = run_cli(["node", "run", "-d", str(dep), "--data", str(tmp_path / "missing.safetensors")], env=clean_env(FEDCHAIN_KEY="0x" + "01" * 32))
    _assert_one_clean_error(r)


@pytest.mark.parametrize("args", [["simulate", "--peers", "0"], ["store", "add", "/definitely/not/here"]])
def test_usage_errors_are_one_line_and_exit_1(args):
    r = run_cli(args)
    _assert_one_clean_error(r)
