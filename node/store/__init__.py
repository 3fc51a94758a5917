"""Artifact stores: where peers pin updates and global models, addressed by Kubo-compatible CIDs.

``EmbeddedStore`` is the default: an on-disk block store that several local processes can share,
producing exactly the CIDs of ``ipfs add``. ``KuboStore`` talks to a Kubo daemon over its HTTP
RPC API (what docker-compose runs). Every ``get`` re-derives the CID from the bytes it returns,
so nothing unverified leaves a store.
"""
from __future__ import annotations

import os

from ..errors import ConfigError
from .base import DEFAULT_MAX_BYTES, ArtifactStore
from .embedded import EmbeddedStore
from .kubo import DEFAULT_KUBO_API, KuboStore

__all__ = ["ArtifactStore", "EmbeddedStore", "KuboStore", "open_store", "DEFAULT_KUBO_API", "DEFAULT_MAX_BYTES"]


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
