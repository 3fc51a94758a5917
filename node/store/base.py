"""The artifact-store interface: where peers pin updates and global models, addressed by Kubo-compatible CIDs.

``EmbeddedStore`` is the default: an on-disk block store that several local processes can share,
producing exactly the CIDs of ``ipfs add``. ``KuboStore`` talks to a Kubo daemon over its HTTP
RPC API (what docker-compose runs). Every ``get`` re-derives the CID from the bytes it returns,
so nothing unverified leaves a store, and every ``get`` has a byte budget that is enforced while
the content graph is walked, so no graph can make a fetch hold more than that in memory.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from ..errors import ArtifactInvalid, ArtifactTooLarge
from ..protocol.cid import cid_of_bytes, validate_cid

__all__ = ["ArtifactStore", "DEFAULT_MAX_BYTES"]

# What a fetch may assemble when the caller names no budget. Callers that read what members
# published (updates, models) pass the task's ``max_update_bytes``, far below this.
DEFAULT_MAX_BYTES = 1 << 30


class ArtifactStore(ABC):
    """Content-addressed storage of whole files, with pinning and garbage collection."""

    spec: str  # how to reopen this store: "embedded:PATH" or "kubo:MULTIADDR"

    @abstractmethod
    def add(self, data: bytes, *, pin: bool = True) -> str:
        """Store ``data`` and return its CID (as ``ipfs add -Q`` prints it)."""

    def cid_of(self, data: bytes) -> str:
        """The CID ``add`` would return for ``data``, without storing anything (a sealed update
        is committed to before it may be in the store)."""
        return cid_of_bytes(data)

    @abstractmethod
    def _fetch(self, cid: str, *, max_bytes: int) -> bytes:
        """Return the file's bytes, unverified as a whole, never holding more than ``max_bytes``
        of it: raise ``ArtifactTooLarge`` as soon as the graph or the stream says it is more."""

    def get(self, cid: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """Return the bytes of ``cid``, at most ``max_bytes`` of them, verified to hash back to that CID.

        Raises ``ArtifactTooLarge`` for content over the budget (decided while walking, before it
        is assembled), ``ArtifactInvalid`` for content that is malformed or does not match.
        """
        validate_cid(cid)
        data = self._fetch(cid, max_bytes=max_bytes)
        if len(data) > max_bytes:
            raise ArtifactTooLarge(f"DAG too large: {cid} is over the {max_bytes}-byte budget")
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

