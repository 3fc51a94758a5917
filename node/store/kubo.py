"""A Kubo (go-ipfs) daemon as the artifact store, over its HTTP RPC API."""
from __future__ import annotations

import io
import time

from ..errors import ArtifactInvalid, ArtifactNotFound, ArtifactTooLarge, ConfigError, StoreError, StoreUnavailable
from ..protocol.cid import MAX_BLOCK_SIZE, cid_of_block, cid_of_bytes, decode_node, digest_to_cid, validate_cid
from .base import ArtifactStore

__all__ = ["KuboStore", "DEFAULT_KUBO_API"]

DEFAULT_KUBO_API = "/ip4/127.0.0.1/tcp/5001/http"


class KuboStore(ArtifactStore):
    """A Kubo (go-ipfs) daemon over its HTTP RPC API, through ipfshttpclient.

    ipfshttpclient 0.7's ``connect()`` refuses daemons newer than 0.8, so the client is built
    directly, which skips that check; the calls used (add, block/get, cat, pin, repo/gc) are
    stable in Kubo.

    Reads go to the network: with one Kubo per organization, another organization's update is
    found through this node's peers (see docs/ipfs.md). ``fetch_timeout`` bounds each read; a
    read that runs out of it is ``ArtifactNotFound``, which callers retry until their deadline.
    """

    def __init__(self, api: str = DEFAULT_KUBO_API, *, timeout: float = 60, fetch_timeout: float = 30):
        import ipfshttpclient

        self.api = api
        self.spec = f"kubo:{api}"
        self.fetch_timeout = fetch_timeout
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
            if any(m in message for m in ("not found", "could not resolve", "not pinned", "offline", "deadline exceeded")):
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

    def _fetch(self, cid: str, *, max_bytes: int) -> bytes:
        # The root block first: the file size it declares is checked against the budget before
        # any content is asked for. Then ``cat``, read as a stream and cut off at that size, so
        # neither a lying root nor a daemon that keeps sending can push the fetch past the budget.
        deadline = time.monotonic() + self.fetch_timeout
        root = self._read(cid, "block/get", {}, MAX_BLOCK_SIZE, deadline)
        if len(root) > MAX_BLOCK_SIZE or cid_of_block(root) != cid:
            raise ArtifactInvalid(f"the root block Kubo returned for {cid} does not match its CID")
        try:
            declared = decode_node(root).file_size
        except ValueError as exc:
            raise ArtifactInvalid(f"DAG malformed: {cid}: {exc}") from None
        if declared > max_bytes:
            raise ArtifactTooLarge(f"DAG too large: {cid} declares {declared} bytes, over the {max_bytes}-byte budget")
        data = self._read(cid, "cat", {"length": str(declared + 1)}, declared, deadline)
        if len(data) < declared:
            raise ArtifactNotFound(f"{cid}: Kubo's stream ended after {len(data)} of {declared} bytes")
        return data

    def _read(self, cid: str, command: str, opts: dict, limit: int, deadline: float) -> bytes:
        """The body of ``command`` on ``cid``, streamed; more than ``limit`` bytes is refused mid-stream."""
        import warnings

        import ipfshttpclient.exceptions as ipfs_exc

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ArtifactNotFound(f"{cid} not found within {self.fetch_timeout:g} s")

        def request():
            try:  # Kubo's own ``timeout`` ends its network search; the client's ends a silent daemon
                return self._client._client.request(f"/{command}", (cid,), opts={**opts, "timeout": f"{remaining:.3f}s"},
                                                     stream=True, timeout=remaining + 1)
            except ipfs_exc.TimeoutError:
                raise ArtifactNotFound(f"{cid} not found within {self.fetch_timeout:g} s") from None

        stream = self._call(request)
        out = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                for chunk in stream:
                    if out.tell() + len(chunk) > limit:
                        raise ArtifactTooLarge(f"DAG too large: Kubo sent more than the {limit} bytes {cid} may have")
                    out.write(chunk)
                    if time.monotonic() > deadline:
                        raise ArtifactNotFound(f"{cid} not found within {self.fetch_timeout:g} s (still streaming)")
        except ipfs_exc.PartialErrorResponse as exc:
            raise ArtifactNotFound(f"{cid}: Kubo stopped mid-stream: {exc}") from None
        except (ipfs_exc.Error, OSError) as exc:  # the connection dropped or timed out mid-stream
            raise ArtifactNotFound(f"{cid}: read from Kubo at {self.api} failed mid-stream: {exc}") from None
        finally:
            stream.close()
        return out.getvalue()

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

