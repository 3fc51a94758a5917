"""Masking modulo 2^16 or 2^32 instead of 2^64: rotate, scale, round, (noise,) wrap.

Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation", ICML 2021 (arXiv:2102.06387), section 4: a member flattens its clipped update
with a random rotation, scales it down, rounds it to integers, adds its discrete Gaussian noise
and sends it modulo 2^b ("modular clipping"); the sum modulo 2^b, centred into the signed range,
is scaled and rotated back. Here every step is exact integer arithmetic, so every peer and auditor
decodes the same bits:

* **Rotation** (``rotation.py``): r = H D q over the update's P = 2^p padded coordinates, q in
  fixed point (units of 2**-frac_bits), D signs from a public seed of the task and round. Each
  coordinate of a member's r is sub-Gaussian with variance proxy ||q||^2 <= (clip 2^f)^2, and a
  bucket sum's with proxy ||sum q||^2 <= (m clip 2^f)^2 (m members, worst case all aligned).
* **Scale**: v = round(r / 2^s), with the smallest s >= 0 for which HEADROOM standard deviations
  of a bucket-sum coordinate fit in the signed range: 2^(b-1) 2^s >= HEADROOM clip 2^f
  sqrt(m^2 + z^2 P), where z^2 P (clip 2^f / 2^s)^2 is the variance of the sum's noise per
  coordinate (z the noise multiplier, 0 without noise). With distributed noise s is also at least
  the one that keeps a member's noise std near 2^10 (as ``noise.plan_noise`` does), so the exact
  sampler stays on its fast path. A sum coordinate beyond the range wraps modulo 2^b: it comes back
  off by a multiple of 2^b, an error whose norm the inverse rotation keeps (2^b 2^s / sqrt(P) in
  fixed point per wrapped coordinate); with 6 standard deviations that happens to a coordinate
  with probability below 2 exp(-18) ~ 3e-8 for Gaussian noise.
* **Rounding**: deterministic, to nearest (ties up). The rotation already spreads each coordinate's
  rounding error (at most 1/2) evenly, the error is tiny next to the scaled signal (the sum's
  relative error is about HEADROOM m / (sqrt(12) 2^(b-1)), 5e-4 for 16 bits and 10 members),
  and the bound is worst case: a member's v has norm at most sqrt(P) clip 2^f / 2^s + sqrt(P)/2,
  the L2 sensitivity the accountant charges. Stochastic rounding would be unbiased but needs a
  private random stream per member and only a high-probability norm bound.
* **Noise** (``--distributed-noise``): each member adds N_Z(0, sigma^2)^P in the scaled domain,
  sigma^2 = ceil(z^2 P (clip 2^f / 2^s)^2 / m), so the bucket sum carries noise of std z times
  the clip sensitivity; ``bucket_noise_plan`` gives the accountant that plan and dimension P.
* **Decoding**: the sum modulo 2^b is centred into [-2^(b-1), 2^(b-1)), rotated back
  (D H c = P x) and multiplied by 2^s / P (a shift, rounded to nearest): the bucket's sum in
  fixed point, as int64, to its first n coordinates.

The masks themselves are the low b bits of the 64-bit masks of ``masking.py``: arithmetic modulo
2^64 reduced modulo 2^b is arithmetic modulo 2^b, and the low b bits of an AES-CTR keystream word
are uniform, so a b-bit masked value is a one-time pad of the b-bit value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .noise import NoisePlan, RandomSource, _floor_log2, discrete_gaussian, plan_noise
from .rotation import padded_length, rotate, rotation_seed, rotation_signs, unrotate

__all__ = ["BITS", "HEADROOM", "Codec", "plan_codec", "codec_for", "encode_update", "decode_sum", "bucket_noise_plan",
           "wrap", "centre"]

BITS = (16, 32, 64)
HEADROOM = 6  # standard deviations of a bucket-sum coordinate the b-bit range covers
_TARGET_SIGMA_BITS = 10  # with noise: a member's noise std in the scaled domain is kept at least 2**10 where the bits allow


@dataclass(frozen=True)
class Codec:
    """How the members of one bucket encode their updates in ``bits`` bits."""

    bits: int
    length: int  # n: the update's coordinates
    padded: int  # P: the rotation's length, a power of two >= n
    shift: int  # s: the rotated update is divided by 2**s
    plan: NoisePlan | None  # distributed DP noise in the scaled domain (step 1), None without


def plan_codec(*, bits: int, length: int, members: int, clip: float, noise_multiplier: float | None = None,
               frac_bits: int = 28) -> Codec:
    """The codec of a bucket of ``members`` members (see the module docstring), from exact
    rationals of the floats: every machine derives the same one. ``ValueError`` for bits other
    than 16 or 32, or parameters whose decoded sums would not fit in int64."""
    if bits not in (16, 32):
        raise ValueError(f"a codec has 16 or 32 bits, got {bits!r}")
    if type(length) is not int or length < 1 or type(members) is not int or members < 1:
        raise ValueError("length and members must be positive integers")
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive number, got {clip!r}")
    z = Fraction(0) if noise_multiplier is None else Fraction(noise_multiplier)
    if z < 0:
        raise ValueError("the noise multiplier must be positive")
    p_len = padded_length(length)
    unit = Fraction(clip) * (1 << frac_bits)  # the clip in fixed-point units
    need = HEADROOM * HEADROOM * unit * unit * (members * members + z * z * p_len)  # (range needed)^2 at s = 0
    shift = 0
    while Fraction(1 << (2 * (bits - 1) + 2 * shift)) < need:
        shift += 1
    plan = None
    if z > 0:
        var0 = z * z * unit * unit * p_len / members  # a member's noise variance at s = 0
        shift = max(shift, max(0, (_floor_log2(var0) - 2 * _TARGET_SIGMA_BITS) // 2))
        var = var0 / (1 << (2 * shift))
        sigma_sq = Fraction(-((-var.numerator) // var.denominator))  # rounded up: more noise, never less
        if sigma_sq < Fraction(1, 4):
            raise ValueError("the noise is too small for the scaled domain (a member's std under 1/2)")
        sensitivity = math.sqrt(p_len) * float(unit / (1 << shift)) + math.sqrt(p_len) / 2
        plan = NoisePlan(step=1, member_sigma_sq=sigma_sq, sensitivity=sensitivity, members=members)
    if shift + bits - 1 > 62 or float(unit) * math.sqrt(length) >= 2.0**60:
        raise ValueError(f"a {bits}-bit codec for this clip, noise and model size would overflow 64-bit integers")
    return Codec(bits=bits, length=length, padded=p_len, shift=shift, plan=plan)


def codec_for(sa, *, members: int, length: int) -> Codec:
    """The codec of a bucket of ``members`` under a ``SecureAggregation`` with ``bits`` < 64."""
    return plan_codec(bits=sa.bits, length=length, members=members, clip=sa.clip, noise_multiplier=sa.noise_multiplier)


def wrap(v: np.ndarray, bits: int) -> np.ndarray:
    """Values modulo 2^bits, as the signed two's-complement integers of that width (int16/int32)."""
    dtype = {16: (np.uint16, np.int16), 32: (np.uint32, np.int32)}[bits]
    return np.asarray(v).astype(dtype[0]).view(dtype[1])  # integer narrowing keeps the low bits


