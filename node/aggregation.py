"""Aggregation rules: how every peer turns the round's valid updates into one global model.

Each rule is a pure function over exact int64 fixed-point updates (rows in canonical member
order) and integer weights, returning the aggregated delta and which rows it kept. Because
only integer arithmetic is used, every honest peer gets the same bits on any hardware.

Weighting (all rules that weight): ``w_i = min(samples_i, sample_cap) * reputation_i``, the
sample count the peer reports in its artifact, capped so no single peer dominates, times its
on-chain reputation at submission.

Speed: the rules work on column blocks of the ``[n, d]`` update matrix so that the data a block
needs stays in cache, and the exact inner products that Multi-Krum and trust-cosine need come
from float64 matrix products over small integer pieces whose every partial sum is provably an
exactly representable integer (see ``_exact_gram``). Every result is an exact integer function
of the inputs: no rounding depends on the BLAS kernel, blocking or thread count.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .fixedpoint import (
    LIMIT,
    WEIGHT_BITS,
    clip_to_norm,
    dequantize,
    exact_sq_norm,
    normalized_weights,
    quantize,
)
from .models import state_to_vector, vector_to_state

__all__ = [
    "Contribution",
    "Aggregate",
    "RULES",
    "RULE_IDS",
    "fedavg_clipped",
    "coordinate_median",
    "trimmed_mean",
    "multi_krum",
    "trust_cosine",
    "AggregationStrategy",
    "strategy_for",
]

# clip_to_norm and exact_sq_norm are the reference definitions the blocked code below must match
# bit for bit (the tests check it); they stay imported so callers can keep using them from here.
_REFERENCE = (clip_to_norm, exact_sq_norm)

_BLOCK = 1 << 12  # columns per block: n rows of int64 and their float64 pieces stay in cache
_ONE = 1 << WEIGHT_BITS


@dataclass(frozen=True)
class Aggregate:
    """A rule's output: the aggregated delta (int64 fixed point) and the rows it included."""

    delta: torch.Tensor
    included: tuple[int, ...]


# --------------------------------------------------------------------------- exact helpers


