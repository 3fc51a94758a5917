"""Shamir secret sharing of 16-byte seeds over GF(2^128) (Shamir, "How to Share a Secret", CACM
1979), the t-out-of-n sharing of Bonawitz et al. (CCS 2017) for the mask and self-mask seeds.

Holder ``i`` (0-based member index) gets the polynomial's value at x = i + 1. pycryptodome's
``Shamir.split`` only numbers shares 1..n, so the polynomial is evaluated here with pycryptodome's
own GF(2^128) element (modulus x^128 + x^7 + x^2 + x + 1, big-endian encoding).

Recombination is Lagrange interpolation at 0 in the same field, done here rather than with
``Shamir.combine``: every reader recombines every dealer's seed from the shares of the same
first t holders, so the Lagrange coefficients of a set of points are computed once (one field
inversion, Montgomery's batch trick) and each seed then costs t multiplications. (pycryptodome
recomputes them per seed: 16 seeds at t = 9 took 116 ms against about 10 ms here.) The tests
check both against each other.
"""
from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Sequence

from Crypto.Protocol.SecretSharing import _Element

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
    xs, ys = [], []
    for h, share in shares:
        _check_holder(h)
        if not isinstance(share, (bytes, bytearray)) or len(share) != SHARE_BYTES:
            raise ValueError("a share must be 16 bytes")
        xs.append(h + 1)
        ys.append(int.from_bytes(share, "big"))
    if not xs:
        raise ValueError("no shares to combine")
    if len(set(xs)) != len(xs):
        raise ValueError("duplicate holder")
    secret = 0
    for coeff, y in zip(_lagrange_at_zero(tuple(xs)), ys):
        secret ^= _mul(coeff, y)
    return secret.to_bytes(SHARE_BYTES, "big")


# ---- GF(2^128), modulus x^128 + x^7 + x^2 + x + 1; an element is an int, bit i the x^i term ----

_MASK = (1 << 128) - 1


def _mul(a: int, b: int) -> int:
    """a * b in GF(2^128): carry-less product four bits of ``b`` at a time, then reduced."""
    table = [0] * 16
    for k in range(1, 16):  # table[k] = a * k (k as a polynomial of degree < 4)
        table[k] = table[k & (k - 1)] ^ (a << ((k & -k).bit_length() - 1))
    acc, shift = 0, 0
    while b:
        acc ^= table[b & 15] << shift
        b >>= 4
        shift += 4
    while acc >> 128:  # x^128 = x^7 + x^2 + x + 1
        high = acc >> 128
        acc = (acc & _MASK) ^ high ^ (high << 1) ^ (high << 2) ^ (high << 7)
    return acc


def _inverse(a: int) -> int:
    """a^(2^128 - 2) = a^-1 for a != 0."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse")
    result, base, e = 1, a, (1 << 128) - 2
    while e:
        if e & 1:
            result = _mul(result, base)
        base = _mul(base, base)
        e >>= 1
    return result


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The coefficients l_i with p(0) = sum l_i p(x_i): l_i = prod_{j != i} x_j / (x_j - x_i)
    (minus is plus in characteristic 2). Distinct nonzero points."""
    nums, dens = [], []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = _mul(num, xj)
                den = _mul(den, xj ^ xi)
        nums.append(num)
        dens.append(den)
    # Montgomery's trick: one inversion for all the denominators.
    prefix = [1]
    for d in dens:
        prefix.append(_mul(prefix[-1], d))
    inv = _inverse(prefix[-1])
    out = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        out[i] = _mul(nums[i], _mul(inv, prefix[i]))
        inv = _mul(inv, dens[i])
    return tuple(out)
