"""KuboStore over HTTP, against a stand-in for Kubo's RPC API (tests/kubo_standin.py).

Real Kubo cannot be installed here. The stand-in answers the requests ipfshttpclient 0.7 sends
the way Kubo does (shapes, status codes, error JSON, offline semantics, chunked uploads), so
these tests exercise KuboStore's real HTTP path: the client library, its parsing, and
KuboStore's mapping of Kubo's answers to fedchain's errors. CIDs are checked against the Kubo
vectors in tests/data/, not only against the stand-in's own arithmetic.

Bugs these tests found in KuboStore (online lookups that waited for the client's timeout, gc
keys reported as CIDv1, `--store` only before the subcommand) stay pinned by them.
"""
from __future__ import annotations

import os
import socket
import time

import pytest

from fedchain.node.protocol.cid import build_dag, cid_of_bytes
from fedchain.node.errors import ArtifactInvalid, ArtifactNotFound, StoreUnavailable
from fedchain.node.store import EmbeddedStore, KuboStore, open_store

from _support import clean_env, kubo_vectors, run_cli
from kubo_standin import KuboStandIn, raw_cidv1

# ipfshttpclient 0.7 hands urllib3 2.x a `strict` argument it no longer needs.
pytestmark = pytest.mark.filterwarnings("ignore:The 'strict' parameter is no longer needed:FutureWarning")

VECTORS = {v["size"]: v["cid"] for v in kubo_vectors()}
SIZES = [0, 1, 1000, 262_143, 262_144, 262_145, 1_000_000, 3_000_000]  # up to 12 leaves under one root
QUICK = 5.0  # seconds: "fails fast", with ample margin over the milliseconds it really takes


