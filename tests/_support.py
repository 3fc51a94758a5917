"""Helpers shared by tests (imported as `from _support import ...`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"  # everything a test reads lives inside the repository

__all__ = ["ROOT", "DATA", "kubo_vectors", "run_cli", "clean_env", "deploy_with_cli", "wait_for", "wait_all"]


def kubo_vectors() -> list[dict]:
    """CIDs real Kubo's ``ipfs add`` printed for generated files (see tests/data/README.md)."""
    return json.loads((DATA / "kubo-cid-vectors.json").read_text())["vectors"]


def clean_env(**extra: str) -> dict:
    """The current environment without FEDCHAIN_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDCHAIN_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(args: list[str], *, env: dict | None = None, cwd=None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the `fedchain` CLI in a fresh process, as a user would."""
    return subprocess.run([sys.executable, "-m", "fedchain.cli.main", *args], env=env or clean_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def deploy_with_cli(net, work: Path, *, peers: int, rounds: int, windows: int, extra: list[str] = ()) -> Path:
    """`fedchain data split` and `fedchain deploy` against ``net``, as a user would; returns the
    deployment file. Shards land in ``work/shards``, the store in ``work/store``."""
    env = clean_env(FEDCHAIN_KEY=net.keys[0])
    r = run_cli(["data", "split", "--peers", str(peers), "--out", str(work / "shards")], env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli(["deploy", "--rpc", net.rpc_url, "--members", ",".join(net.addresses[1 : peers + 1]), "--rounds", str(rounds),
                 "--submit-blocks", str(windows), "--vote-blocks", str(windows), "--store", str(work / "store"),
                 "-o", str(work / "deployment.json"), *extra], env=env)
    assert r.returncode == 0, r.stderr
    return work / "deployment.json"


def wait_for(predicate, timeout: float, what: str, *, interval: float = 0.2) -> None:
    """Poll ``predicate`` (errors count as not yet) until true, or fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def wait_all(procs, seconds: float) -> None:
    """Wait for every process within one shared deadline; kill whatever is still running then."""
    import time

    deadline = time.monotonic() + seconds
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
