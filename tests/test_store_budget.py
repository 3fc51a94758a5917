"""A fetch's byte budget holds while the content graph is walked, in both stores.

The graphs here are what a member can publish: blocks that hash correctly but link one child
many times (the DAG bomb of issue 8: 272,881 bytes that assemble to 2 GiB), declare sizes that
are not true, nest deeper than any file of the budget could, or link thousands of empty leaves.
Each is refused with a named reason, quickly, holding no more than a block or two in memory.
"""
from __future__ import annotations

import os
import time
import tracemalloc

import pytest

from fedchain.node.errors import ArtifactInvalid, ArtifactNotFound, ArtifactTooLarge
from fedchain.node.protocol.cid import (
    CHUNK_SIZE, MAX_BLOCK_SIZE, MAX_LINKS, FetchLimits, build_dag, cid_of_block, cid_of_bytes, decode_node,
    encode_file_node,
)
from fedchain.node.store import EmbeddedStore, KuboStore

from kubo_standin import KuboStandIn

pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter is no longer needed:FutureWarning")

BUDGET = 16 << 20  # the default task's max_update_bytes
QUICK = 2.0  # seconds; refusing a bomb takes milliseconds
SMALL = 4 << 20  # bytes of peak traced memory allowed for refusing a graph: a few blocks


# ---------------------------------------------------------------------------- graph builders
class Blocks:
    """Raw blocks put into an embedded store or a Kubo stand-in (as another member's Kubo would
    hand them over), with the sizes of what was built."""

    def __init__(self, put):
        self.put = put
        self.bytes = 0

    def leaf(self, data: bytes, declared: int | None = None) -> tuple[str, int, int]:
        size = len(data) if declared is None else declared
        return self._put(encode_file_node([], size, [], data), None, size)

    def node(self, child: tuple[str, int, int], n: int, *, sizes: list[int] | None = None, file_size: int | None = None):
        cid, tsize, size = child
        sizes = [size] * n if sizes is None else sizes
        block = encode_file_node([(cid, tsize)] * n, sum(sizes) if file_size is None else file_size, sizes)
        return self._put(block, len(block) + n * tsize, n * size)

    def _put(self, block: bytes, tsize: int | None, size: int):
        self.bytes += len(block)
        return self.put(block), len(block) if tsize is None else tsize, size


def issue_bomb(blocks: Blocks) -> str:
    """The reproduction of issue 8: a 256 KiB zero chunk, a node linking it 174 times, a root
    linking that node 47 times."""
    return blocks.node(blocks.node(blocks.leaf(bytes(CHUNK_SIZE)), MAX_LINKS), 47)[0]


@pytest.fixture
def embedded(tmp_path):
    return EmbeddedStore(tmp_path / "store")


@pytest.fixture
def kubo():
    with KuboStandIn(network_wait=30) as standin:
        yield standin


def _kubo_put(kubo):
    def put(block: bytes) -> str:
        cid = cid_of_block(block)
        kubo.blocks[cid] = block
        return cid
    return put


@pytest.fixture(params=["embedded", "kubo"])
def store_and_blocks(request, tmp_path):
    """Each store, with a way to plant raw blocks in it."""
    if request.param == "embedded":
        store = EmbeddedStore(tmp_path / "store")
        yield store, Blocks(store.put_block)
    else:
        with KuboStandIn(network_wait=30) as kubo:
            store = KuboStore(kubo.api, timeout=10, fetch_timeout=5)
            yield store, Blocks(_kubo_put(kubo))
            store.close()


def _refused(store, cid: str, error=ArtifactInvalid, match: str | None = None, budget: int = BUDGET):
    """Fetch ``cid`` and expect ``error``; return (seconds, peak traced bytes)."""
    tracemalloc.start()
    start = time.monotonic()
    try:
        with pytest.raises(error, match=match):
            store.get(cid, max_bytes=budget)
        return time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------- the issue's bomb
def test_the_issue_bomb_is_272881_bytes_that_declare_2_gib(embedded):
    blocks = Blocks(embedded.put_block)
    root = issue_bomb(blocks)
    assert blocks.bytes == 272_881
    assert decode_node(embedded._block(root)).file_size == 47 * 174 * CHUNK_SIZE == 2_143_813_632


def test_dag_bomb_is_refused_quickly_with_bounded_memory(store_and_blocks):
    store, blocks = store_and_blocks
    root = issue_bomb(blocks)
    seconds, peak = _refused(store, root, ArtifactTooLarge, match="DAG too large: .* declares 2143813632 bytes")
    assert seconds < QUICK
    assert peak < SMALL, f"refusing the bomb traced {peak} bytes"