def _content(n: int) -> bytes:
    period = bytes((i * 7 + 3) % 251 for i in range(251))  # the generator of the Kubo vectors
    return (period * (n // 251 + 1))[:n]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


@pytest.fixture
def kubo():
    # An online lookup of a missing block "searches the network" for 30 s, like a daemon that
    # cannot find a provider: a KuboStore call that lands there shows up as a slow test.
    with KuboStandIn(network_wait=30) as standin:
        yield standin


@pytest.fixture
def store(kubo):
    s = KuboStore(kubo.api, timeout=10)
    yield s
    s.close()


# ---------------------------------------------------------------------------- add and get
@pytest.mark.parametrize("size", SIZES)
def test_add_returns_kubos_cid_same_as_embedded_store(size, store, tmp_path):
    data = _content(size)
    cid = store.add(data)
    assert cid == VECTORS[size] == cid_of_bytes(data) == EmbeddedStore(tmp_path).add(data)
    assert store.get(cid) == data


def test_add_of_a_two_level_dag(store, kubo):
    """Past 174 chunks Kubo adds a second level of parent nodes; add and get must still agree."""
    data = _content(45_613_057)
    cid = store.add(data)
    assert cid == VECTORS[45_613_057]
    assert len(kubo.blocks) == len(build_dag(data)[1]) == 174 + 1 + 2 + 1
    assert store.get(cid) == data


def test_add_uses_default_import_settings_and_honours_pin(store, kubo):
    pinned = store.add(b"pinned")
    unpinned = store.add(b"not pinned", pin=False)
    adds = [query for command, query in kubo.calls if command == "add"]
    assert [q["pin"] for q in adds] == [["true"], ["false"]]
    for q in adds:
        assert not {"cid-version", "raw-leaves", "chunker", "hash", "trickle", "only-hash"} & set(q)
    assert pinned in store.pins() and unpinned not in store.pins()
    assert store.get(unpinned) == b"not pinned"


def test_get_verifies_what_kubo_returns(store, kubo):
    cid = store.add(b"the real content")
    impostor = build_dag(b"something else")[1][0].data
    kubo.blocks[cid] = impostor  # a daemon (or a disk) handing back the wrong bytes
    with pytest.raises(ArtifactInvalid):
        store.get(cid)


def test_get_of_unknown_cid_searches_the_network_only_until_the_fetch_timeout(kubo):
    """Reads go to the network (another organization's Kubo may have the update), bounded by
    ``fetch_timeout``, which Kubo is told too; ``has`` stays a local question."""
    store = KuboStore(kubo.api, timeout=10, fetch_timeout=1)
    missing = cid_of_bytes(b"nobody ever added this")
    start = time.monotonic()
    try:
        with pytest.raises(ArtifactNotFound):
            store.get(missing)
        assert not store.has(missing)
        assert time.monotonic() - start < QUICK
    finally:
        store.close()
    reads = [query for command, query in kubo.calls if command in ("cat", "block/get")]
    assert reads and all("offline" not in q and q["timeout"][0].endswith("s") for q in reads)
    assert [q.get("offline") for command, q in kubo.calls if command == "block/stat"] == [["true"]]


def test_malformed_cid_is_rejected_before_any_request(store, kubo):
    from fedchain.node.errors import InvalidCID

    with pytest.raises(InvalidCID):
        store.get("not-a-cid")
    with pytest.raises(InvalidCID):
        store.pin("bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi")
    assert kubo.calls == []


def test_get_of_a_partial_dag_is_not_found_within_the_fetch_timeout(kubo):
    store = KuboStore(kubo.api, timeout=2, fetch_timeout=1)
    data = _content(600_000)  # three leaves and a root
    cid = store.add(data)
    leaf = build_dag(data)[1][1].cid
    del kubo.blocks[leaf]
    start = time.monotonic()
    try:
        with pytest.raises(ArtifactNotFound):
            store.get(cid)
        assert time.monotonic() - start < QUICK
    finally:
        store.close()


# ---------------------------------------------------------------------------- unreachable daemon
@pytest.fixture
def dead_store():
    s = KuboStore(f"/ip4/127.0.0.1/tcp/{_closed_port()}/http", timeout=5)
    yield s
    s.close()


@pytest.mark.parametrize("call", ["add", "pins", "gc", "ping", "pin", "unpin"])
def test_unreachable_daemon_raises_store_unavailable(dead_store, call):
    cid = cid_of_bytes(b"x")
    args = {"add": (b"x",), "pin": (cid,), "unpin": (cid,)}.get(call, ())
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        getattr(dead_store, call)(*args)
    assert time.monotonic() - start < QUICK


def test_get_from_unreachable_daemon_raises_store_unavailable(dead_store):
    with pytest.raises(StoreUnavailable):
        dead_store.get(cid_of_bytes(b"x"))


def test_bad_api_address_is_a_config_error():
    from fedchain.node.errors import ConfigError

    with pytest.raises(ConfigError):
        open_store("kubo:/ip4/127.0.0.1/udp/5001")


# ---------------------------------------------------------------------------- pins and gc
def test_pin_unpin_and_pins(store):
    a = store.add(b"a", pin=False)
    b = store.add(b"b")
    assert store.pins() == [b]
    store.pin(a)
    assert store.pins() == sorted([a, b]) and all(isinstance(c, str) for c in store.pins())
    store.unpin(b)
    assert store.pins() == [a]
    store.unpin(b)  # unpinning what is not pinned is not an error (as in EmbeddedStore)
    assert store.pins() == [a]


def test_pin_of_unknown_cid_is_not_found_without_waiting(kubo):
    store = KuboStore(kubo.api, timeout=2)
    start = time.monotonic()
    try:
        with pytest.raises(ArtifactNotFound):
            store.pin(cid_of_bytes(b"nobody has this"))
        assert time.monotonic() - start < QUICK
    finally:
        store.close()


def test_gc_removes_unpinned_content_and_keeps_pinned(store, kubo):
    kept_data, dropped_data = os.urandom(600_000), os.urandom(700_000)  # multi-block, both
    kept = store.add(kept_data)
    dropped = store.add(dropped_data, pin=False)
    removed = store.gc()
    assert len(removed) == len(build_dag(dropped_data)[1])  # every block of it, nothing else
    assert store.get(kept) == kept_data
    assert not store.has(dropped)
    with pytest.raises(ArtifactNotFound):
        store.get(dropped)
    assert store.gc() == []


def test_unpin_makes_content_collectable(store):
    cid = store.add(b"temporary")
    store.unpin(cid)
    store.gc()
    assert not store.has(cid)


@pytest.mark.parametrize("kind", [
    "embedded",
    "kubo",
])
def test_gc_reports_removed_blocks_by_the_cids_add_returned(kind, kubo, tmp_path):
    store = EmbeddedStore(tmp_path) if kind == "embedded" else KuboStore(kubo.api, timeout=10)
    data = os.urandom(600_000)
    store.add(data, pin=False)
    assert sorted(store.gc()) == sorted(block.cid for block in build_dag(data)[1])


def test_standin_reports_gc_keys_the_way_kubo_does(store, kubo):
    """Guards the stand-in itself: gc keys are raw CIDv1 of the block's multihash."""
    from cid import make_cid  # py-cid, an independent CID implementation (an ipfshttpclient dependency)

    cid = store.add(b"one block", pin=False)
    expected = make_cid(1, "raw", make_cid(cid).multihash).encode("base32").decode()
    assert expected.startswith("bafkrei") and raw_cidv1(cid) == expected
    assert [raw_cidv1(c) for c in store.gc()] == [expected]


def test_ping(store, kubo):
    store.ping()
    assert kubo.commands() == ["id"]


# ---------------------------------------------------------------------------- the CLI
def test_cli_store_add_prints_the_cid(kubo, tmp_path):
    data = _content(300_000)
    path = tmp_path / "update.bin"
    path.write_bytes(data)
    r = run_cli(["store", "--store", f"kubo:{kubo.api}", "add", str(path)], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == cid_of_bytes(data)
    assert cid_of_bytes(data) in kubo.pinned


def test_cli_store_add_reads_the_store_from_the_environment(kubo, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"from the environment")
    r = run_cli(["store", "add", "--no-pin", str(path)], env=clean_env(FEDCHAIN_STORE=f"kubo:{kubo.api}"), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == cid_of_bytes(b"from the environment")
    assert r.stdout.strip() in kubo.blocks and r.stdout.strip() not in kubo.pinned


def test_cli_store_add_accepts_store_after_the_subcommand(kubo, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    r = run_cli(["store", "add", str(path), "--store", f"kubo:{kubo.api}"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == cid_of_bytes(b"x")


def test_cli_store_get_pins_and_gc_round_trip(kubo, tmp_path):
    spec = f"kubo:{kubo.api}"
    kept = KuboStore(kubo.api).add(b"kept")
    dropped = KuboStore(kubo.api).add(b"dropped", pin=False)
    out = tmp_path / "out"
    r = run_cli(["store", "--store", spec, "get", kept, "-o", str(out)], timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"kept"
    r = run_cli(["store", "--store", spec, "pins"], timeout=60)
    assert r.returncode == 0 and r.stdout.split() == [kept]
    r = run_cli(["store", "--store", spec, "gc"], timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "removed 1 blocks"
    assert dropped not in kubo.blocks and kept in kubo.blocks


def test_cli_store_add_with_kubo_down_is_one_clean_error(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    r = run_cli(["store", "--store", f"kubo:/ip4/127.0.0.1/tcp/{_closed_port()}/http", "add", str(path)], timeout=60)
    assert r.returncode == 1
    assert "unreachable" in r.stderr and "Traceback" not in r.stderr
