"""A randomized Walsh-Hadamard rotation in exact integer arithmetic, for masking updates modulo a
small power of two (Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation", ICML 2021, section 4: "flattening" the vector with
a random rotation before scaling, rounding and modular clipping).

With H the P x P Sylvester-Hadamard matrix (entries +-1, H H = P I, P a power of two) and D a
diagonal of random signs, ``rotate`` computes r = H D x and ``unrotate`` computes D H r = P x: both
are integer butterflies (additions and subtractions), so every peer gets the same bits. After the
rotation each coordinate of r is a sum of the |x_i| with independent random signs: sub-Gaussian
with variance proxy ||x||^2 (Hoeffding), whatever x looked like. So a vector whose norm is known
spreads evenly over all P coordinates, and a fixed number of bits per coordinate covers it.

The signs come from a public seed that every member and every reader derives from the task and
the round (``rotation_seed``): the rotation hides nothing (the masks do), it only flattens.
"""
from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["rotation_seed", "padded_length", "rotation_signs", "hadamard", "rotate", "unrotate"]


def rotation_seed(task: str, round_: int) -> bytes:
    """The public 32-byte seed of a round's rotation signs."""
    if not isinstance(task, str) or type(round_) is not int or round_ < 0:
        raise ValueError("a rotation seed needs a task CID and a round >= 0")
    return hashlib.sha256(b"fedchain/secagg/rotation/v1\x00" + task.encode() + b"\x00" + round_.to_bytes(8, "big")).digest()


def padded_length(n: int) -> int:
    """The power of two P >= n (at least 1) the rotation works on; the padding is zeros."""
    if type(n) is not int or n < 0:
        raise ValueError(f"bad length {n!r}")
    return 1 << max(0, (n - 1).bit_length())


def rotation_signs(seed: bytes, length: int) -> np.ndarray:
    """``length`` signs (int64, +1 or -1), bit i of the SHAKE-256 stream of ``seed`` (little-endian
    bit order within each byte): 1 gives -1."""
    if not isinstance(seed, (bytes, bytearray)) or type(length) is not int or length < 0:
        raise ValueError("rotation signs need a seed and a length >= 0")
    raw = np.frombuffer(hashlib.shake_256(b"fedchain/secagg/rotation-signs/v1\x00" + bytes(seed)).digest((length + 7) // 8),
                        dtype=np.uint8)
    bits = np.unpackbits(raw, count=length, bitorder="little").astype(np.int64)
    return 1 - 2 * bits


def hadamard(x: np.ndarray) -> np.ndarray:
    """H x for the Sylvester-Hadamard matrix of order len(x) (a power of two), int64, exact as long
    as sum(|x|) < 2**63 (every intermediate value is a signed sum of the inputs)."""
    x = np.asarray(x)
    if x.dtype != np.int64 or x.ndim != 1:
        raise ValueError("hadamard takes a 1-D int64 vector")
    n = x.shape[0]
    if n == 0 or n & (n - 1):
        raise ValueError(f"hadamard needs a power-of-two length, got {n}")
    y = x.copy()
    h = 1
    while h < n:
        y = y.reshape(-1, 2, h)
        a, b = y[:, 0, :], y[:, 1, :]
        y = np.stack((a + b, a - b), axis=1).reshape(-1)
        h *= 2
    return y


def _l1_ok(x: np.ndarray) -> None:
    # the float64 sum of |x| is within a relative 2**-40 of the exact one; 2**61 keeps two bits below 2**63
    if x.size and float(np.abs(x.astype(np.float64)).sum()) >= 2.0**61:
        raise ValueError("vector too large to rotate exactly in 64-bit integers")


def rotate(x: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """H D x, with x zero-padded to len(signs) (a power of two); int64, exact."""
    x = np.asarray(x)
    if x.dtype != np.int64 or x.ndim != 1 or x.shape[0] > signs.shape[0]:
        raise ValueError("rotate takes a 1-D int64 vector no longer than the signs")
    _l1_ok(x)
    padded = np.zeros(signs.shape[0], dtype=np.int64)
    padded[: x.shape[0]] = x
    return hadamard(padded * signs)


def unrotate(r: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """D H r = P x when r = H D x (the caller divides by P = len(signs)); int64, exact."""
    r = np.asarray(r)
    if r.dtype != np.int64 or r.shape != signs.shape:
        raise ValueError("unrotate takes an int64 vector as long as the signs")
    _l1_ok(r)
    return signs * hadamard(r)
