"""What a member publishes for secure aggregation, and how it is read back (hostile input).

Bonawitz et al. (CCS 2017, section 4) route encrypted Shamir shares through a server; fedchain has
no server, so each dealer pins one *share bundle*: its mask public key, a commitment to its self
seed, and for every holder of its bucket the AES-GCM encryptions of that holder's shares of the
dealer's mask seed and self seed. Each (dealer, holder, kind) has its own AES key, derived from
the X25519 agreement of their identity keys, so a holder unmasks one share by publishing that one
key (an *unmask* reveal) without exposing the other kind or the other dealers' shares.

Encodings are canonical JSON (sorted keys, no spaces, ASCII, lowercase hex without 0x, decimal
ints, holder and dealer indices as decimal object keys). Decoders check the size before parsing,
accept exactly one encoding of each content, and raise ``ArtifactInvalid`` with one line.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ArtifactInvalid
from .keys import KEY_BYTES, SEED_BYTES, agree, derive, encode_parts, identity_private, mask_private, public_key, \
    round_seeds
from .shamir import MAX_HOLDER, combine, split

__all__ = [
    "KINDS",
    "ShareBundle",
    "Unmask",
    "pair_keys",
    "self_commitment",
    "encrypt_share",
    "deal",
    "encode_bundle",
    "decode_bundle",
    "open_share",
    "encode_unmask",
    "decode_unmask",
    "reconstruct",
]

KINDS = ("mask", "self")
BUNDLE_FORMAT = "fedchain-secagg-shares/1"
UNMASK_FORMAT = "fedchain-secagg-unmask/1"
CIPHERTEXT_BYTES = SEED_BYTES + 16  # share + GCM tag
_NONCE = bytes(12)  # every key encrypts exactly one share
_INDEX = re.compile(r"0|[1-9][0-9]{0,5}")
# A fixed private key to test public keys with: X25519 of a clamped scalar is all-zero exactly
# for the low-order points, which cryptography refuses.
_PROBE = bytes([0x40] * KEY_BYTES)


@dataclass(frozen=True)
class ShareBundle:
    task: str
    round: int
    peer: str  # the dealer's address as given
    dealer: int
    threshold: int
    mask_public: bytes  # 32: public_key(mask_private(mask_seed))
    self_commitment: bytes  # 32: see self_commitment()
    ciphertexts: dict[int, tuple[bytes, bytes]]  # holder -> (mask-seed share, self-seed share), AES-GCM, 32 each


@dataclass(frozen=True)
class Unmask:
    task: str
    round: int
    peer: str
    holder: int
    keys: dict[tuple[int, str], bytes]  # (dealer, kind) -> revealed pair key of that kind
    next: bytes | None = None  # the holder's share bundle for the next round (canonical bytes), dealt ahead


# ---- keys and shares -------------------------------------------------------------------------

def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}: {kind!r}")
    return kind


def pair_keys(my_identity_private: bytes, their_identity_public: bytes, *, task: str, round_: int, dealer: int,
              holder: int) -> tuple[bytes, bytes]:
    """(mask_key, self_key) that encrypt the holder's shares of the dealer's two seeds; the dealer
    and the holder each find them from their own identity private key and the other's public."""
    secret = agree(my_identity_private, their_identity_public)
    return tuple(derive(secret, "share-key", kind, task, round_, dealer, holder) for kind in KINDS)  # type: ignore


def _aad(task: str, round_: int, dealer: int, holder: int, kind: str) -> bytes:
    return encode_parts("share", task, round_, dealer, holder, kind)


def encrypt_share(key: bytes, share: bytes, *, task: str, round_: int, dealer: int, holder: int, kind: str) -> bytes:
    """AES-256-GCM of one 16-byte share (fixed nonce: each key encrypts one share only)."""
    if len(key) != KEY_BYTES or len(share) != SEED_BYTES:
        raise ValueError("encrypt_share takes a 32-byte key and a 16-byte share")
    return AESGCM(key).encrypt(_NONCE, share, _aad(task, round_, dealer, holder, _kind(kind)))


def self_commitment(self_seed: bytes, *, task: str, round_: int, dealer: int) -> bytes:
    """SHA-256 commitment to a dealer's self seed (checks a reconstructed self seed)."""
    if len(self_seed) != SEED_BYTES:
        raise ValueError("a self seed must be 16 bytes")
    return hashlib.sha256(encode_parts("fedchain/secagg/v1 self-commitment", task, round_, dealer,
                                       bytes(self_seed))).digest()


