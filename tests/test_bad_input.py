"""Bad input gives one clear line, exit 1, and changes nothing (issue: hardening, section 5).

Each case ran into "internal error" (exit 2) or succeeded silently before. These run the real CLI
in a fresh process; none of them needs a chain, because every check happens before any RPC.
"""
from __future__ import annotations

import json
import os

import pytest

from _support import clean_env, run_cli

pytestmark = pytest.mark.timeout(300)

MEMBER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
KEY = {"FEDCHAIN_KEY": "0x" + "02" * 32}


class _Result:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_inline(args: list[str], capsys, monkeypatch, cwd, env: dict | None = None) -> _Result:
    """The console script's ``main()`` in this process (same code path, no torch start-up per case)."""
    from fedchain.cli.main import main

    for k in [k for k in __import__("os").environ if k.startswith("FEDCHAIN_")]:
        monkeypatch.delenv(k)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr("sys.argv", ["fedchain", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return _Result(code, out.out, out.err)


def _one_line_exit_1(r, needle: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "internal error" not in lines[0] and "Traceback" not in r.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needle", [
    (["--rpc", "notaurl"], "not a usable RPC URL"),
    (["--rpc", "ftp://x"], "not a usable RPC URL"),
    (["--quorum", "nan"], "--quorum"),
    (["--rounds", "1099511627776"], "rounds must be between 1 and 4294967295"),
    (["--submit-blocks", "1099511627776"], "submission window"),
    (["--hidden", "1000000000"], "over the update limit"),
    (["--epochs", "-1"], "epochs"),
    (["--lr", "nan"], "learning rate"),
    (["--rule", "trimmed-mean", "--rule-param", "beta=0.7"], "beta"),
    (["--rule", "krum-ish"], "unknown aggregation rule"),
    (["-o", "/nonexistent/dir/deployment.json"], "does not exist"),
])
def test_deploy_refuses_bad_options_before_spending_anything(args, needle, tmp_path, capsys, monkeypatch):
    r = run_inline(["deploy", "--members", MEMBER, "--store", str(tmp_path / "store"), *args], capsys, monkeypatch,
                   tmp_path, env=KEY)
    _one_line_exit_1(r, needle)
    assert not (tmp_path / "deployment.json").exists()


def test_deployment_file_with_a_non_string_rpc_url_is_refused(tmp_path, capsys, monkeypatch):
    dep = tmp_path / "deployment.json"
    dep.write_text(json.dumps({"rpc_url": 5, "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3", "chain_id": 1,
                               "deploy_block": 1, "task_cid": "x", "initial_model": "x", "store": "x", "task": {}}))
    _one_line_exit_1(run_inline(["rounds", "list", "-d", str(dep)], capsys, monkeypatch, tmp_path), "RPC URL must be a string")


@pytest.mark.parametrize("args, needle", [
    (["--health-port", "99999"], "--health-port"),
    (["--health-host", "999.1.1.1", "--health-port", "0"], "not an IP address"),
])
def test_node_run_refuses_bad_health_endpoints(args, needle, tmp_path, capsys, monkeypatch):
    r = run_inline(["node", "run", "--data", str(tmp_path / "x.safetensors"), "-d", str(tmp_path / "d.json"), *args],
                   capsys, monkeypatch, tmp_path, env=KEY)
    _one_line_exit_1(r, needle)


def test_simulate_refuses_negative_epochs_before_starting_anything(tmp_path):
    _one_line_exit_1(run_cli(["simulate", "--epochs", "-3", "--workdir", str(tmp_path / "w")], cwd=tmp_path), "epochs")
    assert not (tmp_path / "w").exists()


def test_data_split_refuses_a_nan_alpha(tmp_path, capsys, monkeypatch):
    r = run_inline(["data", "split", "--partition", "dirichlet", "--alpha", "nan", "--out", str(tmp_path / "s")],
                   capsys, monkeypatch, tmp_path)
    _one_line_exit_1(r, "--alpha")
    assert not (tmp_path / "s").exists()


def test_keys_list_refuses_a_file_as_its_folder(tmp_path, capsys, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_exit_1(run_inline(["keys", "--dir", str(f), "list"], capsys, monkeypatch, tmp_path), "is not a folder")


def test_keys_new_with_a_missing_password_file_is_a_clear_error(tmp_path, capsys, monkeypatch):
    _one_line_exit_1(run_inline(["keys", "--dir", str(tmp_path), "new", "k", "--password-file", "nope"], capsys, monkeypatch,
                                tmp_path), "cannot read password file")
    assert not list(tmp_path.glob("*.json"))


def test_model_pull_to_a_missing_folder_is_refused_before_reading_the_chain(tmp_path, capsys, monkeypatch):
    _one_line_exit_1(run_inline(["model", "pull", "-o", "/nonexistent/dir/f", "-d", str(tmp_path / "d.json")], capsys,
                                monkeypatch, tmp_path), "does not exist")


def test_usage_errors_are_one_line_exit_1_in_a_real_process(tmp_path):
    _one_line_exit_1(run_cli(["rounds", "show", "0"], cwd=tmp_path), "NUMBER")


def test_urls_are_redacted_wherever_they_are_shown():
    from fedchain.node._utils import redact_url

    assert redact_url("https://user:secret@host.example:8545/v3/9aa3d95b3bc440fa88ea12eaa4456161?apikey=zzz") == \
        "https://***@host.example:8545/v3/***?***"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    assert "AbCdEf1234567890xyzQWERT" not in redact_url("https://eth.example/v2/AbCdEf1234567890xyzQWERT")


def test_an_unreachable_rpc_with_a_key_in_its_url_is_reported_without_the_key(tmp_path):
    secret = "9aa3d95b3bc440fa88ea12eaa4456161"
    r = run_cli(["deploy", "--members", MEMBER, "--store", str(tmp_path / "store"),
                 "--rpc", f"http://user:pw@127.0.0.1:1/v3/{secret}?key={secret}"], env=clean_env(**KEY), cwd=tmp_path)
    assert r.returncode == 1 and secret not in r.stderr + r.stdout and "pw@" not in r.stderr
    assert os.listdir(tmp_path) in ([], ["store"])
