"""Keystores: created, imported and listed without ever printing a key; wrong passwords fail cleanly."""
import json
import stat

from eth_account import Account

from _support import clean_env, run_cli


def test_new_import_list_and_use_a_keystore(tmp_path):
    env = clean_env(PW="correct horse", FEDCHAIN_KEY="0x" + "42" * 32)
    r = run_cli(["keys", "--dir", str(tmp_path), "new", "alice", "--password-env", "PW"], env=env)
    assert r.returncode == 0, r.stderr
    alice_address = r.stdout.split()[0]
    r = run_cli(["keys", "--dir", str(tmp_path), "import", "bob", "--key-env", "FEDCHAIN_KEY", "--password-env", "PW"], env=env)
    assert r.returncode == 0, r.stderr
    assert "42" * 32 not in r.stdout + r.stderr
    assert r.stdout.split()[0] == Account.from_key("0x" + "42" * 32).address
    listed = json.loads(run_cli(["keys", "--dir", str(tmp_path), "list", "--json"], env=env).stdout)
    assert [k["name"] for k in listed] == ["alice", "bob"]
    assert listed[0]["address"].lower() == alice_address.lower()
    assert stat.S_IMODE((tmp_path / "alice.json").stat().st_mode) == 0o600
    # the keystore decrypts to the same account
    data = json.loads((tmp_path / "bob.json").read_text())
    assert Account.from_key(Account.decrypt(data, "correct horse")).address.lower() == listed[1]["address"].lower()


def test_existing_keystore_is_never_overwritten(tmp_path):
    env = clean_env(PW="pw")
    assert run_cli(["keys", "--dir", str(tmp_path), "new", "k", "--password-env", "PW"], env=env).returncode == 0
    before = (tmp_path / "k.json").read_bytes()
    r = run_cli(["keys", "--dir", str(tmp_path), "new", "k", "--password-env", "PW"], env=env)
    assert r.returncode == 1 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "k.json").read_bytes() == before


def test_node_with_wrong_keystore_password_fails_cleanly(tmp_path):
    env = clean_env(PW="pw", BAD="nope")
    assert run_cli(["keys", "--dir", str(tmp_path), "new", "k", "--password-env", "PW"], env=env).returncode == 0
    assert run_cli(["data", "split", "--peers", "1", "--out", str(tmp_path / "shards")], env=env).returncode == 0
    r = run_cli(["node", "run", "-d", str(tmp_path / "missing.json"), "--keystore", str(tmp_path / "k.json"),
                 "--password-env", "BAD", "--data", str(tmp_path / "shards" / "peer-0.safetensors")], env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "wrong password" in r.stderr
