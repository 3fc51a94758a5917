"""Distributed discrete-Gaussian noise for secure aggregation: each member adds integer noise to
its clipped, quantized update so that the bucket SUM carries the central noise.

Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation", ICML 2021 (arXiv:2102.06387): every member of a bucket adds an independent
N_Z(0, sigma^2) vector; only the sum is revealed; ``accountant.round_rho`` gives its privacy.

The sampler is EXACT: Canonne, Kamath & Steinke, "The Discrete Gaussian for Differential
Privacy", NeurIPS 2020 (arXiv:2004.00010), Algorithms 1-3 (Bernoulli(exp(-gamma)) by the
alternating series, a discrete-Laplace proposal, and rejection), in integer arithmetic only:
no floating point ever decides a sample (Mironov, "On Significance of the Least Significant Bits
for Differential Privacy", CCS 2012, shows how floating-point samplers leak). The hot path runs
the same algorithm on many lanes at once with numpy uint64/int64 integers; whenever a lane's
integers could leave 63 bits it finishes on the scalar Python-integer path, so the
distribution never depends on the fast path.

The lattice: an update ``q`` (int64, units of 2**-28, see protocol/fixedpoint.py) is rounded to
multiples of a power-of-two step ``g`` and the noise is drawn on that lattice, so that the query
and the noise live on the same lattice (the discrete Gaussian mechanism needs that); the
rounding adds at most sqrt(d) * g / 2 to the update's L2 norm, which the plan adds to the
sensitivity.
"""
from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = [
    "RandomSource",
    "discrete_gaussian",
    "discrete_gaussian_scalar",
    "round_to_lattice",
    "NoisePlan",
    "plan_noise",
    "add_noise",
]

_U64 = np.uint64
_MAX_K = 64  # alternating-series lanes that get this far (probability < 1/63!) finish in Python
_WIDE = 1 << 62  # integers the vectorized path may hold


# ---------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------


