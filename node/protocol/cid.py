"""Content identifiers exactly as Kubo's ``ipfs add`` makes them by default.

Defaults reproduced: CIDv0 (base58btc of a sha2-256 multihash), dag-pb nodes holding UnixFS
``File`` data, fixed 262144-byte chunks, balanced layout with at most 174 links per node, leaves
wrapped in dag-pb (no raw leaves). On chain a CID is stored as the 32-byte sha256 digest inside
its multihash; ``cid_to_digest``/``digest_to_cid`` convert between the two.
"""
from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import ArtifactInvalid, ArtifactTooLarge, InvalidCID

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "Block",
    "b58encode",
    "b58decode",
    "cid_of_block",
    "cid_to_digest",
    "digest_to_cid",
    "validate_cid",
    "build_dag",
    "cid_of_bytes",
    "parse_node",
    "MAX_BLOCK_SIZE",
    "Node",
    "FetchLimits",
    "decode_node",
    "encode_file_node",
    "read_file",
]

CHUNK_SIZE = 262_144
MAX_LINKS = 174
MAX_BLOCK_SIZE = 1 << 20  # Kubo's BlockSizeLimit: no block it makes or accepts by default is larger
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_MULTIHASH_PREFIX = b"\x12\x20"  # sha2-256, 32 bytes


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        if c not in _INDEX:
            raise InvalidCID(f"not base58: {text!r}")
        n = n * 58 + _INDEX[c]
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


@functools.lru_cache(maxsize=4096)  # a graph names the same children again and again
def digest_to_cid(digest: bytes) -> str:
    if len(digest) != 32:
        raise InvalidCID("a CIDv0 digest is 32 bytes")
    return b58encode(_MULTIHASH_PREFIX + digest)


def cid_to_digest(cid: str) -> bytes:
    """The sha256 digest inside a CIDv0; raises ``InvalidCID`` for anything else."""
    if not isinstance(cid, str) or len(cid) != 46 or not cid.startswith("Qm"):
        raise InvalidCID(f"malformed CID {cid!r}: expected a CIDv0 (46 characters starting 'Qm')")
    raw = b58decode(cid)
    if len(raw) != 34 or not raw.startswith(_MULTIHASH_PREFIX):
        raise InvalidCID(f"malformed CID {cid!r}: not a sha2-256 multihash")
    return raw[2:]


def validate_cid(cid: str) -> str:
    cid_to_digest(cid)
    return cid


def cid_of_block(block: bytes) -> str:
    return digest_to_cid(hashlib.sha256(block).digest())


