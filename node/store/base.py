"""The artifact-store interface: where peers pin updates and global models, addressed by Kubo-compatible CIDs.

``EmbeddedStore`` is the default: an on-disk block store that several local processes can share,
producing exactly the CIDs of ``ipfs add``. ``KuboStore`` talks to a Kubo daemon over its HTTP
RPC API (what docker-compose runs). Every ``get`` re-derives the CID from the bytes it returns,
so nothing unverified leaves a store.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from ..errors import ArtifactInvalid
from ..protocol.cid import cid_of_bytes, validate_cid

__all__ = ["ArtifactStore"]


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

