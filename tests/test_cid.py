"""CIDs must be exactly the ones real Kubo computes with default `ipfs add` settings."""
import pytest

from fedchain.node.protocol.cid import b58decode, b58encode, cid_of_bytes, cid_to_digest, digest_to_cid
from fedchain.node.errors import InvalidCID

from _support import kubo_vectors

VECTORS = kubo_vectors()


def _content(n: int) -> bytes:
    period = bytes((i * 7 + 3) % 251 for i in range(251))  # the generator repeats every 251 bytes
    return (period * (n // 251 + 1))[:n]


@pytest.mark.parametrize("vector", VECTORS, ids=[str(v["size"]) for v in VECTORS])
def test_cid_matches_kubo_vector(vector):
    assert cid_of_bytes(_content(vector["size"])) == vector["cid"]


def test_generator_shortcut_is_the_documented_generator():
    assert _content(1000) == bytes((i * 7 + 3) % 251 for i in range(1000))


def test_digest_round_trips_through_cid():
    cid = VECTORS[3]["cid"]
    assert digest_to_cid(cid_to_digest(cid)) == cid
    assert len(cid_to_digest(cid)) == 32


def test_base58_keeps_leading_zero_bytes():
    assert b58decode(b58encode(b"\0\0\x01\x02")) == b"\0\0\x01\x02"


@pytest.mark.parametrize("bad", ["", "Qm", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
                                 "Qm" + "0" * 44, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ", 42])
def test_malformed_cids_are_rejected(bad):
    with pytest.raises(InvalidCID):
        cid_to_digest(bad)