# ---------------------------------------------------------------- protobuf, just what dag-pb needs
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            yield number, wire, buf[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")


# ---------------------------------------------------------------- UnixFS over dag-pb
_UNIXFS_FILE = 2


@dataclass(frozen=True)
class Block:
    cid: str
    data: bytes  # the serialized dag-pb node
    file_size: int  # bytes of file content below this node
    tree_size: int  # serialized size of this node and everything below it (a link's Tsize)


def _leaf(chunk: bytes) -> Block:
    unixfs = _field_varint(1, _UNIXFS_FILE)
    if chunk:
        unixfs += _field_bytes(2, chunk)
    unixfs += _field_varint(3, len(chunk))
    node = _field_bytes(1, unixfs)
    return Block(cid_of_block(node), node, len(chunk), len(node))


def _parent(children: list[Block]) -> Block:
    links = b""
    for child in children:
        link = _field_bytes(1, _MULTIHASH_PREFIX + cid_to_digest(child.cid))
        link += _field_bytes(2, b"")
        link += _field_varint(3, child.tree_size)
        links += _field_bytes(2, link)
    file_size = sum(c.file_size for c in children)
    unixfs = _field_varint(1, _UNIXFS_FILE) + _field_varint(3, file_size)
    for child in children:
        unixfs += _field_varint(4, child.file_size)
    node = links + _field_bytes(1, unixfs)
    return Block(cid_of_block(node), node, file_size, len(node) + sum(c.tree_size for c in children))


def encode_file_node(links: list[tuple[str, int]], file_size: int, block_sizes: list[int], data: bytes | None = None) -> bytes:
    """A dag-pb UnixFS file node from its parts, declared sizes taken as given, true or not:
    ``links`` as (child CID, Tsize). For tests and attack simulations; ``build_dag`` makes real files."""
    out = b""
    for cid, tsize in links:
        out += _field_bytes(2, _field_bytes(1, _MULTIHASH_PREFIX + cid_to_digest(cid)) + _field_bytes(2, b"") + _field_varint(3, tsize))
    unixfs = _field_varint(1, _UNIXFS_FILE)
    if data:
        unixfs += _field_bytes(2, data)
    unixfs += _field_varint(3, file_size)
    for size in block_sizes:
        unixfs += _field_varint(4, size)
    return out + _field_bytes(1, unixfs)


def build_dag(data: bytes) -> tuple[str, list[Block]]:
    """Chunk ``data`` and build Kubo's balanced DAG; returns the root CID and every block."""
    level = [_leaf(data[i : i + CHUNK_SIZE]) for i in range(0, max(len(data), 1), CHUNK_SIZE)]
    blocks = list(level)
    while len(level) > 1:
        level = [_parent(level[i : i + MAX_LINKS]) for i in range(0, len(level), MAX_LINKS)]
        blocks.extend(level)
    return level[0].cid, blocks


def cid_of_bytes(data: bytes) -> str:
    """The CID ``ipfs add -Q`` prints for a file with these bytes.

    Streams: only one chunk's leaf and the CIDs and sizes of the nodes above it are held at a
    time, so checking a fetched file costs no second copy of it."""
    view = memoryview(data)
    level = []
    for i in range(0, max(len(view), 1), CHUNK_SIZE):
        leaf = _leaf(bytes(view[i : i + CHUNK_SIZE]))
        level.append(Block(leaf.cid, b"", leaf.file_size, leaf.tree_size))
    while len(level) > 1:
        parents = []
        for i in range(0, len(level), MAX_LINKS):
            node = _parent(level[i : i + MAX_LINKS])
            parents.append(Block(node.cid, b"", node.file_size, node.tree_size))
        level = parents
    return level[0].cid


@dataclass(frozen=True)
class Node:
    """A decoded dag-pb UnixFS file node."""

    links: list[str]  # child CIDs, in file order
    data: bytes | None  # inline file content (leaves)
    file_size: int  # bytes of file content this node declares below it
    block_sizes: list[int]  # the file size it declares for each child, in link order


def decode_node(block: bytes) -> Node:
    """Decode a dag-pb UnixFS file node; ``ValueError`` if it is not one."""
    links: list[str] = []
    unixfs = b""
    try:
        for number, wire, value in _fields(block):
            if number == 2 and wire == 2:
                for n, w, v in _fields(value):  # PBLink
                    if n == 1 and w == 2:
                        if not v.startswith(_MULTIHASH_PREFIX) or len(v) != 34:
                            raise ValueError("link is not a sha2-256 multihash")
                        links.append(digest_to_cid(v[2:]))
            elif number == 1 and wire == 2:
                unixfs = value
        data: bytes | None = None
        size = 0
        kind = None
        block_sizes: list[int] = []
        for n, w, v in _fields(unixfs):
            if n == 1 and w == 0:
                kind = v
            elif n == 2 and w == 2:
                data = v
            elif n == 3 and w == 0:
                size = v
            elif n == 4 and w == 0:
                block_sizes.append(v)
    except ValueError as exc:
        raise ValueError(f"not a dag-pb UnixFS node: {exc}") from None
    if kind not in (_UNIXFS_FILE, 0):  # 0: Raw, as in older leaves
        raise ValueError(f"unsupported UnixFS node type {kind}")
    return Node(links, data, size, block_sizes)


def parse_node(block: bytes) -> tuple[list[str], bytes | None, int]:
    """Decode a dag-pb UnixFS file node: (child CIDs, inline data or None, file size)."""
    node = decode_node(block)
    return node.links, node.data, node.file_size


# ---------------------------------------------------------------- reading a file within a budget
def _levels(leaves: int) -> int:
    """Depth (edges from root to leaf) of the balanced DAG over ``leaves`` chunks."""
    depth = 0
    while leaves > 1:
        leaves = -(-leaves // MAX_LINKS)
        depth += 1
    return depth


@dataclass(frozen=True)
class FetchLimits:
    """What one fetch may cost, all derived from its byte budget.

    A file of at most ``max_bytes`` in Kubo's default layout has at most ``leaves`` chunks, a
    balanced tree of ``max_depth`` levels above them, and fewer than ``max_blocks`` nodes in all.
    Since ``get`` accepts only files whose CID re-derives in that layout, any graph past these
    limits cannot be a valid artifact, however its nodes describe themselves.
    """

    max_bytes: int
    max_depth: int
    max_blocks: int

    @classmethod
    def for_bytes(cls, max_bytes: int) -> "FetchLimits":
        if max_bytes < 0:
            raise ValueError("a fetch budget cannot be negative")
        leaves = max(1, -(-max_bytes // CHUNK_SIZE))
        depth = _levels(leaves)
        return cls(max_bytes, depth, leaves + leaves // (MAX_LINKS - 1) + depth + 1)


def read_file(root: str, get_block: Callable[[str], bytes], max_bytes: int) -> bytes:
    """Assemble the UnixFS file under ``root`` from verified blocks, refusing, while walking,
    any graph that exceeds the budget or whose declared sizes disagree with its content.

    ``get_block(cid)`` returns the block's bytes, already checked against ``cid`` (and at most
    ``MAX_BLOCK_SIZE`` long). Each node's declared size is checked against the budget and its
    parent's claim before anything below it is read, and bytes are counted as leaves are read,
    so memory stays within the budget (plus one block) whatever the graph links to, and however
    often. Raises ``ArtifactTooLarge`` or ``ArtifactInvalid`` naming the reason.
    """
    limits = FetchLimits.for_bytes(max_bytes)
    out = io.BytesIO()  # getvalue() hands over its buffer: no second copy of the file
    total = blocks = 0
    stack: list[tuple[str, int | None, int]] = [(root, None, 0)]  # (cid, size the parent declares, depth)
    while stack:
        cid, expected, depth = stack.pop()
        if depth > limits.max_depth:
            raise ArtifactTooLarge(
                f"DAG too deep: {root} is deeper than the {limits.max_depth} levels a {max_bytes}-byte file needs")
        blocks += 1
        if blocks > limits.max_blocks:
            raise ArtifactTooLarge(
                f"DAG too many blocks: {root} has more than the {limits.max_blocks} a {max_bytes}-byte file needs")
        block = get_block(cid)
        if len(block) > MAX_BLOCK_SIZE:
            raise ArtifactInvalid(f"DAG malformed: block {cid} is {len(block)} bytes, over {MAX_BLOCK_SIZE}")
        try:
            node = decode_node(block)
        except ValueError as exc:
            raise ArtifactInvalid(f"DAG malformed: {cid}: {exc}") from None
        if expected is None and node.file_size > max_bytes:
            raise ArtifactTooLarge(f"DAG too large: {root} declares {node.file_size} bytes, over the {max_bytes}-byte budget")
        if expected is not None and node.file_size != expected:
            raise ArtifactInvalid(f"DAG malformed: {cid} declares {node.file_size} bytes, its parent says {expected}")
        if node.links:
            if len(node.links) > MAX_LINKS:
                raise ArtifactTooLarge(f"DAG too many links: {cid} has {len(node.links)}, over {MAX_LINKS}")
            if node.data:
                raise ArtifactInvalid(f"DAG malformed: {cid} has both links and data")
            if len(node.block_sizes) != len(node.links) or sum(node.block_sizes) != node.file_size:
                raise ArtifactInvalid(f"DAG malformed: the child sizes of {cid} do not add up to its {node.file_size} bytes")
            stack.extend((child, size, depth + 1) for child, size in zip(reversed(node.links), reversed(node.block_sizes)))
            continue
        data = node.data or b""
        if len(data) != node.file_size:
            raise ArtifactInvalid(f"DAG malformed: leaf {cid} holds {len(data)} bytes, declares {node.file_size}")
        total += len(data)
        if total > max_bytes:  # unreachable while sizes are checked above; kept as the last line of defence
            raise ArtifactTooLarge(f"DAG too large: {root} holds more than the {max_bytes}-byte budget")
        out.write(data)
    return out.getvalue()
