"""Small helpers that are not part of fedchain's public surface."""
from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit, urlunsplit

from .errors import ConfigError

__all__ = ["redact_url", "check_rpc_url", "check_bind_host"]

_KEYLIKE = re.compile(r"^(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_\-]{20,}$")


def redact_url(url: object) -> str:
    """``url`` safe to log, print or serve: no userinfo, no query or fragment, and no path segment
    that looks like an API key (providers often put the key in the path, e.g. ``/v3/<key>``)."""
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparseable URL>"
    if not parts.scheme or not parts.netloc:
        return text if "@" not in text and "?" not in text else "<redacted>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    if parts.username or parts.password:
        netloc = "***@" + netloc
    path = "/".join("***" if _KEYLIKE.match(seg) else seg for seg in parts.path.split("/"))
    return urlunsplit((parts.scheme, netloc, path, "***" if parts.query else "", ""))


def check_rpc_url(url: object) -> str:
    """``url`` if it is an http(s) or ws(s) URL with a host; ``ConfigError`` otherwise."""
    if not isinstance(url, str):
        raise ConfigError(f"RPC URL must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise ConfigError(f"not a usable RPC URL: {redact_url(url)}") from None
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ConfigError(f"not a usable RPC URL (need http://, https://, ws:// or wss:// and a host): {redact_url(url)}")
    return url


def check_bind_host(host: str) -> str:
    """``host`` if it is an IP address or a name that resolves; ``ConfigError`` otherwise."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", host):
        raise ConfigError(f"not an IP address: {host}")
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        raise ConfigError(f"cannot resolve host {host!r}") from None
    return host
