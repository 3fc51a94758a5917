"""Double masking of quantized updates modulo 2^64 (Bonawitz et al., "Practical Secure Aggregation
for Privacy-Preserving Machine Learning", CCS 2017, section 4).

A member u of a bucket sends y_u = q_u + PRG(b_u) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)
(mod 2^64), where b_u is its self-mask seed and s_uv the seed both u and v derive from their
X25519 mask keys. Summed over the survivors the pair masks between survivors cancel; the unmasking
removes every survivor's self mask (its b_u is reconstructed from Shamir shares) and the pair
masks of survivors with dropped members (whose mask private keys are reconstructed instead).
Everything is uint64 arithmetic, which wraps modulo 2^64 exactly and identically on every
platform; the int64 updates are their two's complement bit patterns.
"""
from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .keys import KEY_BYTES, SEED_BYTES, agree, derive, mask_private, public_key

__all__ = ["prg", "pair_seed", "self_mask_seed", "mask", "unmask_sum"]

_ZERO_BLOCK = bytes(16)
_CHUNK = 1 << 20  # values per keystream chunk (8 MiB)


def prg(seed: bytes, n: int) -> np.ndarray:
    """``n`` uint64 values: the AES-256-CTR keystream of key ``seed`` from the all-zero counter
    block (the counter is the whole 128-bit block, big-endian), read as little-endian uint64."""
    if not isinstance(seed, (bytes, bytearray)) or len(seed) != KEY_BYTES:
        raise ValueError("a PRG seed must be 32 bytes")
    if type(n) is not int or n < 0:
        raise ValueError(f"bad PRG length {n!r}")
    encryptor = Cipher(algorithms.AES(bytes(seed)), modes.CTR(_ZERO_BLOCK)).encryptor()
    out = np.empty(n, dtype=np.uint64)
    raw = out.view(np.uint8)
    zeros = bytes(8 * min(n, _CHUNK))
    for start in range(0, n, _CHUNK):
        count = min(_CHUNK, n - start)
        raw[8 * start : 8 * (start + count)] = np.frombuffer(encryptor.update(zeros[: 8 * count]), dtype=np.uint8)
    if not np.little_endian:
        out.byteswap(inplace=True)
    return out


def _check_index(value: int, what: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be a non-negative int: {value!r}")
    return value


def pair_seed(my_mask_private: bytes, their_mask_public: bytes, *, task: str, round_: int, a: int, b: int) -> bytes:
    """The 32-byte PRG seed s_ab shared by members a and b (symmetric in a, b)."""
    _check_index(a, "member")
    _check_index(b, "member")
    if a == b:
        raise ValueError("a member has no pair mask with itself")
    secret = agree(my_mask_private, their_mask_public)
    return derive(secret, "pair-mask", task, _check_index(round_, "round"), min(a, b), max(a, b))


def self_mask_seed(self_seed: bytes, *, task: str, round_: int, member: int) -> bytes:
    """The 32-byte PRG seed of member's self mask, from its 16-byte (Shamir-shared) self seed."""
    if not isinstance(self_seed, (bytes, bytearray)) or len(self_seed) != SEED_BYTES:
        raise ValueError("a self seed must be 16 bytes")
    return derive(self_seed, "self-mask", task, _check_index(round_, "round"), _check_index(member, "member"))


def mask(q: np.ndarray, *, me: int, mask_private: bytes, self_seed: bytes, peers: dict[int, bytes], task: str,
         round_: int) -> np.ndarray:
    """The masked update y_me (uint64) of the int64 vector ``q``; ``peers`` maps the other members
    of my bucket to their mask public keys."""
    q = np.asarray(q)
    if q.dtype != np.int64 or q.ndim != 1:
        raise ValueError("mask takes a 1-D int64 vector")
    _check_index(me, "member")
    if me in peers:
        raise ValueError("peers must not include me")
    n = q.shape[0]
    out = q.view(np.uint64).copy()  # two's complement bit patterns
    with np.errstate(over="ignore"):
        np.add(out, prg(self_mask_seed(self_seed, task=task, round_=round_, member=me), n), out=out)
        for j in sorted(peers):
            stream = prg(pair_seed(mask_private, peers[j], task=task, round_=round_, a=me, b=j), n)
            (np.add if me < j else np.subtract)(out, stream, out=out)
    return out


def unmask_sum(masked: dict[int, np.ndarray], *, self_seeds: dict[int, bytes], dropped: dict[int, bytes],
               mask_publics: dict[int, bytes], task: str, round_: int) -> np.ndarray:
    """The exact int64 sum (mod 2^64) of the survivors' updates.

    masked: survivor -> its masked uint64 vector; self_seeds: survivor -> its reconstructed self
    seed; dropped: bucket member without a masked vector -> its reconstructed 16-byte mask seed;
    mask_publics: every bucket member -> its mask public key.
    """
    if not masked:
        raise ValueError("no masked vectors to sum")
    survivors = sorted(masked)
    if set(dropped) & set(masked):
        raise ValueError("a member cannot both survive and drop out")
    if missing := [i for i in survivors if i not in self_seeds]:
        raise ValueError(f"no self seed for survivors {missing}")
    if missing := [i for i in survivors + sorted(dropped) if i not in mask_publics]:
        raise ValueError(f"no mask public key for members {missing}")
    n = None
    for i in survivors:
        v = masked[i]
        if not isinstance(v, np.ndarray) or v.dtype != np.uint64 or v.ndim != 1 or (n is not None and v.shape[0] != n):
            raise ValueError("masked vectors must be 1-D uint64 arrays of one length")
        n = v.shape[0]
    dropped_private = {}
    for d in sorted(dropped):
        private = mask_private(dropped[d])
        if public_key(private) != mask_publics[d]:
            raise ValueError(f"the mask seed of dropped member {d} does not match its mask public key")
        dropped_private[d] = private
    total = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in survivors:
            np.add(total, masked[i], out=total)
            np.subtract(total, prg(self_mask_seed(self_seeds[i], task=task, round_=round_, member=i), n), out=total)
            for d in sorted(dropped_private):
                stream = prg(pair_seed(dropped_private[d], mask_publics[i], task=task, round_=round_, a=i, b=d), n)
                # survivor i added +PRG(s_id) when i < d and -PRG(s_id) otherwise: take it out again
                (np.subtract if i < d else np.add)(total, stream, out=total)
    return total.view(np.int64)
