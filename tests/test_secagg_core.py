"""The cryptographic core of secure aggregation (Bonawitz et al., CCS 2017): pure functions, no chain.

A bucket of members deals Shamir shares of its two round seeds, masks its int64 updates modulo
2^64, some members drop out, the survivors reveal pair keys, and the exact sum of the survivors'
updates comes back, while hostile bundles and reveals are refused or ignored."""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
from Crypto.Cipher import AES
from Crypto.Protocol.SecretSharing import Shamir

from fedchain.node.errors import ArtifactInvalid
from fedchain.node.secagg import (
    ShareBundle, Unmask, agree, combine, deal, decode_bundle, decode_unmask, derive, encode_bundle, encode_unmask,
    encrypt_share, identity_private, mask, mask_private, open_share, pair_keys, pair_seed, prg, public_key,
    reconstruct, round_seeds, self_commitment, split, unmask_sum,
)

pytestmark = pytest.mark.timeout(60)

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
TASK = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
ROUND = 3
MAX_BYTES = 1 << 16
LOW_ORDER = [bytes(32), b"\x01" + bytes(31)]  # X25519 points of order 1 and 4...: shared secret all zero


def _account(i: int) -> bytes:
    return hashlib.sha256(b"account %d" % i).digest()


def _peer(i: int) -> str:
    return "0x" + hashlib.sha256(b"peer %d" % i).hexdigest()[:40]


class Bucket:
    """Members 0..n-1 of one bucket, each dealing its share bundle, as the chain protocol would."""

    def __init__(self, n: int = 5, threshold: int = 3, members: list[int] | None = None):
        self.members = members if members is not None else list(range(n))
        self.threshold = threshold
        self.id_private = {i: identity_private(_account(i), CONTRACT) for i in self.members}
        self.id_public = {i: public_key(k) for i, k in self.id_private.items()}
        self.seeds = {i: round_seeds(_account(i), CONTRACT, ROUND) for i in self.members}
        self.raw = {i: deal(account_key=_account(i), contract=CONTRACT, task=TASK, round_=ROUND, dealer=i,
                            peer=_peer(i), threshold=threshold, holders=self.id_public) for i in self.members}
        self.bundles = {i: self.decode(self.raw[i], i) for i in self.members}

    def decode(self, data: bytes, dealer: int, **over) -> ShareBundle:
        expected = dict(max_bytes=MAX_BYTES, task=TASK, round_=ROUND, peer=_peer(dealer), dealer=dealer,
                        holders=set(self.members), threshold=self.threshold)
        expected.update(over)
        return decode_bundle(data, **expected)

    def masked(self, q: dict[int, np.ndarray], survivors: list[int]) -> dict[int, np.ndarray]:
        out = {}
        for i in survivors:
            peers = {j: self.bundles[j].mask_public for j in self.members if j != i}
            out[i] = mask(q[i], me=i, mask_private=mask_private(self.seeds[i][0]), self_seed=self.seeds[i][1],
                          peers=peers, task=TASK, round_=ROUND)
        return out

    def key(self, holder: int, dealer: int, kind: str) -> bytes:
        mask_key, self_key = pair_keys(self.id_private[holder], self.id_public[dealer], task=TASK, round_=ROUND,
                                       dealer=dealer, holder=holder)
        return mask_key if kind == "mask" else self_key

    def unmask(self, holder: int, needed: dict[int, str]) -> Unmask:
        keys = {(d, kind): self.key(holder, d, kind) for d, kind in needed.items()}
        data = encode_unmask(task=TASK, round_=ROUND, peer=_peer(holder), holder=holder, keys=keys)
        return decode_unmask(data, max_bytes=MAX_BYTES, task=TASK, round_=ROUND, peer=_peer(holder), holder=holder,
                             members=max(self.members) + 1)


def _updates(members, n=1000, seed=0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i: rng.integers(-(1 << 42), 1 << 42, n, dtype=np.int64) for i in members}


# ---- masking -------------------------------------------------------------------------------------

