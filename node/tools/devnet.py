"""A local devnet: anvil (default) or Hardhat's node, found through package.json, started, stopped.

The two engines differ in how they start, how they report their dev keys, and in their
non-standard RPC methods (``anvil_mine`` vs ``hardhat_mine``). Those differences live in one
``Engine`` class each; everything above (tests, simulate, experiments) calls ``Devnet.mine`` and
never names an engine's RPC method.
"""
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ChainUnavailable, ConfigError

__all__ = ["Devnet", "Engine", "AnvilEngine", "HardhatEngine", "ENGINES", "find_anvil", "find_hardhat",
           "free_port", "repo_root", "die_with_parent", "DEV_MNEMONIC"]

# The public development mnemonic both anvil and Hardhat derive their funded accounts from.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


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
    for here in Path(__file__).resolve().parents:  # node/tools/devnet.py -> the checkout holding package.json
        if (here / "package.json").exists():
            return here
    return None


def _checkouts() -> list[Path]:
    return list(filter(None, [repo_root(), Path.cwd()]))


def find_anvil() -> str:
    """$FEDCHAIN_ANVIL, then node_modules of the checkout or the working directory, then PATH."""
    explicit = os.environ.get("FEDCHAIN_ANVIL")
    if explicit:
        return explicit
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(), "amd64")
    osname = {"linux": "linux", "darwin": "darwin"}.get(platform.system().lower(), "linux")
    for root in _checkouts():
        candidate = root / "node_modules" / "@foundry-rs" / f"anvil-{osname}-{arch}" / "bin" / "anvil"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise ConfigError("anvil not found: run `npm ci` in the fedchain checkout, or set FEDCHAIN_ANVIL")


def find_hardhat() -> Path:
    """The checkout (or working directory) whose node_modules holds Hardhat 2.

    Hardhat refuses to run from an installation that is not local to its working directory
    (error HH12), so the node is started with that folder as its working directory."""
    for root in _checkouts():
        if (root / "node_modules" / "hardhat" / "internal" / "cli" / "cli.js").exists():
            return root
    raise ConfigError("hardhat not found: run `npm ci` in the fedchain checkout")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Engine:
    """How one EVM dev node is started and driven. Subclasses fill in the engine-specific steps."""

    name: str = ""

    def command(self, net: "Devnet", scratch: Path) -> tuple[list[str], Path | None]:
        """The argv that starts the node, and its working directory."""
        raise NotImplementedError

    def accounts(self, net: "Devnet", scratch: Path) -> tuple[list[str], list[str]] | None:
        """(private keys, addresses) once the node has published them; None while not yet."""
        raise NotImplementedError

    def mine(self, net: "Devnet", blocks: int) -> None:
        """Mine ``blocks`` empty blocks at once."""
        raise NotImplementedError


class AnvilEngine(Engine):
    """Foundry's anvil: keys come from ``--config-out``; state can be dumped and reloaded."""

    name = "anvil"

    def command(self, net, scratch):
        cmd = [find_anvil(), "--host", net.host, "--port", str(net.port), "--accounts", str(net.accounts),
               "--chain-id", str(net.chain_id), "--config-out", str(scratch / "config.json"), "--silent",
               # anvil otherwise writes old states under ~/.foundry/anvil/tmp and never removes
               # them (gigabytes per busy devnet); nothing here reads state older than the head.
               "--max-persisted-states", "0"]
        if net.block_time:
            cmd += ["--block-time", str(net.block_time)]
        if net.state_file:
            cmd += ["--state", net.state_file]
            if net.state_interval:
                cmd += ["--state-interval", str(net.state_interval)]
        return cmd, None

    def accounts(self, net, scratch):
        cfg = scratch / "config.json"
        if not cfg.exists():
            return None
        data = json.loads(cfg.read_text())
        cfg.unlink()
        return list(data["private_keys"]), list(data["available_accounts"])

    def mine(self, net, blocks):
        net.rpc("anvil_mine", [hex(blocks)], timeout=120)  # thousands of blocks take a while on a busy machine