def _lower_median(values: list[int]) -> int:
    return sorted(values)[(len(values) - 1) // 2]


def _max_abs(rows: torch.Tensor) -> int:
    if rows.numel() == 0:
        return 0
    lo, hi = torch.aminmax(rows)
    return max(int(hi), -int(lo))


def _check_rows(rows: torch.Tensor) -> None:
    if rows.dim() != 2 or rows.dtype != torch.int64:
        raise ValueError(f"rows must be a 2-D int64 tensor, got {rows.dtype}{list(rows.shape)}")
    if rows.shape[0] == 0:
        raise ValueError("no updates to aggregate")


def _blocks(d: int, size: int = 0):
    size = size or _BLOCK
    for start in range(0, d, size):
        yield start, min(start + size, d)


def _combine(rows: torch.Tensor, keep: list[int], w: torch.Tensor, transform=None) -> torch.Tensor:
    """``floor(sum_k w[k] * t(rows[keep[k]]) / 2**WEIGHT_BITS)``, exactly, block by block.

    ``w`` holds int64 fractions of 2**WEIGHT_BITS with ``sum(w) <= 2**WEIGHT_BITS`` (as
    normalized_weights returns them) and ``t`` (identity by default) maps rows to values of
    magnitude <= LIMIT = 2**42, so every partial sum is at most 2**20 * 2**42 = 2**62 < 2**63:
    int64 never overflows and the order of the additions cannot change the result.
    ``>> WEIGHT_BITS`` is an arithmetic shift, i.e. floor division by 2**WEIGHT_BITS.
    """
    d = rows.shape[1]
    out = torch.empty(d, dtype=torch.int64)
    if not keep:
        return out.zero_()
    every = keep == list(range(rows.shape[0]))
    index = torch.tensor(keep, dtype=torch.int64)
    wcol = w.reshape(-1, 1)
    for a, b in _blocks(d):
        x = rows[:, a:b] if every else rows[:, a:b].index_select(0, index)
        if transform is not None:
            x = transform(x)
        torch.sum(x * wcol, dim=0, out=out[a:b])
    return out.bitwise_right_shift_(WEIGHT_BITS)


def _weighted_sum(rows: torch.Tensor, weights: list[int], keep: list[int]) -> torch.Tensor:
    """Weighted mean of ``rows[keep]``; equal weights when the kept weights sum to zero."""
    w = normalized_weights([weights[i] for i in keep]) if sum(weights[i] for i in keep) > 0 else normalized_weights([1] * len(keep))
    return _combine(rows, keep, w)


def _scaled(factors: list[int]):
    """Row transform ``x -> floor(x * f / 2**WEIGHT_BITS)`` for per-row factors ``0 <= f <= 2**20``.

    |x * f| <= 2**42 * 2**20 = 2**62, and |result| <= |x|, so no overflow and no clamping.
    """
    col = torch.tensor(factors, dtype=torch.int64).reshape(-1, 1)
    if all(f == _ONE for f in factors):
        return None
    return lambda x: (x * col).bitwise_right_shift_(WEIGHT_BITS)


def _exact_sq_norms(rows: torch.Tensor) -> list[int]:
    """Exact squared L2 norm of every row (|values| <= LIMIT), as Python ints.

    Same values as ``fixedpoint.exact_sq_norm`` row by row, computed for all rows at once: each
    value is split as ``x = hi * 2**21 + lo`` with ``lo`` in [-2**20, 2**20) and
    ``|hi| <= 2**21`` (since |x| <= 2**42), so every product is at most 2**42 in magnitude and
    a row sum over a block of at most 2**12 columns is at most 2**54 < 2**63. Block sums are
    added up in Python's unbounded integers.
    """
    n, d = rows.shape
    hh, hl, ll = [0] * n, [0] * n, [0] * n
    for a, b in _blocks(d):
        x = rows[:, a:b]
        hi = (x + (1 << 20)).bitwise_right_shift_(21)
        lo = x - (hi << 21)
        for acc, t in ((hh, (hi * hi).sum(1)), (hl, (hi * lo).sum(1)), (ll, (lo * lo).sum(1))):
            for i, v in enumerate(t.tolist()):
                acc[i] += v
    return [(hh[i] << 42) + (hl[i] << 22) + ll[i] for i in range(n)]


# Exact inner products with float64 matrix products.
#
# Every value x (|x| <= 2**B - 1 <= LIMIT = 2**42, so B <= 43) is split into two balanced
# digits x = hi * 2**s + lo with s = ceil((B + 1) / 2), lo = x - hi * 2**s in [-2**(s-1), 2**(s-1))
# and hi = floor((x + 2**(s-1)) / 2**s), so |hi| <= 2**(B-s) <= 2**(s-1) and both pieces are
# integers of magnitude at most 2**b with b = s - 1 <= 21. The float64 product of the stacked
# pieces P (2n x k) with its transpose holds, in every entry, a sum of k products of magnitude at
# most 2**(2b). Whatever order, blocking, vectorization or FMA the BLAS kernel uses, every
# intermediate value is an integer sum of some of those products, hence of magnitude at most
# k * 2**(2b). Choosing k <= SPAN = 2**(53 - 2b) keeps that at most 2**53, and binary64
# represents every integer of magnitude <= 2**53 exactly; IEEE 754 operations whose exact result
# is representable return it exactly. So each block product is the exact integer, and so is
# ``addmm`` accumulation over blocks as long as the accumulated column count stays <= SPAN.
# (Worst case B = 43: s = 22, b = 21, SPAN = 2**11 columns.) Each float64 accumulator is then
# moved into an int64 accumulator (exact conversion, |entry| <= 2**53); after at most 2**9 such
# moves (|entry| <= 2**62 < 2**63) the int64 accumulator is moved into Python ints. The piece
# Gram entries recombine as <x, y> = HH * 2**(2s) + (HL + LH) * 2**s + LL.

_FLUSH = 1 << 9  # float64 accumulators an int64 accumulator may absorb: 2**9 * 2**53 = 2**62


def _exact_gram(rows: torch.Tensor, extra: torch.Tensor | None = None) -> list[list[int]]:
    """Exact Gram matrix ``<r_i, r_j>`` (Python ints) of ``rows`` followed by ``extra``'s rows."""
    parts = [rows] if extra is None else [rows, extra]
    n = sum(p.shape[0] for p in parts)
    d = rows.shape[1]
    amax = max(_max_abs(p) for p in parts)
    if amax > LIMIT:
        raise ValueError(f"fixed-point values exceed the limit 2**42 (max |value| {amax})")
    if amax == 0 or d == 0:
        return [[0] * n for _ in range(n)]
    s = (amax.bit_length() + 2) // 2  # ceil((B + 1) / 2)
    span = 1 << (53 - 2 * (s - 1))
    width = min(_BLOCK, span)
    half = 1 << (s - 1)
    pieces = torch.empty(2 * n, width, dtype=torch.float64)
    acc_f = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    acc_i = torch.zeros(2 * n, 2 * n, dtype=torch.int64)
    total = [[0] * (2 * n) for _ in range(2 * n)]
    cols = moves = 0

    def move_float():
        nonlocal cols, moves
        acc_i.add_(acc_f.to(torch.int64))
        acc_f.zero_()
        cols, moves = 0, moves + 1
        if moves == _FLUSH:
            move_int()

    def move_int():
        nonlocal moves
        for row, add in zip(total, acc_i.tolist()):
            for j, v in enumerate(add):
                row[j] += v
        acc_i.zero_()
        moves = 0

    for a, b in _blocks(d, width):
        k = b - a
        if cols + k > span:
            move_float()
        block = pieces[:, :k]
        r = 0
        for p in parts:
            m = p.shape[0]
            x = p[:, a:b]
            hi = (x + half).bitwise_right_shift_(s)
            block[r : r + m].copy_(hi)
            block[n + r : n + r + m].copy_(x - (hi << s))
            r += m
        acc_f.addmm_(block, block.t())
        cols += k
    move_float()
    move_int()
    return [
        [(total[i][j] << (2 * s)) + ((total[i][n + j] + total[n + i][j]) << s) + total[n + i][n + j] for j in range(n)]
        for i in range(n)
    ]


def _median_rows(rows: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise lower median (``sorted[(n - 1) // 2]``) of int64 rows, block by block.

    ``torch.median`` returns the lower of the two middle values for an even count; on integers
    the value is exact whatever algorithm picks it.
    """
    n, d = rows.shape
    if n == 1:
        return rows[0].clone()
    out = torch.empty(d, dtype=torch.int64)
    for a, b in _blocks(d):
        torch.median(rows[:, a:b], dim=0, out=(out[a:b], torch.empty(b - a, dtype=torch.int64)))
    return out


# --------------------------------------------------------------------------- rules


def fedavg_clipped(rows: torch.Tensor, weights: list[int], *, clip_sq: int = 0) -> Aggregate:
    """Reputation-weighted FedAvg with L2 norm clipping.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS 2017), with per-update norm clipping as in McMahan et al., "Learning
    Differentially Private Recurrent Language Models" (ICLR 2018). ``clip_sq`` is the squared
    bound in fixed-point units; 0 clips to the lower median of the updates' norms.

    Bit-identical to clipping each row with ``fixedpoint.clip_to_norm`` and then taking the
    weighted mean, but done in one blocked pass.
    """
    _check_rows(rows)
    n = rows.shape[0]
    norms = _exact_sq_norms(rows)
    bound = clip_sq or _lower_median(norms)
    # clip_to_norm's factor, floor(2**20 * sqrt(bound) / norm); 2**20 (identity) when unclipped.
    factors = [_ONE if (q <= bound or q == 0) else math.isqrt((bound << (2 * WEIGHT_BITS)) // q) for q in norms]
    keep = list(range(n))
    w = normalized_weights(weights) if sum(weights) > 0 else normalized_weights([1] * n)
    return Aggregate(_combine(rows, keep, w, _scaled(factors)), tuple(keep))


def coordinate_median(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Coordinate-wise median (lower median for an even count).

    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    (ICML 2018). Weights are not used: the median is the robust statistic itself.
    """
    _check_rows(rows)
    return Aggregate(_median_rows(rows), tuple(range(rows.shape[0])))


def trimmed_mean(rows: torch.Tensor, weights: list[int], *, trim: float = 0.2) -> Aggregate:
    """Coordinate-wise trimmed mean: drop the ``trim`` fraction of largest and smallest values.

    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    (ICML 2018). The mean of the kept values is rounded down (floor division).
    """
    _check_rows(rows)
    n, d = rows.shape
    k = min(int(n * trim), (n - 1) // 2)
    out = torch.empty(d, dtype=torch.int64)
    for a, b in _blocks(d):
        x = rows[:, a:b]
        if k:
            # Sorting the transposed, contiguous block along its last dimension is several
            # times faster than sorting along dim 0; the values are the same integers.
            x = torch.sort(x.t().contiguous(), dim=1).values[:, k : n - k]
            torch.sum(x, dim=1, out=out[a:b])
        else:
            torch.sum(x, dim=0, out=out[a:b])
    return Aggregate(torch.div(out, n - 2 * k, rounding_mode="floor"), tuple(range(n)))


def krum_scores(rows: torch.Tensor, f: int) -> list[int]:
    """Krum scores: each row's sum of exact squared distances to its ``n - f - 2`` nearest others.

    Squared distances ``|x_i|**2 + |x_j|**2 - 2 <x_i, x_j>`` are exact integers (Python ints)
    from an exact Gram matrix, so scores and their ranking are the same on every peer.
    """
    n = rows.shape[0]
    k = n - f - 2
    if f < 0 or k < 1:
        raise ValueError(f"Krum needs 0 <= f <= n - 3 (n={n}, f={f})")
    g = _exact_gram(rows)
    scores = []
    for i in range(n):
        dist = sorted(g[i][i] + g[j][j] - 2 * g[i][j] for j in range(n) if j != i)
        scores.append(sum(dist[:k]))
    return scores


def multi_krum(rows: torch.Tensor, weights: list[int], *, f: int | None = None, m: int | None = None) -> Aggregate:
    """Multi-Krum: average the ``m`` updates with the lowest Krum scores.

    Krum from Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent" (NeurIPS 2017): an update's score is the sum of its squared distances to its
    ``n - f - 2`` nearest neighbours, where ``f`` is the number of Byzantine updates tolerated
    (the guarantee needs ``n > 2f + 2``). Multi-Krum, introduced in the same paper and studied by
    El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in Byzantium" (ICML 2018),
    selects the ``m`` best-scored updates (scores computed once) and averages them.

    Defaults: ``f = max(0, floor((n - 3) / 2))``, the most the guarantee allows, and
    ``m = n - f``. With ``n <= 2`` there are no neighbours to score and every update is kept.
    Scores are exact integers; ties are broken by member order. The selected rows are averaged
    with the integer ``weights`` (equal weights if the selected weights sum to zero).
    """
    _check_rows(rows)
    n = rows.shape[0]
    if n <= 2:
        keep = list(range(n))
    else:
        f = max((n - 3) // 2, 0) if f is None else f
        m = n - f if m is None else m
        if not 1 <= m <= n:
            raise ValueError(f"Multi-Krum needs 1 <= m <= n (n={n}, m={m})")
        scores = krum_scores(rows, f)
        keep = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
    return Aggregate(_weighted_sum(rows, weights, keep), tuple(keep))


def trust_scores(rows: torch.Tensor, reference: torch.Tensor) -> tuple[list[int], list[int], list[int], int]:
    """Fixed-point ReLU(cosine) of each row with ``reference``, exactly.

    Returns ``(scores, dots, sq_norms, ref_sq_norm)``, all Python ints. The score is
    ``floor(2**20 * max(0, cos))`` where ``cos = <x, r> / (|x| |r|)``: for ``<x, r> > 0`` it is
    ``isqrt(floor(2**40 <x, r>**2 / (|x|**2 |r|**2)))`` (``isqrt(floor(y)) == floor(sqrt(y))``),
    at most 2**20 by Cauchy-Schwarz; 0 when ``<x, r> <= 0`` or either norm is 0.
    """
    n = rows.shape[0]
    g = _exact_gram(rows, reference.reshape(1, -1))
    dots = [g[i][n] for i in range(n)]
    norms = [g[i][i] for i in range(n)]
    ref = g[n][n]
    scores = []
    for dot, q in zip(dots, norms):
        if dot <= 0 or q == 0 or ref == 0:
            scores.append(0)
        else:
            scores.append(min(math.isqrt(((dot * dot) << (2 * WEIGHT_BITS)) // (q * ref)), _ONE))
    return scores, dots, norms, ref


def _rescaled(factors: list[int]):
    """Row transform ``x -> clamp(floor(x * F / 2**20), -LIMIT, LIMIT)`` for any ``F >= 0``.

    Overflow-free: with ``F = Fh * 2**20 + Fl`` (``0 <= Fl < 2**20``),
    ``floor(x F / 2**20) = x Fh + floor(x Fl / 2**20)`` exactly. Before multiplying, x is clamped
    to ``[-T, T]`` with ``T = ceil((LIMIT + 1) * 2**20 / F)``: any |x| >= T already maps to at
    least LIMIT + 1 in magnitude, with x's sign, so the final clamp gives the same value. F is
    first capped at ``(LIMIT + 1) * 2**20`` (for such F every nonzero x maps beyond the limit, so
    the cap changes nothing). Then |x Fl| < 2**42 * 2**20 = 2**62 and
    |x Fh| <= T F / 2**20 < LIMIT + 1 + F / 2**20 <= 2**43 + 2, so the sum is below 2**63.
    Factors <= 2**20 (scaling down) take the plain ``floor(x F / 2**20)``, |x F| <= 2**62.
    """
    cap = (LIMIT + 1) << WEIGHT_BITS
    factors = [min(f, cap) for f in factors]
    if all(f <= _ONE for f in factors):
        return _scaled(factors)
    hi = torch.tensor([f >> WEIGHT_BITS for f in factors], dtype=torch.int64).reshape(-1, 1)
    lo = torch.tensor([f & (_ONE - 1) for f in factors], dtype=torch.int64).reshape(-1, 1)
    bound = torch.tensor([min(-(-(LIMIT + 1) * _ONE // f), LIMIT) if f else LIMIT for f in factors],
                         dtype=torch.int64).reshape(-1, 1)

    def transform(x):
        x = torch.clamp(x, -bound, bound)
        y = (x * lo).bitwise_right_shift_(WEIGHT_BITS)
        return y.add_(x * hi).clamp_(-LIMIT, LIMIT)

    return transform


def trust_cosine(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Trust-weighted mean with the coordinate-wise median as the trust reference.

    After FLTrust: Cao et al., "FLTrust: Byzantine-robust Federated Learning via Trust
    Bootstrapping" (NDSS 2021). Each update gets the trust score ``ReLU(cos(update, reference))``,
    is rescaled to the reference's norm, and the aggregate is the trust-weighted mean of the
    rescaled updates; updates with zero trust are excluded.

    Deviations from FLTrust:

    * No server root dataset: FLTrust's reference is an update the server computes on a small
      clean dataset. A decentralized task has no trusted party, so the reference here is the
      coordinate-wise (lower) median of the received updates themselves (Yin et al., ICML 2018).
      The robustness therefore rests on an honest majority per coordinate, not on a clean root
      dataset, and FLTrust's tolerance of a malicious majority does not carry over.
    * Weights: a row's weight is its fixed-point trust score times its ``weights`` entry (sample
      count times reputation), instead of the trust score alone. If the trusted rows' weights
      sum to zero, the trust scores alone are used.
    * Exact integer arithmetic: trust scores are ``floor(2**20 * cos)`` computed from exact inner
      products with integer square roots; rescaling is ``floor(x * F / 2**20)`` with
      ``F = floor(2**20 * |r| / |x|)`` (also upward, unlike ``clip_to_norm``), clamped to
      +-LIMIT per coordinate; the mean rounds down.
    * If no update has positive trust (e.g. the reference is zero), the delta is zero and no
      update is included.
    """
    _check_rows(rows)
    n, d = rows.shape
    reference = _median_rows(rows)
    scores, _, norms, ref = trust_scores(rows, reference)
    keep = [i for i in range(n) if scores[i] > 0]
    if not keep:
        return Aggregate(torch.zeros(d, dtype=torch.int64), ())
    base = weights if sum(weights[i] for i in keep) > 0 else [1] * n
    w = normalized_weights([scores[i] * base[i] for i in keep])
    factors = [math.isqrt((ref << (2 * WEIGHT_BITS)) // norms[i]) for i in keep]  # floor(2**20 |r| / |x|)
    return Aggregate(_combine(rows, keep, w, _rescaled(factors)), tuple(keep))


RULES = {
    "fedavg": fedavg_clipped,
    "median": coordinate_median,
    "trimmed-mean": trimmed_mean,
    "multi-krum": multi_krum,
    "trust-cosine": trust_cosine,
}
RULE_IDS = {name: i for i, name in enumerate(RULES)}  # stable: append new rules at the end


# --------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Contribution:
    """One valid update as the aggregation sees it."""

    member: int  # index on the contract's member list
    cid: str
    delta: dict[str, torch.Tensor]
    samples: int
    reputation: int


class AggregationStrategy(ABC):
    """Template: weights and canonical order here, the rule's math in a pure function."""

    name: str

    def __init__(self, *, sample_cap: int):
        if sample_cap <= 0:
            raise ValueError("sample_cap must be positive")
        self.sample_cap = sample_cap

    def weights(self, contributions: list[Contribution]) -> list[int]:
        return [min(max(c.samples, 0), self.sample_cap) * c.reputation for c in contributions]

    @abstractmethod
    def combine(self, rows: torch.Tensor, weights: list[int]) -> Aggregate: ...

    def aggregate(
        self, base: dict[str, torch.Tensor], contributions: list[Contribution]
    ) -> tuple[dict[str, torch.Tensor], list[Contribution]]:
        """New global state and the contributions included, from updates in any order."""
        ordered = sorted(contributions, key=lambda c: c.member)
        if not ordered:
            return {k: v.clone() for k, v in base.items()}, []
        rows = torch.stack([quantize(state_to_vector(c.delta)) for c in ordered])
        result = self.combine(rows, self.weights(ordered))
        new = quantize(state_to_vector(base)) + result.delta
        return vector_to_state(dequantize(new), base), [ordered[i] for i in result.included]


class _FedAvg(AggregationStrategy):
    name = "fedavg"

    def combine(self, rows, weights):
        return fedavg_clipped(rows, weights)


class _Median(AggregationStrategy):
    name = "median"

    def combine(self, rows, weights):
        return coordinate_median(rows, weights)


class _TrimmedMean(AggregationStrategy):
    name = "trimmed-mean"

    def combine(self, rows, weights):
        return trimmed_mean(rows, weights)


class _MultiKrum(AggregationStrategy):
    name = "multi-krum"

    def combine(self, rows, weights):
        return multi_krum(rows, weights)


class _TrustCosine(AggregationStrategy):
    name = "trust-cosine"

    def combine(self, rows, weights):
        return trust_cosine(rows, weights)


_STRATEGIES = {cls.name: cls for cls in (_FedAvg, _Median, _TrimmedMean, _MultiKrum, _TrustCosine)}


def strategy_for(name: str, *, sample_cap: int) -> AggregationStrategy:
    try:
        return _STRATEGIES[name](sample_cap=sample_cap)
    except KeyError:
        raise ValueError(f"unknown aggregation rule {name!r} (known: {', '.join(_STRATEGIES)})") from None