def test_masks_of_five_members_cancel_exactly():
    b = Bucket(5)
    rng = np.random.default_rng(1)
    q = {i: rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, 2000, dtype=np.int64, endpoint=True)
         for i in b.members}
    masked = b.masked(q, b.members)
    total = unmask_sum(masked, self_seeds={i: b.seeds[i][1] for i in b.members}, dropped={},
                       mask_publics={i: b.bundles[i].mask_public for i in b.members}, task=TASK, round_=ROUND)
    assert total.dtype == np.int64
    assert np.array_equal(total, np.sum(np.stack([q[i] for i in b.members]), axis=0))  # both wrap modulo 2^64
    for i in b.members:  # every single masked vector differs from its update everywhere (w.h.p.)
        assert not np.any(masked[i].view(np.int64) == q[i])


def test_a_masked_vector_is_uncorrelated_with_its_update():
    b = Bucket(3)
    q = {i: np.arange(10_000, dtype=np.int64) * (1 << 40) for i in b.members}  # strongly structured
    y = b.masked(q, [0])[0].view(np.int64).astype(np.float64)
    x = q[0].astype(np.float64)
    cosine = float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
    assert abs(cosine) < 0.01


def test_mask_refuses_misuse():
    b = Bucket(3)
    kw = dict(me=0, mask_private=mask_private(b.seeds[0][0]), self_seed=b.seeds[0][1], task=TASK, round_=ROUND)
    with pytest.raises(ValueError):
        mask(np.zeros(4, dtype=np.float64), peers={}, **kw)
    with pytest.raises(ValueError):
        mask(np.zeros(4, dtype=np.int64), peers={0: b.bundles[0].mask_public}, **kw)
    with pytest.raises(ArtifactInvalid):
        mask(np.zeros(4, dtype=np.int64), peers={1: LOW_ORDER[0]}, **kw)


def test_pair_seed_is_symmetric_and_bound_to_its_context():
    k1, k2 = mask_private(b"\x01" * 16), mask_private(b"\x02" * 16)
    s12 = pair_seed(k1, public_key(k2), task=TASK, round_=ROUND, a=1, b=2)
    assert s12 == pair_seed(k2, public_key(k1), task=TASK, round_=ROUND, a=2, b=1) and len(s12) == 32
    assert s12 != pair_seed(k1, public_key(k2), task=TASK, round_=ROUND + 1, a=1, b=2)
    assert s12 != pair_seed(k1, public_key(k2), task=TASK + "x", round_=ROUND, a=1, b=2)
    assert s12 != pair_seed(k1, public_key(k2), task=TASK, round_=ROUND, a=1, b=3)


# ---- the PRG -------------------------------------------------------------------------------------

def test_prg_known_answer_and_determinism():
    seed = bytes(range(32))
    first = prg(seed, 4)
    assert first.dtype == np.uint64
    assert [int(v) for v in first] == [0xD09F492AB60090F2, 0x80772EDD6A9AF3A9, 0xE59FB94AAE765DF0,
                                       0x3D36C248319BF6A6]
    long = prg(seed, 300_000)  # spans more than one counter-block carry in the low byte; prefix-stable
    assert np.array_equal(long[:4], first) and np.array_equal(prg(seed, 300_000), long)
    assert prg(seed, 0).shape == (0,)
    assert not np.array_equal(prg(bytes(32), 4), first)


def test_prg_is_aes256_ctr_from_a_zero_counter():
    """An independent implementation (pycryptodome) gives the same keystream."""
    seed = hashlib.sha256(b"prg").digest()
    n = (1 << 20) + 3  # crosses the internal chunk boundary
    stream = AES.new(seed, AES.MODE_CTR, nonce=b"", initial_value=0).encrypt(bytes(8 * n))
    assert np.array_equal(prg(seed, n), np.frombuffer(stream, dtype="<u8"))


# ---- keys ----------------------------------------------------------------------------------------

def test_derivations_are_separated_and_unambiguous():
    s = bytes(32)
    assert derive(s, "a", "bc") != derive(s, "a", "b", "c") != derive(s, "ab", "c")
    assert derive(s, "a", 1) != derive(s, "a", (1).to_bytes(32, "big")) != derive(s, "a", "1")
    with pytest.raises(ValueError):
        derive(s, "a", True)
    with pytest.raises(ValueError):
        derive(s, "a", -1)