def deal(*, account_key: bytes, contract: str, task: str, round_: int, dealer: int, peer: str, threshold: int,
         holders: dict[int, bytes]) -> bytes:
    """The dealer's canonical share bundle for one round; ``holders`` maps every holder of the
    bucket (the dealer included) to its identity public key."""
    if dealer not in holders:
        raise ValueError("the dealer must be one of the holders")
    mask_seed, self_seed = round_seeds(account_key, contract, round_)
    me = identity_private(account_key, contract)
    order = sorted(holders)
    mask_shares = split(mask_seed, threshold, order)
    self_shares = split(self_seed, threshold, order)
    ciphertexts = {}
    for h in order:
        mask_key, self_key = pair_keys(me, holders[h], task=task, round_=round_, dealer=dealer, holder=h)
        ciphertexts[h] = (
            encrypt_share(mask_key, mask_shares[h], task=task, round_=round_, dealer=dealer, holder=h, kind="mask"),
            encrypt_share(self_key, self_shares[h], task=task, round_=round_, dealer=dealer, holder=h, kind="self"),
        )
    return encode_bundle(ShareBundle(
        task=task, round=round_, peer=peer, dealer=dealer, threshold=threshold,
        mask_public=public_key(mask_private(mask_seed)),
        self_commitment=self_commitment(self_seed, task=task, round_=round_, dealer=dealer),
        ciphertexts=ciphertexts,
    ))


def open_share(bundle: ShareBundle, holder: int, key: bytes, kind: str) -> bytes | None:
    """The holder's 16-byte share of the dealer's seed of ``kind``, or None when ``key`` does not
    authenticate the dealer's ciphertext for that holder."""
    _kind(kind)
    pair = bundle.ciphertexts.get(holder)
    if pair is None or not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        return None
    ciphertext = pair[KINDS.index(kind)]
    try:
        share = AESGCM(bytes(key)).decrypt(_NONCE, ciphertext,
                                          _aad(bundle.task, bundle.round, bundle.dealer, holder, kind))
    except InvalidTag:
        return None
    return share if len(share) == SEED_BYTES else None


# ---- canonical JSON --------------------------------------------------------------------------

def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")


def encode_bundle(bundle: ShareBundle) -> bytes:
    return _canonical({
        "format": BUNDLE_FORMAT,
        "task": bundle.task,
        "round": bundle.round,
        "peer": bundle.peer,
        "dealer": bundle.dealer,
        "threshold": bundle.threshold,
        "mask_public": bundle.mask_public.hex(),
        "self_commitment": bundle.self_commitment.hex(),
        "ciphertexts": {str(h): {"mask": m.hex(), "self": s.hex()} for h, (m, s) in bundle.ciphertexts.items()},
    })


def encode_unmask(*, task: str, round_: int, peer: str, holder: int, keys: dict[tuple[int, str], bytes],
                  next_bundle: bytes | None = None) -> bytes:
    """A holder's canonical unmask reveal: (dealer, kind) -> pair key, one kind per dealer, and
    optionally its share bundle for the next round (``encode_bundle``'s bytes), carried inline so
    that dealing the next round costs no transaction and no block of its own."""
    out: dict[str, dict[str, str]] = {}
    for (dealer, kind), key in keys.items():
        if type(dealer) is not int or dealer < 0 or len(key) != KEY_BYTES:
            raise ValueError("unmask keys are (dealer index, kind) -> 32-byte key")
        if str(dealer) in out:
            raise ValueError(f"an unmask reveals one kind per dealer (dealer {dealer})")
        out[str(dealer)] = {_kind(kind): bytes(key).hex()}
    obj: dict[str, Any] = {"format": UNMASK_FORMAT, "task": task, "round": round_, "peer": peer, "holder": holder,
                           "keys": out}
    if next_bundle is not None:
        obj["next"] = json.loads(next_bundle.decode("ascii"))
    return _canonical(obj)


