"""Helpers shared by tests (imported as `from _support import ...`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"  # everything a test reads lives inside the repository

__all__ = ["ROOT", "DATA", "kubo_vectors", "run_cli", "clean_env", "deploy_with_cli", "wait_for", "wait_all", "render_in_chromium"]


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


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def render_in_chromium(page: Path, work: Path) -> dict[str, tuple[int, int]]:
    """Load ``page`` in a real headless Chromium and return {img id: (naturalWidth, naturalHeight)}
    as the browser decoded them (0 x 0: an image that did not decode). Skips the calling test
    when no Chromium is installed (Debian: `apt-get install -y chromium`)."""
    import re
    import shutil
    import tempfile

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium on PATH: install Debian's `chromium` package to check that the report renders")
    probe = work / "probe.html"  # the page plus a script that records what the browser decoded
    script = ("<script>window.addEventListener('load', () => { const out = document.createElement('pre'); out.id = 'decoded';"
              " out.textContent = [...document.images].map(i => i.id + '=' + i.naturalWidth + 'x' + i.naturalHeight).join(' ');"
              " document.body.appendChild(out); });</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    with tempfile.TemporaryDirectory(dir=work) as profile:
        r = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                            "--dump-dom", probe.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="decoded">([^<]*)</pre>', r.stdout)
    assert m, f"Chromium printed no decoded-image record (exit {r.returncode}): {r.stderr[-2000:]}"
    return {k: tuple(int(v) for v in dims.split("x")) for k, _, dims in (item.partition("=") for item in m.group(1).split())}
