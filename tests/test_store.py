"""The embedded store: Kubo's CIDs, verified reads, real pinning and garbage collection."""
import os
import subprocess
import sys

import pytest

from fedchain.node.protocol.cid import cid_of_bytes
from fedchain.node.errors import ArtifactInvalid, ArtifactNotFound, InvalidCID
from fedchain.node.store import EmbeddedStore, open_store


def test_add_returns_kubo_cid_and_get_round_trips(tmp_path):
    store = EmbeddedStore(tmp_path)
    for size in (0, 1, 262_144, 700_000):
        data = os.urandom(size)
        cid = store.add(data)
        assert cid == cid_of_bytes(data)
        assert store.get(cid) == data


def test_gc_removes_unpinned_and_keeps_pinned(tmp_path):
    store = EmbeddedStore(tmp_path)
    kept = store.add(os.urandom(600_000), pin=True)  # multi-block: children must survive too
    dropped = store.add(os.urandom(1000), pin=False)
    removed = store.gc()
    assert dropped in removed
    assert store.get(kept)
    with pytest.raises(ArtifactNotFound):
        store.get(dropped)


def test_unpin_makes_content_collectable(tmp_path):
    store = EmbeddedStore(tmp_path)
    cid = store.add(b"hello")
    store.unpin(cid)
    assert cid not in store.pins()
    store.gc()
    assert not store.has(cid)


def test_corrupted_block_is_detected_on_read(tmp_path):
    store = EmbeddedStore(tmp_path)
    cid = store.add(b"payload that will be tampered with")
    path = store._block_path(cid)
    path.write_bytes(path.read_bytes().replace(b"payload", b"PAYLOAD"))
    with pytest.raises(ArtifactInvalid):
        store.get(cid)


def test_missing_and_malformed_cids(tmp_path):
    store = EmbeddedStore(tmp_path)
    with pytest.raises(ArtifactNotFound):
        store.get(cid_of_bytes(b"never added"))
    with pytest.raises(InvalidCID):
        store.get("not-a-cid")


def test_several_processes_share_one_store(tmp_path):
    code = (
        "import sys; from fedchain.node.store import EmbeddedStore;"
        "s = EmbeddedStore(sys.argv[1]); print(s.add(bytes([int(sys.argv[2])]) * 300000))"
    )
    procs = [subprocess.run([sys.executable, "-c", code, str(tmp_path), str(i)], capture_output=True, text=True, check=True) for i in range(3)]
    store = open_store(f"embedded:{tmp_path}")
    for i, p in enumerate(procs):
        assert store.get(p.stdout.strip()) == bytes([i]) * 300000
    assert sorted(p.stdout.strip() for p in procs) == store.pins()