def test_dag_bomb_with_lying_sizes_is_refused_as_malformed(store_and_blocks):
    """Every node claims 1 KiB: the first child whose own claim differs from its parent's ends it."""
    store, blocks = store_and_blocks
    leaf = blocks.leaf(bytes(CHUNK_SIZE), declared=1024)
    mid = blocks.node(leaf, MAX_LINKS, sizes=[0] * 173 + [1024])
    root = blocks.node(mid, 47, sizes=[0] * 46 + [1024])[0]
    seconds, peak = _refused(store, root, ArtifactInvalid)
    assert seconds < QUICK and peak < SMALL


def test_dag_bomb_without_sizes_is_refused(embedded):
    blocks = Blocks(embedded.put_block)
    leaf = blocks.leaf(bytes(CHUNK_SIZE))
    mid = blocks.node(leaf, MAX_LINKS, sizes=[], file_size=0)
    root = blocks.node(mid, 47, sizes=[], file_size=0)[0]
    _, peak = _refused(embedded, root, ArtifactInvalid, match="DAG malformed: the child sizes")
    assert peak < SMALL


def test_a_leaf_holding_more_than_it_declares_is_refused(embedded):
    blocks = Blocks(embedded.put_block)
    root = blocks.node(blocks.leaf(bytes(CHUNK_SIZE), declared=10), 3)[0]
    _refused(embedded, root, ArtifactInvalid, match="holds 262144 bytes, declares 10")


# ---------------------------------------------------------------------------- links and depth
def test_link_count_bomb_of_empty_leaves_is_refused_by_block_count(store_and_blocks):
    """174 empty leaves under one root: zero bytes, every size true, a depth the budget allows;
    only counting blocks stops the walk (at 66, all a 16 MiB file can have)."""
    store, blocks = store_and_blocks
    root = blocks.node(blocks.leaf(b""), MAX_LINKS)[0]
    if isinstance(store, EmbeddedStore):
        seconds, peak = _refused(store, root, ArtifactTooLarge, match="DAG too many blocks: .* more than the 66")
    else:  # Kubo walks the graph itself; the stream holds nothing, and the CID check refuses it
        seconds, peak = _refused(store, root, ArtifactInvalid, match="does not match its CID")
    assert seconds < QUICK and peak < SMALL


def test_block_count_scales_with_the_budget(embedded):
    """Two levels of empty leaves (30,276), under a 1 GiB budget that allows two levels: the
    walk stops after the 4,122 blocks a 1 GiB file can have."""
    blocks = Blocks(embedded.put_block)
    root = blocks.node(blocks.node(blocks.leaf(b""), MAX_LINKS), MAX_LINKS)[0]
    read = []
    original = embedded._block
    embedded._block = lambda cid: read.append(cid) or original(cid)
    with pytest.raises(ArtifactTooLarge, match="DAG too many blocks"):
        embedded.get(root, max_bytes=1 << 30)
    assert len(read) == FetchLimits.for_bytes(1 << 30).max_blocks == 4122  # refused before one more


def test_a_node_with_more_links_than_kubo_makes_is_refused(embedded):
    blocks = Blocks(embedded.put_block)
    root = blocks.node(blocks.leaf(b"x"), MAX_LINKS + 1)[0]
    _refused(embedded, root, ArtifactTooLarge, match="DAG too many links: .* has 175")


def test_a_graph_deeper_than_the_budget_needs_is_refused(embedded):
    blocks = Blocks(embedded.put_block)
    node = blocks.leaf(b"deep")
    for _ in range(500):
        node = blocks.node(node, 1)
    _, peak = _refused(embedded, node[0], ArtifactTooLarge, match="DAG too deep")
    assert peak < SMALL
    assert FetchLimits.for_bytes(BUDGET).max_depth == 1  # 64 chunks: one level of parents


def test_an_oversized_block_file_is_never_read_whole(embedded):
    big = encode_file_node([], 3 * MAX_BLOCK_SIZE, [], bytes(3 * MAX_BLOCK_SIZE))
    cid = cid_of_block(big)
    path = embedded._block_path(cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(big)  # planted directly: put_block and add never write such a block
    del big
    _, peak = _refused(embedded, cid, ArtifactInvalid, match="corrupted", budget=1 << 30)
    assert peak < 2 * MAX_BLOCK_SIZE + SMALL


# ---------------------------------------------------------------------------- honest files
@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 64 * CHUNK_SIZE])
def test_files_within_the_budget_round_trip(store_and_blocks, size):
    store, _ = store_and_blocks
    data = os.urandom(size)
    cid = store.add(data)
    assert store.get(cid, max_bytes=max(size, 1)) == data


def test_a_file_one_byte_over_the_budget_is_refused_at_its_root(embedded):
    data = os.urandom(3 * CHUNK_SIZE)
    cid = embedded.add(data)
    read = []
    original = embedded._block
    embedded._block = lambda c: read.append(c) or original(c)
    with pytest.raises(ArtifactTooLarge, match="over the 786431-byte budget"):
        embedded.get(cid, max_bytes=len(data) - 1)
    assert read == [cid]  # only the root was read