def test_member_keys_are_restart_safe_and_per_deployment_and_round():
    acct = _account(0)
    assert identity_private(acct, CONTRACT) == identity_private(acct, CONTRACT.lower())
    assert identity_private(acct, CONTRACT) != identity_private(acct, "0x" + "11" * 20)
    assert identity_private(acct, CONTRACT) != identity_private(_account(1), CONTRACT)
    m3, s3 = round_seeds(acct, CONTRACT, 3)
    assert len(m3) == len(s3) == 16 and m3 != s3
    assert round_seeds(acct, CONTRACT, 3) == (m3, s3) and round_seeds(acct, CONTRACT, 4)[0] != m3
    with pytest.raises(ValueError):
        identity_private(acct[:31], CONTRACT)


def test_agree_refuses_low_order_points():
    me = identity_private(_account(0), CONTRACT)
    for point in LOW_ORDER:
        with pytest.raises(ArtifactInvalid):
            agree(me, point)
    with pytest.raises(ValueError):
        agree(me, b"\x09" * 31)


# ---- Shamir --------------------------------------------------------------------------------------

def test_shamir_at_arbitrary_holder_indices():
    secret = hashlib.sha256(b"s").digest()[:16]
    holders = [0, 7, 42, 200, 254, 255]
    shares = split(secret, 4, holders)
    assert sorted(shares) == holders and all(len(v) == 16 for v in shares.values())
    for subset in ([0, 7, 42, 200], [255, 254, 42, 0], [7, 200, 254, 255]):
        assert combine([(h, shares[h]) for h in subset]) == secret
    assert combine([(h, shares[h]) for h in holders[:3]]) != secret
    assert combine([(h, shares[h]) for h in holders]) == secret  # more points on the same polynomial
    assert set(split(secret, 1, [3, 9]).values()) == {secret}


def test_shamir_agrees_with_pycryptodome_numbering():
    secret = b"0123456789abcdef"
    theirs = Shamir.split(3, 5, secret)  # shares at x = 1..5
    assert combine([(x - 1, share) for x, share in theirs[2:]]) == secret
    ours = split(secret, 3, [0, 1, 2, 3, 4])
    assert Shamir.combine([(h + 1, ours[h]) for h in (4, 1, 3)]) == secret


def test_shamir_combine_is_pycryptodomes_interpolation_at_every_threshold():
    """Our recombination (cached Lagrange coefficients, own field arithmetic) against
    pycryptodome's, on random polynomials of every degree up to 16 and random holder subsets."""
    import random

    rng = random.Random(7)
    for t in range(1, 17):
        secret = rng.randbytes(16)
        shares = split(secret, t, rng.sample(range(256), 20))
        points = rng.sample(sorted(shares.items()), t)
        assert combine(points) == secret == Shamir.combine([(h + 1, v) for h, v in points])
        wrong = [(h, bytes(16) if i == 0 else v) for i, (h, v) in enumerate(points)]
        if t > 1:
            assert combine(wrong) == Shamir.combine([(h + 1, v) for h, v in wrong]) != secret


def test_shamir_refuses_misuse():
    with pytest.raises(ValueError):
        split(b"short", 2, [0, 1])
    with pytest.raises(ValueError):
        split(bytes(16), 3, [0, 1])
    with pytest.raises(ValueError):
        split(bytes(16), 1, [0, 256])
    with pytest.raises(ValueError):
        combine([(1, bytes(16)), (1, bytes(16))])


# ---- end to end: deal, mask, drop out, reveal, reconstruct, unmask ---------------------------------

