"""A stand-in for a Kubo (go-ipfs) daemon's HTTP RPC API, for tests. It is NOT Kubo.

Kubo cannot be installed where these tests run, so this module serves the small part of
``/api/v0`` that ``fedchain.node.store.KuboStore`` uses, shaped the way Kubo's RPC answers:

* ``add``: multipart/form-data upload (ipfshttpclient streams it with chunked transfer
  encoding); the file is chunked and linked with ``fedchain.node.protocol.cid.build_dag``, i.e. Kubo's
  default import settings (CIDv0, 262144-byte chunks, dag-pb leaves, balanced, 174 links), and
  every block is kept. ``pin`` is honoured (default true). Non-default import options are
  refused rather than silently ignored, because the CID would differ from Kubo's.
  Answers one newline-terminated JSON object ``{"Name", "Hash", "Size"}`` per file.
* ``cat``, ``block/get``, ``block/stat``, ``pin/add``: a block that is not in the repo is, as in
  Kubo, looked for on the network unless ``offline=true`` was passed. The "network" is the
  stand-ins this one is peered with (``peering=[...]`` as in Kubo's ``Peering.Peers``, or
  ``swarm/connect``): each is asked over its own RPC API (``block/get`` with ``offline=true``),
  in place of bitswap, and a block found is verified and kept, as Kubo keeps what it fetched.
  A block no peer has is searched for ``network_wait`` seconds (default 30), or the request's
  ``timeout`` option (a Go duration, as Kubo's global ``--timeout``) if shorter, and then
  fails with ``context deadline exceeded``, the way a real daemon keeps searching until told
  to stop. Offline, the miss is immediate: HTTP 500 with
  ``{"Message": "block was not found locally (offline): ipld: could not find <cid>",
  "Code": 0, "Type": "error"}``.
* ``cat`` streams: the root is resolved before the response starts (a missing root is an error
  response), then blocks are read one at a time and the output stops at ``length``; a block
  missing further down ends the stream early with an ``X-Stream-Error`` trailer, as Kubo does.
  So a graph that expands to gigabytes costs the stand-in no more memory than it costs Kubo.
* ``swarm/connect`` (``/ip4/HOST/tcp/PORT/p2p/ID``, where PORT is the other stand-in's API
  port: stand-ins have no libp2p) and ``swarm/peers``.
* ``pin/rm`` (``not pinned or pinned indirectly`` when not pinned), ``pin/ls``
  (``{"Keys": {cid: {"Type": ...}}}``, or one ``{"Cid", "Type"}`` line per pin with
  ``stream=true``), ``repo/gc`` (one ``{"Key": {"/": cid}}`` line per removed block; like
  Kubo >= 0.12, whose blockstore is keyed by multihash, the removed keys are reported as
  CIDv1 with the *raw* codec, ``bafkrei...``, whatever CID the block was added under),
  ``id`` and ``version``.
* Errors are HTTP 500 ``{"Message", "Code": 0, "Type": "error"}``; missing or malformed
  arguments are HTTP 400 with ``"Code": 1``; RPC calls must be POST (405 otherwise, as Kubo
  >= 0.5); unknown commands are 404 ``404 page not found``.

What it does not do: directories, MFS, libp2p (bitswap, DHT, NAT traversal: "peering" is a
direct RPC call to the other stand-in), CIDv1 imports, trickle DAGs,
auth, CORS checks, progress output, streamed error trailers. Shapes were taken from the Kubo
RPC reference (docs.ipfs.tech/reference/kubo/rpc/) and Kubo's source; where this file and real
Kubo disagree, Kubo is right and this file is the bug.

Use it as a context manager::

    with KuboStandIn() as kubo:
        store = KuboStore(kubo.api)   # kubo.api == "/ip4/127.0.0.1/tcp/PORT/http"

or run ``python tests/kubo_standin.py [PORT]`` to serve in the foreground for manual CLI tries.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.request
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from fedchain.node.protocol.cid import build_dag, cid_to_digest, parse_node
from fedchain.node.errors import InvalidCID

__all__ = ["KuboStandIn", "raw_cidv1"]

KUBO_VERSION = "0.41.0"  # the version this stand-in reports; docker-compose.yml pins the real one
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def raw_cidv1(cid_v0: str) -> str:
    """The CIDv1 (raw codec, base32) Kubo >= 0.12 reports for a block stored under ``cid_v0``."""
    multihash = b"\x12\x20" + cid_to_digest(cid_v0)
    return "b" + base64.b32encode(b"\x01\x55" + multihash).decode("ascii").lower().rstrip("=")


class _RPCError(Exception):
    def __init__(self, message: str, *, status: int = 500, code: int = 0):
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


class KuboStandIn:
    """A threaded HTTP server on 127.0.0.1 (a free port) speaking a subset of Kubo's RPC API."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, network_wait: float = 30.0,
                 version: str = KUBO_VERSION, peering: list[str] = ()):
        self.host, self._port = host, port
        self.network_wait = network_wait
        self.version = version
        self.peers: list[str] = list(peering)  # swarm multiaddrs of peered stand-ins (Peering.Peers)
        self.blocks: dict[str, bytes] = {}  # CIDv0 -> serialized dag-pb node
        self.pinned: dict[str, str] = {}  # CIDv0 -> "recursive" | "direct"
        self.calls: list[tuple[str, dict[str, list[str]]]] = []  # (command, query) per request
        self.lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "KuboStandIn":
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = _Server((self.host, self._port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="kubo-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "KuboStandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server, "not started"
        return self._server.server_address[1]

    @property
    def api(self) -> str:
        """The API multiaddr, as in Kubo's ``Addresses.API`` (what ``kubo:`` store specs take)."""
        return f"/ip4/{self.host}/tcp/{self.port}/http"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/api/v0"

    @property
    def peer_id(self) -> str:
        return f"12D3KooWStandIn{self.port:05d}"

    @property
    def swarm_addr(self) -> str:
        """This stand-in's "swarm" address, for another stand-in's ``peering`` or ``swarm/connect``."""
        return f"/ip4/{self.host}/tcp/{self.port}/p2p/{self.peer_id}"

    def commands(self) -> list[str]:
        """The RPC commands received so far, in order (e.g. ``["add", "block/stat"]``)."""
        with self.lock:
            return [c for c, _ in self.calls]

    # ------------------------------------------------------------------ repo model
    def _wait_for(self, cid: str, offline: bool, timeout: float | None = None) -> bytes:
        """The block ``cid``; missing, fail now (offline) or after searching the peers in vain."""
        wait = 0 if offline else min(self.network_wait, self.network_wait if timeout is None else timeout)
        deadline = time.monotonic() + wait
        while True:
            with self.lock:
                block = self.blocks.get(cid)
            if block is not None:
                return block
            if offline:
                raise _RPCError(f"block was not found locally (offline): ipld: could not find {cid}")
            block = self._from_peers(cid)
            if block is not None:
                return block
            if time.monotonic() >= deadline or self._stopping.is_set():
                raise _RPCError(f"failed to fetch {cid}: context deadline exceeded")
            time.sleep(0.05)

    def _from_peers(self, cid: str) -> bytes | None:
        """Ask each peered stand-in for ``cid`` (in place of bitswap); keep and return what checks out."""
        for addr in list(self.peers):
            match = re.fullmatch(r"/ip4/([^/]+)/tcp/(\d+)(?:/p2p/[^/]+)?", addr)
            if not match:
                continue
            url = f"http://{match[1]}:{match[2]}/api/v0/block/get?arg={cid}&offline=true"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as resp:
                    block = resp.read()
            except OSError:  # the peer does not have it (HTTP 500), or is down
                continue
            if hashlib.sha256(block).digest() == cid_to_digest(cid):
                with self.lock:
                    self.blocks.setdefault(cid, block)
                return block
        return None

    def _walk(self, root: str, offline: bool, timeout: float | None = None) -> list[str]:
        """Every CID of the DAG under ``root`` (root first), fetching each block."""
        out, stack = [], [root]
        while stack:
            cid = stack.pop()
            links, _, _ = parse_node(self._wait_for(cid, offline, timeout))
            out.append(cid)
            stack.extend(reversed(links))
        return out

    def _iter_file(self, root: str, offline: bool, timeout: float | None = None):
        """The file's content, one leaf at a time (the root block must already be at hand)."""
        stack = [root]
        while stack:
            links, inline, _ = parse_node(self._wait_for(stack.pop(), offline, timeout))
            if links:
                stack.extend(reversed(links))
            elif inline:
                yield inline

    def _reachable(self) -> set[str]:
        keep: set[str] = set()
        with self.lock:
            for cid, kind in self.pinned.items():
                if kind == "direct":
                    keep.add(cid)
                    continue
                stack = [cid]
                while stack:
                    current = stack.pop()
                    if current in keep or current not in self.blocks:
                        continue
                    keep.add(current)
                    stack.extend(parse_node(self.blocks[current])[0])
        return keep


# ---------------------------------------------------------------------- HTTP layer
class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client gave up (e.g. its timeout) while a lookup was "searching the network"
        super().handle_error(request, client_address)


def _cid_arg(value: str) -> str:
    """A CID argument as Kubo accepts it (``Qm...`` or ``/ipfs/Qm...``); CIDv0 only here."""
    text = value[len("/ipfs/"):] if value.startswith("/ipfs/") else value
    try:
        cid_to_digest(text)
    except InvalidCID:
        raise _RPCError(f'invalid path "{value}": the stand-in only understands CIDv0 (Qm...) paths') from None
    return text


def _bool(query: dict[str, list[str]], name: str, default: bool) -> bool:
    values = query.get(name)
    if not values:
        return default
    if values[-1] in _TRUE:
        return True
    if values[-1] in _FALSE:
        return False
    raise _RPCError(f'Could not convert value "{values[-1]}" to type "bool" (for option "-{name}")', status=400, code=1)


def _args(query: dict[str, list[str]], name: str, *, required: bool = True) -> list[str]:
    args = query.get("arg", [])
    if required and not args:
        raise _RPCError(f'argument "{name}" is required', status=400, code=1)
    return args


def _multipart_files(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(filename, content) of each file part of a multipart/form-data body."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() not in ("multipart/form-data", "multipart/mixed"):
        raise _RPCError("file argument 'path' is required", status=400, code=1)
    boundary = None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise _RPCError("multipart: boundary is missing", status=400, code=1)
    files = []
    delimiter = b"\r\n--" + boundary.encode("ascii")
    for part in (b"\r\n" + body).split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # closing delimiter
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            raise _RPCError("multipart: malformed part", status=400, code=1)
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if headers.get("content-type", "").startswith("application/x-directory"):
            raise _RPCError("the stand-in does not support directories", status=400, code=1)
        name = ""
        for item in headers.get("content-disposition", "").split(";"):
            key, _, value = item.strip().partition("=")
            if key == "filename":
                name = urllib.parse.unquote(value.strip('"'))
        files.append((name, content))
    if not files:
        raise _RPCError("file argument 'path' is required", status=400, code=1)
    return files


class _Handler(BaseHTTPRequestHandler):
    owner: KuboStandIn
    protocol_version = "HTTP/1.1"
    server_version = "kubo-standin"

    def log_message(self, format, *args):  # noqa: A002 - silence per-request logging
        pass

    # ---------------------------------------------------------------- plumbing
    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, *, stream: bool = False, extra: dict | None = None):
        """Send a response; ``stream`` uses chunked encoding as Kubo does for streamed outputs."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Vary", "Origin")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if stream:
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("X-Chunked-Output", "1")
            self.end_headers()
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def _start_stream(self, content_type: str, extra: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Vary", "Origin")
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Chunked-Output", "1")
        self.end_headers()

    def _chunk(self, piece: bytes) -> None:
        for i in range(0, len(piece), 65536):
            part = piece[i : i + 65536]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))

    def _end_stream(self, trailers: dict) -> None:
        self.wfile.write(b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in trailers.items()) + b"\r\n")

    def _json(self, obj, *, status: int = 200, stream: bool = False):
        self._send(status, json.dumps(obj, separators=(",", ":")).encode() + b"\n", "application/json", stream=stream)

    def _ndjson(self, objs: list):
        body = b"".join(json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in objs)
        self._send(200, body, "application/json", stream=True)

    def _error(self, exc: _RPCError):
        self._json({"Message": exc.message, "Code": exc.code, "Type": "error"}, status=exc.status)

    def _reject(self, status: int, text: str):
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    # ---------------------------------------------------------------- dispatch
    def do_POST(self):  # noqa: N802 - http.server naming
        url = urllib.parse.urlsplit(self.path)
        body = self._body()
        if not url.path.startswith("/api/v0/"):
            return self._reject(404, "404 page not found\n")
        command = url.path[len("/api/v0/"):].strip("/")
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        with self.owner.lock:
            self.owner.calls.append((command, query))
        handler = getattr(self, "cmd_" + command.replace("/", "_"), None)
        if handler is None:
            return self._reject(404, "404 page not found\n")
        try:
            handler(query, body)
        except _RPCError as exc:
            self._error(exc)
        except ValueError as exc:  # a block that does not parse as dag-pb UnixFS
            self._error(_RPCError(str(exc)))

    def _method_not_allowed(self):
        self._body()  # drain it, so a kept-alive connection stays in sync
        self._reject(405, "405 - Method Not Allowed\n")

    do_GET = do_PUT = do_DELETE = _method_not_allowed  # noqa: N815

    def _offline(self, query) -> bool:
        return _bool(query, "offline", False)

    def _timeout(self, query) -> float | None:
        """Kubo's global ``timeout`` option, a Go duration (``2.5s``, ``300ms``, ``1m``)."""
        text = query.get("timeout", [""])[-1]
        if not text:
            return None
        units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
        parts = re.findall(r"(\d+(?:\.\d*)?)(ns|us|ms|s|m|h)", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise _RPCError(f'time: invalid duration "{text}"', status=400, code=1)
        return sum(float(n) * units[u] for n, u in parts)

    # ---------------------------------------------------------------- commands
    def cmd_add(self, query, body):
        unsupported = {
            "cid-version": lambda v: v not in ("", "0"),
            "raw-leaves": lambda v: v in _TRUE,
            "chunker": lambda v: v not in ("", "size-262144"),
            "hash": lambda v: v not in ("", "sha2-256"),
            "trickle": lambda v: v in _TRUE,
            "inline": lambda v: v in _TRUE,
            "nocopy": lambda v: v in _TRUE,
            "wrap-with-directory": lambda v: v in _TRUE,
        }
        for name, bad in unsupported.items():
            if name in query and bad(query[name][-1]):
                raise _RPCError(f"the stand-in only supports default add settings, not {name}={query[name][-1]}", status=400, code=1)
        pin = _bool(query, "pin", True)
        only_hash = _bool(query, "only-hash", False)
        out = []
        for name, content in _multipart_files(self.headers.get("Content-Type", ""), body):
            root, blocks = build_dag(content)
            if not only_hash:
                with self.owner.lock:
                    for block in blocks:
                        self.owner.blocks.setdefault(block.cid, block.data)
                    if pin:
                        self.owner.pinned[root] = "recursive"
            out.append({"Name": name or root, "Hash": root, "Size": str(blocks[-1].tree_size)})
        self._ndjson(out)

    def cmd_cat(self, query, body):
        cid = _cid_arg(_args(query, "ipfs-path")[0])
        offline, timeout = self._offline(query), self._timeout(query)
        _, _, size = parse_node(self.owner._wait_for(cid, offline, timeout))  # resolved before any output
        offset = int(query.get("offset", ["0"])[-1] or 0)
        length = query.get("length", [""])[-1]
        end = size if not length else min(size, offset + int(length))
        self._start_stream("text/plain", {"X-Stream-Output": "1", "X-Content-Length": str(max(end - offset, 0)),
                                          "Trailer": "X-Stream-Error"})
        position, error = 0, ""
        try:
            for piece in self.owner._iter_file(cid, offline, timeout) if end > offset else ():
                lo, hi = max(offset - position, 0), min(end - position, len(piece))
                if lo < hi:
                    self._chunk(piece[lo:hi])
                position += len(piece)
                if position >= end:
                    break
        except (_RPCError, ValueError) as exc:
            error = getattr(exc, "message", str(exc))
        self._end_stream({"X-Stream-Error": error} if error else {})

    def cmd_block_get(self, query, body):
        cid = _cid_arg(_args(query, "cid")[0])
        block = self.owner._wait_for(cid, self._offline(query), self._timeout(query))
        self._send(200, block, "text/plain", stream=True, extra={"X-Stream-Output": "1"})

    def cmd_block_stat(self, query, body):
        cid = _cid_arg(_args(query, "cid")[0])
        block = self.owner._wait_for(cid, self._offline(query), self._timeout(query))
        self._json({"Key": cid, "Size": len(block)})

    def cmd_swarm_connect(self, query, body):
        addrs = _args(query, "address")
        for addr in addrs:
            if not re.fullmatch(r"/ip4/[^/]+/tcp/\d+/p2p/[^/]+", addr):
                raise _RPCError(f"connect: invalid peer address: {addr}")
        with self.owner.lock:
            for addr in addrs:
                if addr not in self.owner.peers:
                    self.owner.peers.append(addr)
        self._json({"Strings": [f"connect {a.rsplit('/', 1)[-1]} success" for a in addrs]})

    def cmd_swarm_peers(self, query, body):
        with self.owner.lock:
            peers = list(self.owner.peers)
        self._json({"Peers": [{"Addr": a.rsplit("/p2p/", 1)[0], "Peer": a.rsplit("/", 1)[-1]} for a in peers]})

    def cmd_pin_add(self, query, body):
        cids = [_cid_arg(a) for a in _args(query, "ipfs-path")]
        recursive = _bool(query, "recursive", True)
        for cid in cids:
            if recursive:
                self.owner._walk(cid, self._offline(query), self._timeout(query))  # Kubo fetches the whole DAG first
            else:
                self.owner._wait_for(cid, self._offline(query), self._timeout(query))
        with self.owner.lock:
            for cid in cids:
                if recursive or self.owner.pinned.get(cid) != "recursive":
                    self.owner.pinned[cid] = "recursive" if recursive else "direct"
        self._json({"Pins": cids})

    def cmd_pin_rm(self, query, body):
        cids = [_cid_arg(a) for a in _args(query, "ipfs-path")]
        recursive = _bool(query, "recursive", True)
        with self.owner.lock:
            for cid in cids:
                kind = self.owner.pinned.get(cid)
                if kind is None or (kind == "recursive" and not recursive):
                    raise _RPCError("not pinned or pinned indirectly" if kind is None else f"{cid} is pinned recursively")
            for cid in cids:
                del self.owner.pinned[cid]
        self._json({"Pins": cids})

    def cmd_pin_ls(self, query, body):
        kind = query.get("type", ["all"])[-1] or "all"
        if kind not in ("all", "direct", "indirect", "recursive"):
            raise _RPCError(f"invalid type '{kind}', must be one of {{direct, indirect, recursive, all}}", status=400, code=1)
        with self.owner.lock:
            keys = {cid: t for cid, t in self.owner.pinned.items() if kind in ("all", t)}
            if kind in ("all", "indirect"):
                for cid in self.owner._reachable():
                    if cid not in self.owner.pinned:
                        keys[cid] = "indirect"
        wanted = [_cid_arg(a) for a in _args(query, "ipfs-path", required=False)]
        if wanted:
            for cid in wanted:
                if cid not in keys:
                    raise _RPCError(f"path '{cid}' is not pinned")
            keys = {cid: keys[cid] for cid in wanted}
        if _bool(query, "stream", False):
            return self._ndjson([{"Cid": cid, "Type": t} for cid, t in sorted(keys.items())])
        self._json({"Keys": {cid: {"Type": t} for cid, t in sorted(keys.items())}})

    def cmd_repo_gc(self, query, body):
        keep = self.owner._reachable()
        with self.owner.lock:
            removed = sorted(cid for cid in self.owner.blocks if cid not in keep)
            for cid in removed:
                del self.owner.blocks[cid]
        if _bool(query, "quiet", False):
            return self._ndjson([])
        self._ndjson([{"Key": {"/": raw_cidv1(cid)}} for cid in removed])

    def cmd_id(self, query, body):
        self._json({
            "ID": self.owner.peer_id,
            "PublicKey": "CAESIStandInNotARealKey",
            "Addresses": [self.owner.swarm_addr],
            "AgentVersion": f"kubo/{self.owner.version}/stand-in",
            "Protocols": [],
        })

    def cmd_version(self, query, body):
        self._json({"Version": self.owner.version, "Commit": "stand-in", "Repo": "16",
                    "System": "amd64/linux", "Golang": "go1.25"})


if __name__ == "__main__":
    standin = KuboStandIn(port=int(sys.argv[1]) if len(sys.argv) > 1 else 5001).start()
    print(f"Kubo stand-in (not Kubo) serving {standin.api}; Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
