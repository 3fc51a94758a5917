"""Exact fixed-point arithmetic for everything peers must agree on bit for bit.

Float sums depend on instruction set and thread count; integer sums do not. Parameters and
updates are turned into int64 multiples of 2**-FRAC_BITS, combined with integer operations in
a canonical order, and turned back into float32 by exact scaling plus one IEEE rounding.
"""
from __future__ import annotations

import math

import torch

__all__ = [
    "FRAC_BITS",
    "LIMIT",
    "WEIGHT_BITS",
    "quantize",
    "dequantize",
    "exact_sq_norm",
    "exact_sq_norms",
    "normalized_weights",
    "clip_to_norm",
    "state_to_vector",
    "vector_to_state",
]

FRAC_BITS = 28  # resolution 3.7e-9
LIMIT = 1 << 42  # |value| <= 2**14 after scaling; larger values are clamped
WEIGHT_BITS = 20  # weights are fractions of 2**20, so sum(w * q) < 2**62
_SCALE = float(1 << FRAC_BITS)
_CHUNK = 1 << 18


def quantize(t: torch.Tensor) -> torch.Tensor:
    """float tensor -> int64 fixed point (round half to even, clamped to +-LIMIT)."""
    q = torch.round(t.detach().to(torch.float64) * _SCALE)
    if bool(torch.isnan(q).any()):
        raise ValueError("cannot quantize NaN")  # artifacts with NaN are rejected before this
    return q.clamp_(-LIMIT, LIMIT).to(torch.int64)


def dequantize(q: torch.Tensor) -> torch.Tensor:
    """int64 fixed point -> float32; exact division by a power of two, then one rounding."""
    return (q.to(torch.float64) / _SCALE).to(torch.float32)


def exact_sq_norm(q: torch.Tensor) -> int:
    """Exact squared L2 norm of an int64 vector (|q| <= LIMIT), as a Python int.

    Each value is split as hi * 2**21 + lo so that every partial sum fits in int64; the
    partial sums are combined in Python's unbounded integers.
    """
    flat = q.reshape(-1)
    total = 0
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK]
        hi = torch.div(part, 1 << 21, rounding_mode="floor")
        lo = part - hi * (1 << 21)
        total += (int((hi * hi).sum()) << 42) + (int((hi * lo).sum()) << 22) + int((lo * lo).sum())
    return total


def exact_sq_norms(rows: torch.Tensor) -> list[int]:
    return [exact_sq_norm(r) for r in rows]


def normalized_weights(weights: list[int]) -> torch.Tensor:
    """Integer weights -> int64 fractions of 2**WEIGHT_BITS (floor), in the same order."""
    total = sum(weights)
    if total <= 0:
        raise ValueError("weights must have a positive sum")
    return torch.tensor([(w << WEIGHT_BITS) // total for w in weights], dtype=torch.int64)


def clip_to_norm(q: torch.Tensor, sq_norm: int, bound_sq: int) -> torch.Tensor:
    """Scale ``q`` down so its norm is at most sqrt(bound_sq), using only integer arithmetic."""
    if sq_norm <= bound_sq or sq_norm == 0:
        return q
    factor = math.isqrt((bound_sq << (2 * WEIGHT_BITS)) // sq_norm)  # floor(2**20 * bound / norm)
    return torch.div(q * factor, 1 << WEIGHT_BITS, rounding_mode="floor")


def state_to_vector(state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Flatten tensors in sorted-name order (the canonical order used everywhere)."""
    return torch.cat([state[k].reshape(-1) for k in sorted(state)])


def vector_to_state(vec: torch.Tensor, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``state_to_vector`` for tensors shaped like ``like``."""
    out, pos = {}, 0
    for k in sorted(like):
        n = like[k].numel()
        out[k] = vec[pos : pos + n].reshape(like[k].shape).contiguous()
        pos += n
    return out