@pytest.mark.parametrize("dropped", [[2], [0, 4]])
def test_dropouts_are_recovered_end_to_end(dropped):
    b = Bucket(5, threshold=3)
    survivors = [i for i in b.members if i not in dropped]
    q = _updates(b.members)
    masked = b.masked(q, survivors)
    needed = {i: ("mask" if i in dropped else "self") for i in b.members}
    unmasks = [b.unmask(h, needed) for h in survivors]  # dropped members reveal nothing
    seeds = reconstruct(b.bundles, unmasks, needed)
    assert seeds == {i: b.seeds[i][0] if i in dropped else b.seeds[i][1] for i in b.members}
    total = unmask_sum(masked, self_seeds={i: seeds[i] for i in survivors}, dropped={d: seeds[d] for d in dropped},
                       mask_publics={i: b.bundles[i].mask_public for i in b.members}, task=TASK, round_=ROUND)
    assert np.array_equal(total, np.sum(np.stack([q[i] for i in survivors]), axis=0))


def test_shares_are_for_their_holder_kind_and_round_only():
    b = Bucket(4)
    bundle = b.bundles[1]
    mask_key, self_key = b.key(2, 1, "mask"), b.key(2, 1, "self")
    assert pair_keys(b.id_private[1], b.id_public[2], task=TASK, round_=ROUND, dealer=1, holder=2) == (mask_key,
                                                                                                         self_key)
    assert open_share(bundle, 2, mask_key, "mask") is not None and open_share(bundle, 2, self_key, "self") is not None
    assert open_share(bundle, 2, mask_key, "self") is None  # a mask key does not open the self share
    assert open_share(bundle, 3, mask_key, "mask") is None  # nor another holder's
    assert open_share(bundle, 9, mask_key, "mask") is None and open_share(bundle, 2, b"short", "mask") is None
    other_round = pair_keys(b.id_private[2], b.id_public[1], task=TASK, round_=ROUND + 1, dealer=1, holder=2)
    assert open_share(bundle, 2, other_round[0], "mask") is None


def test_threshold_minus_one_shares_do_not_reconstruct():
    b = Bucket(5, threshold=3)
    needed = {4: "mask"}
    assert reconstruct(b.bundles, [b.unmask(h, needed) for h in (0, 1)], needed) == {4: None}
    assert reconstruct(b.bundles, [b.unmask(h, needed) for h in (0, 1, 2)], needed) == {4: b.seeds[4][0]}
    assert reconstruct({}, [b.unmask(h, needed) for h in (0, 1, 2)], needed) == {4: None}  # no bundle


def test_a_wrong_or_garbled_revealed_key_is_ignored():
    b = Bucket(5, threshold=3)
    needed = {4: "mask"}
    good = [b.unmask(h, needed) for h in b.members]
    garbled = replace(good[0], keys={(4, "mask"): bytes(32)})
    wrong_kind = replace(good[1], keys={(4, "mask"): b.key(1, 4, "self")})
    wrong_round = replace(good[2], round=ROUND + 1)
    assert reconstruct(b.bundles, [garbled, wrong_kind, wrong_round] + good[2:], needed) == {4: b.seeds[4][0]}
    assert reconstruct(b.bundles, [garbled, wrong_kind, good[2]], needed) == {4: None}  # one valid share only
    duplicate = [good[0], good[0], good[0]]  # one holder counts once
    assert reconstruct(b.bundles, duplicate, needed) == {4: None}


def _cheating_bundle(b: Bucket, dealer: int) -> ShareBundle:
    """The dealer's bundle with the mask-seed shares of holders 2.. taken from another polynomial."""
    mask_seed = b.seeds[dealer][0]
    first, second = split(mask_seed, b.threshold, b.members), split(mask_seed, b.threshold, b.members)
    cts = dict(b.bundles[dealer].ciphertexts)
    for h in b.members:
        share = first[h] if h < 2 else second[h]
        ct = encrypt_share(b.key(h, dealer, "mask"), share, task=TASK, round_=ROUND, dealer=dealer, holder=h,
                           kind="mask")
        cts[h] = (ct, cts[h][1])
    return replace(b.bundles[dealer], ciphertexts=cts)


