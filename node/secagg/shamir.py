"""Shamir secret sharing of 16-byte seeds over GF(2^128) (Shamir, "How to Share a Secret", CACM
1979), the t-out-of-n sharing of Bonawitz et al. (CCS 2017) for the mask and self-mask seeds.

Holder ``i`` (0-based member index) gets the polynomial's value at x = i + 1. pycryptodome's
``Shamir.split`` only numbers shares 1..n, so the polynomial is evaluated here with pycryptodome's
own GF(2^128) element (modulus x^128 + x^7 + x^2 + x + 1); ``Shamir.combine`` interpolates at any
points, so recombination is pycryptodome's.
"""
from __future__ import annotations

import secrets
from typing import Sequence

from Crypto.Protocol.SecretSharing import Shamir, _Element

__all__ = ["MAX_HOLDER", "split", "combine"]

SHARE_BYTES = 16
MAX_HOLDER = 255  # x = index + 1 <= 256


def _check_holder(index: int) -> int:
    if type(index) is not int or not 0 <= index <= MAX_HOLDER:
        raise ValueError(f"holder index must be an int in [0, {MAX_HOLDER}]: {index!r}")
    return index


def split(secret: bytes, threshold: int, holders: Sequence[int]) -> dict[int, bytes]:
    """holder index -> 16-byte share p(index + 1) of a random polynomial p of degree
    ``threshold - 1`` with p(0) = secret; any ``threshold`` shares give the secret back."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SHARE_BYTES:
        raise ValueError("the secret must be 16 bytes")
    holders = [_check_holder(h) for h in holders]
    if len(set(holders)) != len(holders):
        raise ValueError("duplicate holder")
    if type(threshold) is not int or not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold must be in [1, {len(holders)}]: {threshold!r}")
    # Highest degree first, the secret last (Horner's rule).
    coeffs = [_Element(secrets.token_bytes(SHARE_BYTES)) for _ in range(threshold - 1)]
    coeffs.append(_Element(bytes(secret)))
    out = {}
    for h in holders:
        x = _Element(h + 1)
        y = _Element(0)
        for c in coeffs:
            y = x * y + c
        out[h] = y.encode()
    return out


def combine(shares: Sequence[tuple[int, bytes]]) -> bytes:
    """The secret from (holder index, share) pairs: Lagrange interpolation at 0 through exactly
    the points given (give exactly ``threshold`` of them)."""
    points = []
    for h, share in shares:
        _check_holder(h)
        if not isinstance(share, (bytes, bytearray)) or len(share) != SHARE_BYTES:
            raise ValueError("a share must be 16 bytes")
        points.append((h + 1, bytes(share)))
    if not points:
        raise ValueError("no shares to combine")
    if len({x for x, _ in points}) != len(points):
        raise ValueError("duplicate holder")
    return Shamir.combine(points)