class RandomSource:
    """Uniform random bits: the OS CSPRNG (``secure``) or a SHAKE-256 stream (``seeded``).

    All sampling goes through ``randbits``/``randbelow`` (Python integers) or ``words``
    (numpy uint64), which draw from one byte stream, so a seeded source is reproducible
    bit for bit on every machine.
    """

    _BLOCK = 1 << 16

    def __init__(self, read):
        self._read = read  # read(n) -> n uniformly random bytes

    @classmethod
    def secure(cls) -> "RandomSource":
        return cls(secrets.token_bytes)

    @classmethod
    def seeded(cls, seed: bytes) -> "RandomSource":
        """Deterministic stream: SHAKE-256(seed || counter) blocks, in counter order."""
        if not isinstance(seed, (bytes, bytearray)):
            raise TypeError("seed must be bytes")
        prefix = b"fedchain/secagg/noise/v1\x00" + len(seed).to_bytes(8, "big") + bytes(seed)
        state = {"counter": 0, "buf": b"", "pos": 0}

        def read(n: int) -> bytes:
            buf, pos = state["buf"], state["pos"]
            out = []
            while n > 0:
                if pos == len(buf):
                    block = prefix + state["counter"].to_bytes(8, "big")
                    buf, pos = hashlib.shake_256(block).digest(cls._BLOCK), 0
                    state["counter"] += 1
                take = min(n, len(buf) - pos)
                out.append(buf[pos : pos + take])
                pos += take
                n -= take
            state["buf"], state["pos"] = buf, pos
            return b"".join(out)

        return cls(read)

    def randbits(self, k: int) -> int:
        """A uniform integer in [0, 2**k)."""
        if k < 0:
            raise ValueError("k must be >= 0")
        if k == 0:
            return 0
        nbytes = (k + 7) // 8
        return int.from_bytes(self._read(nbytes), "big") >> (8 * nbytes - k)

    def randbelow(self, n: int) -> int:
        """A uniform integer in [0, n), by rejection (exact)."""
        if n <= 0:
            raise ValueError("n must be > 0")
        k = (n - 1).bit_length()
        while True:
            r = self.randbits(k)
            if r < n:
                return r

    def words(self, n: int, width: int = 64) -> np.ndarray:
        """``n`` uniform ``width``-bit values (width 32 or 64), as a writable uint64 array."""
        if width == 64:
            return np.frombuffer(bytearray(self._read(8 * n)), dtype="<u8").astype(_U64, copy=False)
        if width == 32:
            return np.frombuffer(self._read(4 * n), dtype="<u4").astype(_U64)
        raise ValueError("width must be 32 or 64")

    def bits(self, n: int) -> np.ndarray:
        """``n`` uniform bits, as a bool array."""
        return np.unpackbits(np.frombuffer(self._read((n + 7) // 8), dtype=np.uint8), count=n).astype(bool)


# ---------------------------------------------------------------------------------------------
# Scalar reference path: Python integers, Canonne-Kamath-Steinke Algorithms 1-3
# ---------------------------------------------------------------------------------------------


def _bernoulli_exp_unit(num: int, den: int, rng: RandomSource, k: int = 1) -> int:
    """Bernoulli(exp(-num/den)) for 0 <= num <= den (CKS Algorithm 1, gamma in [0, 1]).

    K = k, k+1, ... while Bernoulli(gamma / K) succeeds; the result is 1 iff the last K is odd.
    ``k`` > 1 continues a run that a vectorized lane started.
    """
    while rng.randbelow(den * k) < num:
        k += 1
    return k & 1


def _bernoulli_exp(num: int, den: int, rng: RandomSource) -> int:
    """Bernoulli(exp(-num/den)) for any num/den >= 0 (CKS Algorithm 1, gamma > 1 part)."""
    whole, rest = divmod(num, den)
    for _ in range(whole):
        if not _bernoulli_exp_unit(1, 1, rng):
            return 0
    return _bernoulli_exp_unit(rest, den, rng)


def _discrete_laplace(t: int, rng: RandomSource) -> int:
    """P[Y = y] proportional to exp(-|y| / t), integer t >= 1 (CKS Algorithm 2 with s = 1)."""
    while True:
        u = rng.randbelow(t)
        if not _bernoulli_exp_unit(u, t, rng):
            continue
        v = 0
        while _bernoulli_exp_unit(1, 1, rng):
            v += 1
        x = u + t * v
        negative = rng.randbits(1)
        if negative and x == 0:
            continue
        return -x if negative else x


def _params(sigma_sq: Fraction) -> tuple[int, int, int]:
    """(a, b, t): sigma^2 = a/b in lowest terms, and the Laplace scale t = floor(sigma) + 1."""
    sigma_sq = Fraction(sigma_sq)
    if sigma_sq <= 0:
        raise ValueError(f"sigma_sq must be > 0, got {sigma_sq}")
    a, b = sigma_sq.numerator, sigma_sq.denominator
    return a, b, math.isqrt(a // b) + 1  # floor(sqrt(a/b)) == isqrt(floor(a/b))


def _accept(y: int, a: int, b: int, t: int, rng: RandomSource) -> int:
    """Bernoulli(exp(-(|y| - sigma^2/t)^2 / (2 sigma^2))), with sigma^2 = a/b:
    the exponent is (|y| b t - a)^2 / (2 a b t^2)."""
    return _bernoulli_exp((abs(y) * b * t - a) ** 2, 2 * a * b * t * t, rng)


def discrete_gaussian_scalar(sigma_sq: Fraction, rng: RandomSource) -> int:
    """One exact sample of N_Z(0, sigma_sq) (CKS Algorithm 3), Python integers only."""
    a, b, t = _params(sigma_sq)
    while True:
        y = _discrete_laplace(t, rng)
        if _accept(y, a, b, t, rng):
            return y


# ---------------------------------------------------------------------------------------------
# Vectorized path: the same algorithms on many lanes, numpy integers below 2**62
# ---------------------------------------------------------------------------------------------


def _uniform_below(m: int, n: int, rng: RandomSource) -> np.ndarray:
    """``n`` exact uniform integers in [0, m), 1 <= m < 2**63: a W-bit word w is kept when
    w >= 2**W mod m, so the kept range is a multiple of m and w mod m is uniform.
    W = 32 when m < 2**24 (at most 1/256 of the words redrawn), else 64."""
    width = 32 if m < 1 << 24 else 64
    thr, mm = _U64((1 << width) % m), _U64(m)
    w = rng.words(n, width)
    bad = np.flatnonzero(w < thr)
    while bad.size:
        w[bad] = rng.words(bad.size, width)
        bad = bad[w[bad] < thr]
    return (w % mm).astype(np.int64)


def _bernoulli_exp_unit_vec(num: np.ndarray, den: int, rng: RandomSource) -> np.ndarray:
    """Lane-wise Bernoulli(exp(-num/den)) as bools, 0 <= num <= den < 2**56 (CKS Algorithm 1:
    K = 1, 2, ... while Bernoulli(num / (den K)) succeeds; true iff the last K is odd)."""
    num = np.asarray(num, dtype=np.int64)
    go_on = _uniform_below(den, num.size, rng) < num
    out = ~go_on  # stopped at K = 1: odd
    live, k = np.flatnonzero(go_on), 2
    while live.size:
        if k >= _MAX_K:  # probability < 1/63!: finish these lanes on Python integers
            for i in live:
                out[i] = bool(_bernoulli_exp_unit(int(num[i]), den, rng, k))
            break
        go_on = _uniform_below(den * k, live.size, rng) < num[live]
        out[live[~go_on]] = bool(k & 1)
        live, k = live[go_on], k + 1
    return out


def _bernoulli_exp_one(n: int, rng: RandomSource) -> np.ndarray:
    """``n`` Bernoulli(exp(-1)) as bools (CKS Algorithm 1 with gamma = 1)."""
    return _bernoulli_exp_unit_vec(np.ones(n, dtype=np.int64), 1, rng)


def _bernoulli_exp_vec(num: np.ndarray, den: int, rng: RandomSource) -> np.ndarray:
    """Lane-wise Bernoulli(exp(-num/den)) as bools, num >= 0, den < 2**56: floor(gamma)
    Bernoulli(exp(-1)) trials that must all succeed, and one Bernoulli(exp(-frac(gamma)))."""
    whole, rest = np.divmod(np.asarray(num, dtype=np.int64), den)
    out = _bernoulli_exp_unit_vec(rest, den, rng)
    live = np.flatnonzero((whole > 0) & out)
    while live.size:
        ok = _bernoulli_exp_one(live.size, rng)
        out[live[~ok]] = False
        live = live[ok]
        whole[live] -= 1
        live = live[whole[live] > 0]
    return out


def _discrete_laplace_vec(t: int, n: int, rng: RandomSource) -> np.ndarray:
    """Up to ``n`` discrete-Laplace(t) samples (CKS Algorithm 2, s = 1): ``n`` proposals, the
    rejected ones dropped (the caller asks again), in lane order."""
    u = _uniform_below(t, n, rng)
    u = u[_bernoulli_exp_unit_vec(u, t, rng)]
    v = np.zeros(u.size, dtype=np.int64)
    live = np.arange(u.size)
    while live.size:
        live = live[_bernoulli_exp_one(live.size, rng)]
        v[live] += 1
    x = u + t * v
    negative = rng.bits(x.size)
    keep = ~(negative & (x == 0))
    return np.where(negative, -x, x)[keep]


def _discrete_gaussian_vec(a: int, b: int, t: int, n: int, rng: RandomSource) -> np.ndarray:
    """Up to ``n`` accepted samples of N_Z(0, a/b) from ``n`` proposals (CKS Algorithm 3)."""
    y = _discrete_laplace_vec(t, n, rng)
    den = 2 * a * b * t * t
    ymax = (math.isqrt(_WIDE) - 1 + a) // (b * t)  # |y| <= ymax: (|y| b t - a)**2 < 2**62
    wide = np.abs(y) > ymax
    narrow = np.flatnonzero(~wide)
    ok = np.zeros(y.size, dtype=bool)
    if narrow.size:
        d = np.abs(y[narrow]) * (b * t) - a
        ok[narrow] = _bernoulli_exp_vec(d * d, den, rng)
    for i in np.flatnonzero(wide):  # tails far beyond any sigma in use: Python integers
        ok[i] = bool(_accept(int(y[i]), a, b, t, rng))
    return y[ok]


def discrete_gaussian(sigma_sq: Fraction, n: int, rng: RandomSource) -> np.ndarray:
    """``n`` i.i.d. exact samples of the discrete Gaussian N_Z(0, sigma_sq), as int64.

    P[X = x] is proportional to exp(-x^2 / (2 sigma_sq)) for every integer x
    (Canonne-Kamath-Steinke, NeurIPS 2020, Algorithm 3). ``sigma_sq`` is any positive rational;
    integer ``sigma_sq`` up to about 2**26 (sigma up to 2**13) runs on the vectorized path.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    a, b, t = _params(sigma_sq)
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out
    if 2 * a * b * t * t * _MAX_K >= _WIDE:  # too wide for 64-bit lanes: the scalar path
        for i in range(n):
            out[i] = discrete_gaussian_scalar(Fraction(a, b), rng)
        return out
    filled = 0
    while filled < n:
        want = n - filled
        got = _discrete_gaussian_vec(a, b, t, want * 2 + 64, rng)  # ~0.5 acceptance, with margin
        take = min(want, got.size)
        out[filled : filled + take] = got[:take]
        filled += take
    return out


# ---------------------------------------------------------------------------------------------
# The lattice and the per-member noise plan
# ---------------------------------------------------------------------------------------------


def round_to_lattice(q: np.ndarray, step: int) -> np.ndarray:
    """Each value to the nearest multiple of ``step`` (ties upward), int64. ``step`` = 2**k."""
    if step < 1 or step & (step - 1):
        raise ValueError(f"lattice step must be a power of two, got {step}")
    q = np.asarray(q, dtype=np.int64)
    if step == 1:
        return q.copy()
    return ((q + step // 2) // step) * step


@dataclass(frozen=True)
class NoisePlan:
    """How a member noises its update (all lattice quantities in units of ``step``)."""

    step: int  # g, a power of two, in fixed-point units (2**-frac_bits)
    member_sigma_sq: Fraction  # per-member discrete-Gaussian variance, lattice units
    sensitivity: float  # L2 sensitivity in lattice units: clip / g + sqrt(dim) / 2 (rounding)
    members: int  # the bucket size it was planned for


def _floor_log2(x: Fraction) -> int:
    """floor(log2(x)) of a positive rational, exactly."""
    e = x.numerator.bit_length() - x.denominator.bit_length()
    return e if x >= Fraction(2) ** e else e - 1


def plan_noise(*, clip: float, noise_multiplier: float, members: int, dim: int, frac_bits: int = 28,
               target_sigma_bits: int = 10) -> NoisePlan:
    """The lattice step and per-member variance for a bucket of ``members`` (Kairouz et al. 2021).

    Central std (real units) = noise_multiplier * clip; per-member variance = central variance /
    members. The step g = 2**k is the largest (k >= 0) that keeps the per-member std in lattice
    units at least 2**target_sigma_bits (so it lies in [2**t, 2**(t+1)) unless g = 1). The
    variance is rounded UP to an integer (more noise, never less; fast sampler path). Exact
    rational arithmetic from the floats' exact values: every machine derives the same plan.
    """
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive number, got {clip!r}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be a positive number, got {noise_multiplier!r}")
    if members < 1 or dim < 1 or frac_bits < 0 or target_sigma_bits < 0:
        raise ValueError("members and dim must be >= 1; frac_bits and target_sigma_bits >= 0")
    scale = Fraction(1 << frac_bits)
    var_fixed = (Fraction(noise_multiplier) * Fraction(clip) * scale) ** 2 / members
    k = max(0, (_floor_log2(var_fixed) - 2 * target_sigma_bits) // 2)
    step = 1 << k
    var_lattice = var_fixed / (step * step)
    sigma_sq = Fraction(-((-var_lattice.numerator) // var_lattice.denominator))  # ceil
    sensitivity = float(Fraction(clip) * scale / step) + math.sqrt(dim) / 2
    return NoisePlan(step=step, member_sigma_sq=sigma_sq, sensitivity=sensitivity, members=members)


def add_noise(q: np.ndarray, plan: NoisePlan, rng: RandomSource) -> np.ndarray:
    """A member's noisy update: ``q`` rounded to the plan's lattice plus ``step`` times an exact
    N_Z(0, member_sigma_sq) vector, int64 in fixed-point units, shaped like ``q``."""
    q = np.asarray(q, dtype=np.int64)
    noise = discrete_gaussian(plan.member_sigma_sq, q.size, rng).reshape(q.shape)
    return round_to_lattice(q, plan.step) + plan.step * noise