def test_a_dealer_with_inconsistent_shares_gives_none_not_an_exception():
    b = Bucket(5, threshold=3)
    bundles = dict(b.bundles)
    bundles[4] = _cheating_bundle(b, 4)
    bundles[4] = b.decode(encode_bundle(bundles[4]), 4)  # a well-formed bundle: only the shares are wrong
    needed = {4: "mask", 3: "self"}
    unmasks = [b.unmask(h, needed) for h in b.members]
    assert reconstruct(bundles, unmasks, needed) == {4: None, 3: b.seeds[3][1]}
    # a bundle whose mask public key or self commitment lies about the seed
    liar = replace(b.bundles[3], mask_public=b.bundles[2].mask_public, self_commitment=bytes(32))
    assert reconstruct({3: liar}, unmasks, {3: "mask"}) == {3: None}
    assert reconstruct({3: liar}, unmasks, {3: "self"}) == {3: None}


# ---- hostile bundles and reveals -----------------------------------------------------------------

def _edit(data: bytes, **changes) -> bytes:
    obj = json.loads(data)
    obj.update(changes)
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def test_a_bundle_round_trips_and_accepts_the_dealer_address_in_any_case():
    b = Bucket(4)
    assert encode_bundle(b.bundles[1]) == b.raw[1]
    assert b.decode(b.raw[1], 1, peer=_peer(1).upper().replace("0X", "0x")) == b.bundles[1]
    assert b.bundles[1].self_commitment == self_commitment(b.seeds[1][1], task=TASK, round_=ROUND, dealer=1)
    assert b.bundles[1].mask_public == public_key(mask_private(b.seeds[1][0]))


def test_malformed_bundles_are_artifact_invalid():
    b = Bucket(4)
    raw = b.raw[1]
    obj = json.loads(raw)
    cts = obj["ciphertexts"]
    bad = {  # name -> (bytes, what the one-line message must say)
        "oversize": (raw + b" " * MAX_BYTES, "more than the"),
        "not json": (b"{not json", "not valid JSON"),
        "not utf8": (b"\xff\xfe", "not valid JSON"),
        "not an object": (b"[]", "not a JSON object"),
        "wrong round": (_edit(raw, round=ROUND + 1), "round is"),
        "bool round": (_edit(raw, round=True), "round must be a non-negative integer"),
        "float round": (raw.replace(b'"round":%d' % ROUND, b'"round":%d.0' % ROUND), "non-integer"),
        "NaN threshold": (raw.replace(b'"threshold":3', b'"threshold":NaN'), "non-finite"),
        "wrong threshold": (_edit(raw, threshold=2), "threshold is"),
        "wrong task": (_edit(raw, task=TASK[:-1] + "X"), "task is"),
        "wrong peer": (_edit(raw, peer=_peer(2)), "peer is"),
        "wrong dealer": (_edit(raw, dealer=2), "dealer is"),
        "extra key": (_edit(raw, extra=1), "unexpected keys ['extra']"),
        "missing holder": (_edit(raw, ciphertexts={k: v for k, v in cts.items() if k != "3"}), "not the bucket"),
        "extra holder": (_edit(raw, ciphertexts={**cts, "4": cts["3"]}), "not the bucket"),
        "padded holder": (_edit(raw, ciphertexts={("03" if k == "3" else k): v for k, v in cts.items()}),
                          "not a canonical decimal"),
        "short ciphertext": (_edit(raw, ciphertexts={**cts, "0": {"mask": "00" * 31, "self": cts["0"]["self"]}}),
                             "holder 0 mask must be 64"),
        "uppercase hex": (_edit(raw, mask_public=obj["mask_public"].upper()), "lowercase hex"),
        "0x hex": (_edit(raw, self_commitment="0x" + obj["self_commitment"][2:]), "lowercase hex"),
        "low-order mask key": (_edit(raw, mask_public=LOW_ORDER[1].hex()), "low-order"),
        "duplicate key": (raw[:-1] + b',"round":%d}' % ROUND, "duplicate key 'round'"),
        "not canonical": (raw.replace(b'{"ciphertexts"', b'{ "ciphertexts"'), "not in canonical form"),
        "deep nesting": (b"[" * 5000 + b"]" * 5000, ""),  # RecursionError or "not a JSON object"
    }
    for name, (data, says) in bad.items():
        with pytest.raises(ArtifactInvalid) as err:
            b.decode(data, 1, max_bytes=len(raw) + 20_000 if name != "oversize" else MAX_BYTES)
        assert says in str(err.value) and "\n" not in str(err.value), (name, str(err.value))


