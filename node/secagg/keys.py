"""Key derivation and X25519 key agreement for secure aggregation (Bonawitz et al., "Practical
Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017).

Nothing here is stored: a member's long-lived identity key of one deployment and its two
per-round seeds are derived from its Ethereum account key with HKDF-SHA256 (RFC 5869), so a
restarted member finds the same keys again. Every use has its own label, and every context field
is length-prefixed and typed, so two different derivations never share an input.
"""
from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import ArtifactInvalid

__all__ = [
    "KEY_BYTES",
    "SEED_BYTES",
    "encode_parts",
    "derive",
    "identity_private",
    "public_key",
    "round_seeds",
    "mask_private",
    "agree",
]

KEY_BYTES = 32  # X25519 keys, shared secrets, PRG seeds, AES-256 keys
SEED_BYTES = 16  # the seeds that are Shamir-shared (one GF(2^128) element)
_DOMAIN = b"fedchain/secagg/v1"
_INT_BYTES = 32


def _check_bytes(value: bytes, size: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return bytes(value)


def encode_parts(*parts: bytes | str | int) -> bytes:
    """An unambiguous encoding of a sequence of fields: each is a type tag (b, s, i), a 4-byte
    big-endian length and the value (bytes as is, str as UTF-8, int as 32-byte big-endian)."""
    out = bytearray()
    for part in parts:
        if isinstance(part, (bytes, bytearray)):
            tag, raw = b"b", bytes(part)
        elif isinstance(part, str):
            tag, raw = b"s", part.encode("utf-8")
        elif type(part) is int:
            if not 0 <= part < 1 << (8 * _INT_BYTES):
                raise ValueError(f"integer context field out of range: {part}")
            tag, raw = b"i", part.to_bytes(_INT_BYTES, "big")
        else:
            raise ValueError(f"unsupported context field type: {type(part).__name__}")
        out += tag + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def derive(secret: bytes, label: str, *context: bytes | str | int, size: int = 32) -> bytes:
    """HKDF-SHA256 of ``secret`` with info = domain || encode(label, *context)."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) < SEED_BYTES:
        raise ValueError("derive needs a secret of at least 16 bytes")
    if not isinstance(label, str) or not label:
        raise ValueError("derive needs a non-empty label")
    if not 1 <= size <= 255 * 32:
        raise ValueError(f"derive cannot produce {size} bytes")
    info = _DOMAIN + encode_parts(label, *context)
    return HKDF(algorithm=hashes.SHA256(), length=size, salt=None, info=info).derive(bytes(secret))


def _address(contract: str) -> str:
    if not isinstance(contract, str) or len(contract) != 42 or not contract.startswith(("0x", "0X")):
        raise ValueError(f"not a 0x address: {contract!r}")
    return contract.lower()


def identity_private(account_key: bytes, contract: str) -> bytes:
    """The member's X25519 identity private key in one deployment (32 bytes)."""
    _check_bytes(account_key, 32, "account key")
    return derive(account_key, "identity", _address(contract))


def public_key(private: bytes) -> bytes:
    """The raw 32-byte X25519 public key of a 32-byte private key."""
    key = X25519PrivateKey.from_private_bytes(_check_bytes(private, KEY_BYTES, "X25519 private key"))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def round_seeds(account_key: bytes, contract: str, round_: int) -> tuple[bytes, bytes]:
    """(mask_seed, self_seed) of one round, 16 bytes each: the seed of the member's mask key pair
    and the seed of its self mask b_u (Bonawitz et al., section 4)."""
    _check_bytes(account_key, 32, "account key")
    address = _address(contract)
    return (derive(account_key, "mask-seed", address, round_, size=SEED_BYTES),
            derive(account_key, "self-seed", address, round_, size=SEED_BYTES))


def mask_private(mask_seed: bytes) -> bytes:
    """The 32-byte X25519 mask private key s_u^SK grown from the 16-byte (Shamir-shared) seed."""
    return derive(_check_bytes(mask_seed, SEED_BYTES, "mask seed"), "mask-private")


def agree(private: bytes, public: bytes) -> bytes:
    """X25519 shared secret. A low-order (or otherwise unusable) public key is hostile input."""
    key = X25519PrivateKey.from_private_bytes(_check_bytes(private, KEY_BYTES, "X25519 private key"))
    raw = _check_bytes(public, KEY_BYTES, "X25519 public key")
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:  # cryptography refuses an all-zero shared secret (a low-order point)
        raise ArtifactInvalid("unusable X25519 public key (low order)") from None
