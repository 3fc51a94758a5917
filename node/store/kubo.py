"""A Kubo (go-ipfs) daemon as the artifact store, over its HTTP RPC API."""
from __future__ import annotations

from ..errors import ArtifactNotFound, ConfigError, StoreError, StoreUnavailable
from ..protocol.cid import cid_of_bytes, digest_to_cid, validate_cid
from .base import ArtifactStore

__all__ = ["KuboStore", "DEFAULT_KUBO_API"]

DEFAULT_KUBO_API = "/ip4/127.0.0.1/tcp/5001/http"


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
        return digest_to_cid(raw[-32:])
    return key

