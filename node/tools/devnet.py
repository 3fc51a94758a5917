"""A local anvil devnet: find the binary installed through package.json, start it, stop it."""
from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ChainUnavailable, ConfigError

__all__ = ["Devnet", "find_anvil", "free_port", "repo_root", "die_with_parent"]


def die_with_parent() -> None:
    """For ``preexec_fn``: on Linux, end the child when the process that started it dies, so a
    crashed simulation leaves no orphaned devnet or peers behind. Elsewhere, nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def repo_root() -> Path | None:
    """The checkout this code runs from (editable install), if any."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "package.json").exists() else None


def find_anvil() -> str:
    """$FEDCHAIN_ANVIL, then node_modules of the checkout or the working directory, then PATH."""
    explicit = os.environ.get("FEDCHAIN_ANVIL")
    if explicit:
        return explicit
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "amd64")
    osname = {"linux": "linux", "darwin": "darwin"}.get(platform.system().lower(), "linux")
    for root in filter(None, [repo_root(), Path.cwd()]):
        candidate = root / "node_modules" / "@foundry-rs" / f"anvil-{osname}-{arch}" / "bin" / "anvil"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise ConfigError("anvil not found: run `npm ci` in the fedchain checkout, or set FEDCHAIN_ANVIL")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class Devnet:
    """An anvil process. ``block_time`` 0 means automine (a block per transaction)."""

    port: int = 0
    host: str = "127.0.0.1"
    accounts: int = 10
    block_time: float = 0
    state_file: str | None = None
    state_interval: int = 0  # seconds between state dumps (0: only at exit)
    chain_id: int = 31337
    keys: list[str] = field(default_factory=list, repr=False)
    addresses: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout: float = 30.0) -> "Devnet":
        self.port = self.port or free_port(self.host)
        cfg = Path(tempfile.mkdtemp(prefix="fedchain-anvil-")) / "config.json"
        cmd = [find_anvil(), "--host", self.host, "--port", str(self.port), "--accounts", str(self.accounts),
               "--chain-id", str(self.chain_id), "--config-out", str(cfg), "--silent"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        if self.state_file:
            cmd += ["--state", self.state_file]
            if self.state_interval:
                cmd += ["--state-interval", str(self.state_interval)]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip().splitlines()
                raise ChainUnavailable(f"anvil exited: {err[-1] if err else 'no message'}")
            if cfg.exists() and self._ready():
                data = json.loads(cfg.read_text())
                self.keys = list(data["private_keys"])
                self.addresses = list(data["available_accounts"])
                cfg.unlink()
                return self
            time.sleep(0.1)
        self.stop()
        raise ChainUnavailable(f"anvil did not answer on {self.rpc_url} within {timeout:.0f}s")

    def _ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # anvil writes --state on SIGTERM
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "Devnet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