class _Bad(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Bad(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise _Bad(f"non-finite number {name}")


def _reject_float(text: str) -> Any:
    raise _Bad("a non-integer number")


def _parse(data: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    if not isinstance(data, (bytes, bytearray)):
        raise ArtifactInvalid(f"{what}: not bytes")
    if len(data) > max_bytes:
        raise ArtifactInvalid(f"{what}: {len(data)} bytes, more than the {max_bytes} allowed")
    try:
        obj = json.loads(bytes(data).decode("ascii"), object_pairs_hook=_no_duplicates,
                         parse_constant=_reject_constant, parse_float=_reject_float)
    except _Bad as exc:
        raise ArtifactInvalid(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ArtifactInvalid(f"{what}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise ArtifactInvalid(f"{what}: not a JSON object")
    return obj


def _keys_exactly(obj: dict[str, Any], expected: set[str], what: str) -> None:
    if set(obj) != expected:
        extra, missing = sorted(set(obj) - expected), sorted(expected - set(obj))
        raise ArtifactInvalid(f"{what}: unexpected keys {extra}, missing keys {missing}")


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    value = obj[key]
    if type(value) is not int or value < 0:
        raise ArtifactInvalid(f"{what}: {key} must be a non-negative integer")
    return value


def _str(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise ArtifactInvalid(f"{what}: {key} must be a string")
    return value


def _hex(value: Any, size: int, what: str, field: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or re.fullmatch(r"[0-9a-f]*", value) is None:
        raise ArtifactInvalid(f"{what}: {field} must be {2 * size} lowercase hex digits")
    return bytes.fromhex(value)


def _index(key: str, what: str, field: str) -> int:
    if _INDEX.fullmatch(key) is None:
        raise ArtifactInvalid(f"{what}: {field} index {key[:20]!r} is not a canonical decimal")
    return int(key)


def _expect(what: str, field: str, got: Any, want: Any) -> None:
    if got != want:
        raise ArtifactInvalid(f"{what}: {field} is {str(got)[:80]!r}, expected {str(want)[:80]!r}")


def _check_canonical(data: bytes, encoded: bytes, what: str) -> None:
    if bytes(data) != encoded:
        raise ArtifactInvalid(f"{what}: not in canonical form")


def _header(data: bytes, max_bytes: int, what: str, fmt: str, fields: set[str], *, task: str, round_: int,
            peer: str, member: tuple[str, int], optional: set[str] = frozenset()) -> tuple[dict[str, Any], str]:
    """Parse, check the key set (``optional`` ones may be absent) and the fields every encoding
    has; (object, peer as written)."""
    obj = _parse(data, max_bytes, what)
    _keys_exactly(obj, {"format", "task", "round", "peer", member[0]} | fields | (set(obj) & set(optional)), what)
    _expect(what, "format", obj["format"], fmt)
    _expect(what, "task", _str(obj, "task", what), task)
    _expect(what, "round", _int(obj, "round", what), round_)
    got_peer = _str(obj, "peer", what)
    _expect(what, "peer", got_peer.lower(), peer.lower())
    _expect(what, member[0], _int(obj, member[0], what), member[1])
    return obj, got_peer


def decode_bundle(data: bytes, *, max_bytes: int, task: str, round_: int, peer: str, dealer: int, holders: set[int],
                  threshold: int) -> ShareBundle:
    """A dealer's share bundle, checked against everything the reader expects of it."""
    what = f"share bundle of member {dealer}"
    obj, got_peer = _header(data, max_bytes, what, BUNDLE_FORMAT, {"threshold", "mask_public", "self_commitment",
                            "ciphertexts"}, task=task, round_=round_, peer=peer, member=("dealer", dealer))
    _expect(what, "threshold", _int(obj, "threshold", what), threshold)
    mask_public = _hex(obj["mask_public"], KEY_BYTES, what, "mask_public")
    commitment = _hex(obj["self_commitment"], 32, what, "self_commitment")
    cts = obj["ciphertexts"]
    if not isinstance(cts, dict):
        raise ArtifactInvalid(f"{what}: ciphertexts must be an object")
    ciphertexts: dict[int, tuple[bytes, bytes]] = {}
    for key, pair in cts.items():
        h = _index(key, what, "holder")
        if not isinstance(pair, dict):
            raise ArtifactInvalid(f"{what}: the ciphertexts of holder {h} must be an object")
        _keys_exactly(pair, set(KINDS), f"{what}, holder {h}")
        ciphertexts[h] = (_hex(pair["mask"], CIPHERTEXT_BYTES, what, f"holder {h} mask"),
                          _hex(pair["self"], CIPHERTEXT_BYTES, what, f"holder {h} self"))
    if set(ciphertexts) != set(holders):
        raise ArtifactInvalid(f"{what}: holders {sorted(ciphertexts)[:50]} are not the bucket {sorted(holders)[:50]}")
    try:
        agree(_PROBE, mask_public)
    except ArtifactInvalid:
        raise ArtifactInvalid(f"{what}: mask_public is a low-order point") from None
    bundle = ShareBundle(task=task, round=round_, peer=got_peer, dealer=dealer, threshold=threshold,
                         mask_public=mask_public, self_commitment=commitment, ciphertexts=ciphertexts)
    _check_canonical(data, encode_bundle(bundle), what)
    return bundle


def decode_unmask(data: bytes, *, max_bytes: int, task: str, round_: int, peer: str, holder: int,
                  members: int) -> Unmask:
    """A holder's unmask reveal, checked against everything the reader expects of it."""
    what = f"unmask reveal of member {holder}"
    obj, got_peer = _header(data, max_bytes, what, UNMASK_FORMAT, {"keys"}, task=task, round_=round_, peer=peer,
                            member=("holder", holder), optional={"next"})
    nxt = None
    if "next" in obj:
        if not isinstance(obj["next"], dict):
            raise ArtifactInvalid(f"{what}: next must be an object (a share bundle)")
        nxt = _canonical(obj["next"])  # decoded, with everything a bundle must be, by its round's reader
    raw = obj["keys"]
    if not isinstance(raw, dict):
        raise ArtifactInvalid(f"{what}: keys must be an object")
    keys: dict[tuple[int, str], bytes] = {}
    for key, revealed in raw.items():
        d = _index(key, what, "dealer")
        if d >= members:
            raise ArtifactInvalid(f"{what}: dealer {d} is not a member (there are {members})")
        if not isinstance(revealed, dict) or len(revealed) != 1:
            raise ArtifactInvalid(f"{what}: dealer {d} must have exactly one revealed key (one kind)")
        (kind, value), = revealed.items()
        if kind not in KINDS:
            raise ArtifactInvalid(f"{what}: dealer {d}: unknown kind {kind[:20]!r}")
        keys[(d, kind)] = _hex(value, KEY_BYTES, what, f"dealer {d} {kind} key")
    unmask = Unmask(task=task, round=round_, peer=got_peer, holder=holder, keys=keys, next=nxt)
    _check_canonical(data, encode_unmask(task=task, round_=round_, peer=got_peer, holder=holder, keys=keys,
                                         next_bundle=nxt), what)
    return unmask


# ---- reconstruction --------------------------------------------------------------------------

def reconstruct(bundles: dict[int, ShareBundle], unmasks: Sequence[Unmask], needed: dict[int, str]) -> dict[int, bytes | None]:
    """dealer -> its reconstructed 16-byte seed of the needed kind, or None.

    The shares are those that the holders' revealed keys authenticate, taken in the order of
    ``unmasks`` (canonical holder order, so every reader uses the same ones); the first
    ``threshold`` are combined and the result is checked against the dealer's mask public key or
    self commitment. Too few valid shares, or shares that do not fit together (a cheating dealer),
    give None; hostile content never raises.
    """
    out: dict[int, bytes | None] = {}
    for dealer in sorted(needed):
        kind = _kind(needed[dealer])
        bundle = bundles.get(dealer)
        out[dealer] = None if bundle is None else _reconstruct_one(bundle, unmasks, kind)
    return out


def _reconstruct_one(bundle: ShareBundle, unmasks: Sequence[Unmask], kind: str) -> bytes | None:
    shares: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    for u in unmasks:
        if len(shares) >= bundle.threshold:
            break
        if u.holder in seen or u.task != bundle.task or u.round != bundle.round:
            continue
        key = u.keys.get((bundle.dealer, kind))
        if key is None or not 0 <= u.holder <= MAX_HOLDER:
            continue
        share = open_share(bundle, u.holder, key, kind)
        if share is not None:
            seen.add(u.holder)
            shares.append((u.holder, share))
    if len(shares) < bundle.threshold or bundle.threshold < 1:
        return None
    seed = combine(shares)
    if kind == "mask":
        ok = public_key(mask_private(seed)) == bundle.mask_public
    else:
        ok = self_commitment(seed, task=bundle.task, round_=bundle.round, dealer=bundle.dealer) == bundle.self_commitment
    return seed if ok else None