class HardhatEngine(Engine):
    """Hardhat Network (``hardhat node``, Hardhat 2): configured through a generated
    hardhat.config.js; keys are derived from the same public mnemonic anvil uses."""

    name = "hardhat"

    def command(self, net, scratch):
        if net.state_file:
            raise ConfigError("hardhat's node cannot save or load chain state (--state); use the anvil engine")
        root = find_hardhat()
        mining = ({"auto": False, "interval": int(net.block_time * 1000)} if net.block_time else {"auto": True, "interval": 0})
        # throwOnTransactionFailures false: a reverting transaction is mined with status 0 and its
        # hash returned, as anvil and real nodes do, instead of failing eth_sendRawTransaction.
        config = {"networks": {"hardhat": {"chainId": net.chain_id, "mining": mining, "throwOnTransactionFailures": False,
                                           "accounts": {"mnemonic": DEV_MNEMONIC, "count": net.accounts}}}}
        (scratch / "hardhat.config.js").write_text(f"module.exports = {json.dumps(config)};\n")
        cmd = ["node", str(root / "node_modules" / "hardhat" / "internal" / "cli" / "cli.js"), "node",
               "--config", str(scratch / "hardhat.config.js"), "--hostname", net.host, "--port", str(net.port)]
        return cmd, root

    def accounts(self, net, scratch):
        from eth_account import Account

        Account.enable_unaudited_hdwallet_features()
        derived = [Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(net.accounts)]
        served = net.rpc("eth_accounts", [])
        if [a.lower() for a in served] != [a.address.lower() for a in derived]:
            raise ChainUnavailable("hardhat's accounts are not the ones derived from the dev mnemonic")
        return ["0x" + a.key.hex().removeprefix("0x") for a in derived], [a.address for a in derived]

    def mine(self, net, blocks):
        net.rpc("hardhat_mine", [hex(blocks)], timeout=120)


ENGINES: dict[str, Engine] = {e.name: e for e in (AnvilEngine(), HardhatEngine())}


def _default_engine() -> str:
    return os.environ.get("FEDCHAIN_DEVNET_ENGINE", "anvil")


@dataclass
class Devnet:
    """A dev chain process. ``block_time`` 0 means automine (a block per transaction).

    ``engine`` is "anvil" or "hardhat"; its default comes from $FEDCHAIN_DEVNET_ENGINE (else anvil),
    so a test run or a simulation can be pointed at Hardhat without code changes."""

    port: int = 0
    host: str = "127.0.0.1"
    accounts: int = 10
    block_time: float = 0
    state_file: str | None = None
    state_interval: int = 0  # seconds between state dumps (0: only at exit); anvil only
    chain_id: int = 31337
    engine: str = field(default_factory=_default_engine)
    keys: list[str] = field(default_factory=list, repr=False)
    addresses: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown devnet engine {self.engine!r}; choose one of {sorted(ENGINES)}")

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout: float = 60.0) -> "Devnet":
        engine = ENGINES[self.engine]
        self.port = self.port or free_port(self.host)
        scratch = Path(tempfile.mkdtemp(prefix=f"fedchain-{engine.name}-"))
        cmd, cwd = engine.command(self, scratch)
        env = dict(os.environ, HARDHAT_DISABLE_TELEMETRY_PROMPT="true")
        self.process = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip().splitlines()
                raise ChainUnavailable(f"{engine.name} exited: {err[-1] if err else 'no message'}")
            if self._ready():
                found = engine.accounts(self, scratch)
                if found:
                    from eth_utils import to_checksum_address

                    self.keys, self.addresses = found[0], [to_checksum_address(a) for a in found[1]]
                    shutil.rmtree(scratch, ignore_errors=True)
                    return self
            time.sleep(0.1)
        self.stop()
        raise ChainUnavailable(f"{engine.name} did not answer on {self.rpc_url} within {timeout:.0f}s")

    def _ready(self) -> bool:
        try:
            self.rpc("eth_chainId", [])
            return True
        except (OSError, ValueError):
            return False

    def rpc(self, method: str, params: list, *, timeout: float = 5.0) -> object:
        """One JSON-RPC call to the devnet (for engine-specific methods; use web3 for the rest)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        req = urllib.request.Request(self.rpc_url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
        if "error" in reply:
            raise ChainUnavailable(f"{self.engine} {method}: {reply['error'].get('message', reply['error'])}")
        return reply["result"]

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks now (anvil_mine / hardhat_mine)."""
        if blocks > 0:
            ENGINES[self.engine].mine(self, blocks)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # anvil writes --state on SIGTERM
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def wait(self) -> None:
        """Block until the node exits or Ctrl-C; then stop it."""
        try:
            while self.process and self.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> "Devnet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