def test_malformed_unmasks_are_artifact_invalid():
    b = Bucket(4)
    good = encode_unmask(task=TASK, round_=ROUND, peer=_peer(2), holder=2, keys={(1, "mask"): bytes(32)})
    expected = dict(max_bytes=4096, task=TASK, round_=ROUND, peer=_peer(2), holder=2, members=4)
    assert decode_unmask(good, **expected).keys == {(1, "mask"): bytes(32)}
    both = {"1": {"mask": "00" * 32, "self": "00" * 32}}
    bad = {
        "oversize": (good + b" " * 4096, "more than the"),
        "bad json": (good[:-1], "not valid JSON"),
        "both kinds for one dealer": (_edit(good, keys=both), "exactly one revealed key"),
        "no kind": (_edit(good, keys={"1": {}}), "exactly one revealed key"),
        "unknown kind": (_edit(good, keys={"1": {"other": "00" * 32}}), "unknown kind"),
        "dealer out of range": (_edit(good, keys={"4": {"mask": "00" * 32}}), "not a member"),
        "short key": (_edit(good, keys={"1": {"mask": "00" * 31}}), "must be 64 lowercase hex"),
        "bool holder": (_edit(good, holder=True), "holder must be a non-negative integer"),
        "wrong holder": (_edit(good, holder=3), "holder is"),
        "wrong round": (_edit(good, round=ROUND - 1), "round is"),
        "keys not an object": (_edit(good, keys=[]), "keys must be an object"),
    }
    for name, (data, says) in bad.items():
        with pytest.raises(ArtifactInvalid) as err:
            decode_unmask(data, **expected)
        assert says in str(err.value), (name, str(err.value))
    assert b.unmask(1, {0: "self", 3: "mask"}).keys.keys() == {(0, "self"), (3, "mask")}
    with pytest.raises(ValueError):
        encode_unmask(task=TASK, round_=ROUND, peer=_peer(2), holder=2,
                      keys={(1, "mask"): bytes(32), (1, "self"): bytes(32)})


def test_an_unmask_carries_the_next_rounds_bundle_exactly():
    nxt = Bucket(4).raw[2]  # member 2's share bundle (the round does not matter to the carrier)
    data = encode_unmask(task=TASK, round_=ROUND, peer=_peer(2), holder=2, keys={(1, "mask"): bytes(32)}, next_bundle=nxt)
    expected = dict(max_bytes=1 << 16, task=TASK, round_=ROUND, peer=_peer(2), holder=2, members=4)
    got = decode_unmask(data, **expected)
    assert got.next == nxt and got.keys == {(1, "mask"): bytes(32)}
    assert decode_unmask(encode_unmask(task=TASK, round_=ROUND, peer=_peer(2), holder=2, keys={}), **expected).next is None
    for bad, says in ((_edit(data, next=[1]), "next must be an object"), (_edit(data, nxt=1), "unexpected keys"),
                      (data.replace(b'"next":{', b'"next": {'), "canonical")):
        with pytest.raises(ArtifactInvalid, match=says):
            decode_unmask(bad, **expected)


def test_unmask_sum_refuses_missing_seeds():
    b = Bucket(3)
    masked = b.masked(_updates(b.members, n=8), [0, 1])
    publics = {i: b.bundles[i].mask_public for i in b.members}
    with pytest.raises(ValueError):  # survivor 1's self seed is missing
        unmask_sum(masked, self_seeds={0: b.seeds[0][1]}, dropped={2: b.seeds[2][0]}, mask_publics=publics,
                   task=TASK, round_=ROUND)
    with pytest.raises(ValueError):  # a mask seed that is not dropped member 2's
        unmask_sum(masked, self_seeds={i: b.seeds[i][1] for i in (0, 1)}, dropped={2: b.seeds[1][0]},
                   mask_publics=publics, task=TASK, round_=ROUND)