def test_kubo_file_over_the_budget_is_refused_before_cat(kubo):
    store = KuboStore(kubo.api, timeout=10, fetch_timeout=5)
    try:
        cid = store.add(os.urandom(3 * CHUNK_SIZE))
        with pytest.raises(ArtifactTooLarge):
            store.get(cid, max_bytes=CHUNK_SIZE)
        assert [c for c in kubo.commands() if c in ("block/get", "cat")] == ["block/get"]
        data = os.urandom(1000)
        assert store.get(store.add(data), max_bytes=1000) == data
        cats = [q for c, q in kubo.calls if c == "cat"]
        assert cats[-1]["length"] == ["1001"]  # the stream is cut off at the declared size
    finally:
        store.close()


def test_memory_of_a_fetch_is_the_budget_plus_a_small_constant(embedded):
    data = os.urandom(8 << 20)
    cid = embedded.add(data)
    tracemalloc.start()
    try:
        out = embedded.get(cid, max_bytes=len(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out == data
    assert peak < len(data) * 1.3 + SMALL, f"a {len(data)}-byte fetch traced {peak} bytes"


def test_cid_of_bytes_agrees_with_build_dag():
    for size in (0, 5, CHUNK_SIZE, 175 * CHUNK_SIZE + 3):
        data = os.urandom(size)
        assert cid_of_bytes(data) == build_dag(data)[0]


# ---------------------------------------------------------------------------- two organizations
def test_a_kubo_fetches_blocks_it_lacks_from_a_peered_kubo():
    """Two organizations, one Kubo each: B is configured with A in ``Peering.Peers``."""
    with KuboStandIn(network_wait=30) as a:
        with KuboStandIn(network_wait=30, peering=[a.swarm_addr]) as b:
            publisher, reader = KuboStore(a.api, timeout=10), KuboStore(b.api, timeout=10, fetch_timeout=5)
            try:
                data = os.urandom(3 * CHUNK_SIZE + 7)
                cid = publisher.add(data)
                assert not reader.has(cid)
                assert reader.get(cid, max_bytes=len(data)) == data
                assert reader.has(cid)  # B keeps what it fetched, as Kubo does
                assert all(block.cid in b.blocks for block in build_dag(data)[1])
            finally:
                publisher.close()
                reader.close()


def test_unpeered_kubo_does_not_find_the_update_and_swarm_connect_fixes_it():
    with KuboStandIn(network_wait=30) as a, KuboStandIn(network_wait=30) as b:
        publisher, reader = KuboStore(a.api, timeout=10), KuboStore(b.api, timeout=10, fetch_timeout=1)
        try:
            cid = publisher.add(b"an update of organization A")
            start = time.monotonic()
            with pytest.raises(ArtifactNotFound):
                reader.get(cid)
            assert time.monotonic() - start < 5  # the fetch timeout, not the daemon's 30 s search
            reader._call(reader._client._client.request, "/swarm/connect", (a.swarm_addr,), decoder="json")
            assert reader.get(cid) == b"an update of organization A"
        finally:
            publisher.close()
            reader.close()


def test_a_bomb_held_by_a_peered_kubo_is_refused_without_fetching_it(kubo):
    with KuboStandIn(network_wait=30, peering=[kubo.swarm_addr]) as reader_node:
        reader = KuboStore(reader_node.api, timeout=10, fetch_timeout=5)
        try:
            root = issue_bomb(Blocks(_kubo_put(kubo)))
            _refused(reader, root, ArtifactTooLarge)
            assert list(reader_node.blocks) == [root]  # only the root crossed over
        finally:
            reader.close()


def test_a_daemon_that_sends_more_than_declared_is_cut_off(kubo, monkeypatch):
    """Whatever ``length`` says, the client stops reading at the declared size: a daemon that
    streams 256 MiB for a 1000-byte file costs the reader a chunk or two, not 256 MiB."""
    import kubo_standin

    def endless_cat(handler, query, body):
        handler._start_stream("text/plain", {"X-Stream-Output": "1"})
        try:
            for _ in range(4096):
                handler._chunk(bytes(65536))
            handler._end_stream({})
        except OSError:
            pass  # the reader hung up, as it should

    monkeypatch.setattr(kubo_standin._Handler, "cmd_cat", endless_cat)
    store = KuboStore(kubo.api, timeout=10, fetch_timeout=10)
    try:
        cid = store.add(os.urandom(1000))
        seconds, peak = _refused(store, cid, ArtifactTooLarge, match="Kubo sent more than the 1000 bytes")
        assert seconds < QUICK and peak < SMALL
    finally:
        store.close()
