"""Artifact stores: where peers pin updates and global models, addressed by Kubo-compatible CIDs.

``EmbeddedStore`` is the default: an on-disk block store that several local processes can share,
producing exactly the CIDs of ``ipfs add``. ``KuboStore`` talks to a Kubo daemon over its HTTP
RPC API (what docker-compose runs). Every ``get`` re-derives the CID from the bytes it returns,
so nothing unverified leaves a store.
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path

from .cid import build_dag, cid_of_block, cid_of_bytes, parse_node, validate_cid
from .errors import ArtifactInvalid, ArtifactNotFound, ConfigError, StoreError, StoreUnavailable

__all__ = ["ArtifactStore", "EmbeddedStore", "KuboStore", "open_store", "DEFAULT_KUBO_API"]

DEFAULT_KUBO_API = "/ip4/127.0.0.1/tcp/5001/http"


class ArtifactStore(ABC):
    """Content-addressed storage of whole files, with pinning and garbage collection."""

    spec: str  # how to reopen this store: "embedded:PATH" or "kubo:MULTIADDR"

    @abstractmethod
    def add(self, data: bytes, *, pin: bool = True) -> str:
        """Store ``data`` and return its CID (as ``ipfs add -Q`` prints it)."""

    @abstractmethod
    def _fetch(self, cid: str) -> bytes:
        """Return the file's bytes without verification."""

    def get(self, cid: str) -> bytes:
        """Return the bytes of ``cid``, verified to hash back to that CID."""
        validate_cid(cid)
        data = self._fetch(cid)
        if cid_of_bytes(data) != cid:
            raise ArtifactInvalid(f"content fetched for {cid} does not match its CID")
        return data

    @abstractmethod
    def has(self, cid: str) -> bool: ...

    @abstractmethod
    def pin(self, cid: str) -> None: ...

    @abstractmethod
    def unpin(self, cid: str) -> None: ...

    @abstractmethod
    def pins(self) -> list[str]: ...

    @abstractmethod
    def gc(self) -> list[str]:
        """Remove every block not reachable from a pin; return the removed CIDs."""

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` if the store cannot be used right now."""

    def close(self) -> None:
        pass


class EmbeddedStore(ArtifactStore):
    """Blocks as files under ``root/blocks``, recursive pins as files under ``root/pins``.

    Writers take a shared lock and ``gc`` an exclusive one, so a collection never removes a
    block between its write and its pin. Every file is written to a temporary name and renamed,
    so readers in other processes never see a partial block.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.spec = f"embedded:{self.root}"
        try:
            (self.root / "blocks").mkdir(parents=True, exist_ok=True)
            (self.root / "pins").mkdir(exist_ok=True)
            (self.root / "lock").touch(exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot use store at {self.root}: {exc.strerror}") from None

    @contextmanager
    def _lock(self, mode: int):
        with open(self.root / "lock", "rb") as fh:
            fcntl.flock(fh, mode)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _block_path(self, cid: str) -> Path:
        return self.root / "blocks" / cid[-3:-1] / cid

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def add(self, data: bytes, *, pin: bool = True) -> str:
        root, blocks = build_dag(bytes(data))
        with self._lock(fcntl.LOCK_SH):
            for block in blocks:
                path = self._block_path(block.cid)
                if not path.exists():
                    self._write_atomic(path, block.data)
            if pin:
                self._write_atomic(self.root / "pins" / root, b"")
        return root

    def _block(self, cid: str) -> bytes:
        try:
            data = self._block_path(cid).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(f"{cid} is not in the store at {self.root}") from None
        if cid_of_block(data) != cid:
            raise ArtifactInvalid(f"block {cid} in {self.root} is corrupted")
        return data

    def _fetch(self, cid: str) -> bytes:
        out = bytearray()
        stack = [cid]
        while stack:
            current = stack.pop()
            try:
                links, data, _ = parse_node(self._block(current))
            except ValueError as exc:
                raise ArtifactInvalid(f"{current}: {exc}") from None
            if links:
                stack.extend(reversed(links))
            elif data:
                out += data
        return bytes(out)

    def has(self, cid: str) -> bool:
        return self._block_path(validate_cid(cid)).exists()

    def pin(self, cid: str) -> None:
        validate_cid(cid)
        with self._lock(fcntl.LOCK_SH):
            self._fetch(cid)  # pinning something incomplete would be a lie
            self._write_atomic(self.root / "pins" / cid, b"")

    def unpin(self, cid: str) -> None:
        (self.root / "pins" / validate_cid(cid)).unlink(missing_ok=True)

    def pins(self) -> list[str]:
        return sorted(p.name for p in (self.root / "pins").iterdir() if not p.name.startswith("."))

    def _reachable(self) -> set[str]:
        keep: set[str] = set()
        stack = self.pins()
        while stack:
            cid = stack.pop()
            if cid in keep:
                continue
            keep.add(cid)
            try:
                links, _, _ = parse_node(self._block_path(cid).read_bytes())
            except (OSError, ValueError):
                continue
            stack.extend(links)
        return keep

    def gc(self) -> list[str]:
        removed = []
        with self._lock(fcntl.LOCK_EX):
            keep = self._reachable()
            for path in (self.root / "blocks").glob("*/*"):
                if path.name.startswith(".") or path.name in keep:
                    continue
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return sorted(removed)

    def ping(self) -> None:
        if not os.access(self.root / "blocks", os.W_OK):
            raise StoreUnavailable(f"store at {self.root} is not writable")


class KuboStore(ArtifactStore):
    """A Kubo (go-ipfs) daemon over its HTTP RPC API, through ipfshttpclient.

    ipfshttpclient 0.7's ``connect()`` refuses daemons newer than 0.8, so the client is built
    directly, which skips that check; the calls used (add, cat, pin, repo/gc) are stable in Kubo.
    """

    def __init__(self, api: str = DEFAULT_KUBO_API, *, timeout: float = 60):
        import ipfshttpclient

        self.api = api
        self.spec = f"kubo:{api}"
        try:
            self._client = ipfshttpclient.Client(api, timeout=timeout)
        except Exception as exc:  # malformed multiaddr and the like
            raise ConfigError(f"bad Kubo API address {api!r}: {exc}") from None

    def _call(self, fn, *args, **kwargs):
        import warnings

        import ipfshttpclient.exceptions as ipfs_exc

        try:
            with warnings.catch_warnings():
                # ipfshttpclient 0.7 passes urllib3 a deprecated argument on every request.
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                return fn(*args, **kwargs)
        except (ipfs_exc.ConnectionError, ipfs_exc.TimeoutError) as exc:
            raise StoreUnavailable(f"Kubo at {self.api} unreachable: {exc}") from None
        except ipfs_exc.ErrorResponse as exc:
            message = str(exc)
            if "not found" in message or "could not resolve" in message or "not pinned" in message or "offline" in message:
                raise ArtifactNotFound(message) from None
            raise StoreError(f"Kubo: {message}") from None
        except ipfs_exc.Error as exc:
            raise StoreError(f"Kubo: {exc}") from None

    def add(self, data: bytes, *, pin: bool = True) -> str:
        cid = self._call(self._client.add_bytes, bytes(data), opts={"pin": "true" if pin else "false"})
        expected = cid_of_bytes(bytes(data))
        if cid != expected:
            raise StoreError(f"Kubo returned {cid}, expected {expected}: is it using non-default add settings?")
        return cid

    def _fetch(self, cid: str) -> bytes:
        # Offline: a block this node lacks is "not found" at once, instead of a network search
        # that only ends at the client's timeout.
        return self._call(self._client.cat, cid, offline=True)

    def has(self, cid: str) -> bool:
        validate_cid(cid)
        try:
            self._call(self._client.block.stat, cid, offline=True)
            return True
        except StoreUnavailable:
            raise
        except StoreError:
            return False

    def pin(self, cid: str) -> None:
        self._call(self._client.pin.add, validate_cid(cid), offline=True)

    def unpin(self, cid: str) -> None:
        try:
            self._call(self._client.pin.rm, validate_cid(cid))
        except ArtifactNotFound:
            pass

    def pins(self) -> list[str]:
        result = self._call(self._client.pin.ls, type="recursive")
        return sorted(result.get("Keys", {}).keys())

    def gc(self) -> list[str]:
        result = self._call(self._client.repo.gc)
        keys = (item["Key"] if isinstance(item["Key"], str) else item["Key"]["/"] for item in result if "Key" in item)
        return sorted(_as_cidv0(k) for k in keys)

    def ping(self) -> None:
        self._call(self._client.id)

    def close(self) -> None:
        self._client.close()


def _as_cidv0(key: str) -> str:
    """Kubo 0.12+ reports blocks as raw-codec CIDv1 ('bafkrei...'); give the CIDv0 of the same
    sha2-256 multihash, as ``add`` returned it."""
    import base64

    if not key.startswith("b"):
        return key
    try:
        raw = base64.b32decode(key[1:].upper() + "=" * (-len(key[1:]) % 8))
    except ValueError:
        return key
    # <version 0x01><codec varint><multihash 0x12 0x20 digest>
    if len(raw) >= 36 and raw[0] == 1 and raw[-34:-32] == b"\x12\x20":
        from .cid import digest_to_cid

        return digest_to_cid(raw[-32:])
    return key


def open_store(spec: str | os.PathLike) -> ArtifactStore:
    """Open a store from its spec: ``kubo:MULTIADDR``, ``embedded:PATH`` or a bare path."""
    text = str(spec)
    if text.startswith("kubo:"):
        return KuboStore(text[len("kubo:") :] or DEFAULT_KUBO_API)
    if text.startswith("embedded:"):
        text = text[len("embedded:") :]
    if not text:
        raise ConfigError("empty store path")
    return EmbeddedStore(text)