def centre(total: np.ndarray, bits: int) -> np.ndarray:
    """A sum modulo 2^bits (any integer array whose low ``bits`` bits are the sum) as int64 in
    [-2^(bits-1), 2^(bits-1))."""
    return wrap(total, bits).astype(np.int64)


def encode_update(q: np.ndarray, codec: Codec, *, task: str, round_: int, rng: RandomSource | None = None) -> np.ndarray:
    """A member's update ``q`` (int64 fixed point, ``codec.length`` values, clipped) as the int64
    vector it masks: rotated, divided by 2^s and rounded to nearest, plus its noise share when the
    codec has a noise plan (drawn from ``rng``, default the OS CSPRNG). Only its low ``bits``
    bits matter: they are what is masked and sent."""
    q = np.asarray(q)
    if q.dtype != np.int64 or q.shape != (codec.length,):
        raise ValueError(f"encode_update takes {codec.length} int64 values")
    r = rotate(q, rotation_signs(rotation_seed(task, round_), codec.padded))
    v = r if codec.shift == 0 else (r + (1 << (codec.shift - 1))) >> codec.shift  # arithmetic shift: floor
    if codec.plan is not None:
        v = v + discrete_gaussian(codec.plan.member_sigma_sq, codec.padded, rng or RandomSource.secure())
    return v


def decode_sum(total: np.ndarray, codec: Codec, *, task: str, round_: int) -> np.ndarray:
    """A bucket's sum in int64 fixed point (``codec.length`` values) from the unmasked sum of its
    members' encoded updates (``codec.padded`` integers whose low ``bits`` bits are the sum)."""
    total = np.asarray(total)
    if total.shape != (codec.padded,):
        raise ValueError(f"decode_sum takes {codec.padded} values")
    u = unrotate(centre(total, codec.bits), rotation_signs(rotation_seed(task, round_), codec.padded))  # P x / 2^s
    e = codec.shift - (codec.padded.bit_length() - 1)  # times 2^s / P
    if e >= 0:
        x = u << e
    else:
        x = (u + (1 << (-e - 1))) >> -e
    return x[: codec.length].copy()


def bucket_noise_plan(sa, *, members: int, dim: int) -> tuple[NoisePlan, int]:
    """Distributed DP: the noise plan of a bucket of ``members`` and the dimension the accountant
    counts: the fixed-point lattice plan over the ``dim`` floating coordinates at 64 bits, the
    scaled domain's plan over P coordinates below."""
    if sa.bits == 64:
        return plan_noise(clip=sa.clip, noise_multiplier=sa.noise_multiplier, members=members, dim=dim), dim
    codec = codec_for(sa, members=members, length=dim)
    return codec.plan, codec.padded
