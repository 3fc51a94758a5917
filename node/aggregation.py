"""Aggregation rules: how every peer turns the round's valid updates into one global model.

Each rule is a pure function over exact int64 fixed-point updates (rows in canonical member
order) and integer weights, returning the aggregated delta and which rows it kept. Every
result is an exact integer function of the inputs, so every honest peer gets the same bits on
any hardware, with any thread count.

Weighting (all rules that weight): ``w_i = min(samples_i, sample_cap) * reputation_i``, the
sample count the peer reports in its artifact, capped so no single peer dominates, times its
on-chain reputation at submission.

Speed: the rules work on column blocks of the ``[n, d]`` update matrix so that the data a block
needs stays in cache, spread over threads by contiguous column ranges. The exact inner products
that Multi-Krum and trust-cosine need come from float64 matrix products over small integer
pieces whose every partial sum is provably an exactly representable integer (see the comment
above ``_Plan``), so no result depends on the BLAS kernel, the blocking or the thread count.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .fixedpoint import LIMIT, WEIGHT_BITS, dequantize, normalized_weights, quantize
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
    "plain_fedavg",
    "drop_copies",
    "AggregationStrategy",
    "strategy_for",
]

_BLOCK = 1 << 12  # columns per block: n rows of int64 and their float64 pieces stay in cache
_SELECT_BLOCK = 1 << 11  # columns per block for median and trimmed mean
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


def _blocks(stop: int, size: int = 0, start: int = 0):
    size = size or _BLOCK
    for a in range(start, stop, size):
        yield a, min(a + size, stop)


def _in_parallel(work, d: int, width: int) -> list:
    """``[work(lo, hi) for each column range]``, ranges run on up to torch.get_num_threads() threads.

    The columns are cut into one contiguous range per thread (whole blocks of ``width``). Each
    call must only read shared inputs and write its own slice or return its own partial result,
    which the caller combines exactly, so results do not depend on the number of threads. Python
    threads (torch and numpy release the GIL) synchronize once per range instead of once per
    tensor operation, which keeps two threads useful on a busy machine.
    """
    blocks = -(-d // width) if d else 0
    workers = max(1, min(torch.get_num_threads(), blocks))
    if workers == 1:
        return [work(0, d)]
    per = -(-blocks // workers) * width
    ranges = [(a, min(a + per, d)) for a in range(0, d, per)]
    with ThreadPoolExecutor(len(ranges)) as pool:
        return list(pool.map(lambda r: work(*r), ranges))


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

    def work(start: int, stop: int) -> None:
        for a, b in _blocks(stop, _BLOCK, start):
            x = rows[:, a:b] if every else rows[:, a:b].index_select(0, index)
            if transform is not None:
                x = transform(x)
            torch.sum(x * wcol, dim=0, out=out[a:b])
            out[a:b].bitwise_right_shift_(WEIGHT_BITS)

    _in_parallel(work, d, _BLOCK)
    return out


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


# Exact inner products and squared norms with float64 arithmetic.
#
# Every value x has |x| <= 2**B - 1 for some B <= 43 (|x| <= LIMIT = 2**42). Where needed, x is
# split into two balanced digits x = hi * 2**s + lo, hi = floor((x + 2**(s-1)) / 2**s),
# lo = x - hi * 2**s, so lo is in [-2**(s-1), 2**(s-1)) and, for s >= (B + 1) / 2,
# |hi| <= 2**(B-s) <= 2**(s-1). An inner product <a, b> is a sum, over pairs of pieces, of
# float64 inner products of integer-valued vectors shifted by the pieces' weights. Three plans,
# the first whose elementwise products are at most 2**e with e <= 42 is used:
#
# * direct:    <a, b> as is; products at most 2**(Ba + Bb)     (|x| < 2**21, i.e. below 1/128)
# * one-sided: <a, b_hi> * 2**s + <a, b_lo>, s = ceil((Bb + 1) / 2); products at most
#              2**(Ba + s - 1)                                  (|x| < 2**28, i.e. below 1.0)
# * two-sided: both split at s = ceil((max(Ba, Bb) + 1) / 2); products at most 2**(2s - 2) <= 2**42.
#
# Exactness: a float64 sum of k such products -- a matrix product, ``addmm`` accumulation or a
# ``sum`` -- has, whatever order, blocking, vectorization, FMA or thread split the kernel uses,
# only intermediate values that are integer sums of some of those products, so of magnitude at
# most k * 2**e. With k <= SPAN = 2**(53 - e) (>= 2**11) that is at most 2**53, and binary64
# represents every integer of magnitude <= 2**53 exactly; an IEEE 754 operation whose exact
# result is representable returns it exactly. So every float64 accumulator holding at most SPAN
# columns is the exact integer. It is then moved into an int64 accumulator (exact conversion,
# |entry| <= 2**53), and after at most 2**9 such moves (|entry| <= 2**62 < 2**63) into Python
# ints, where the pieces are recombined with their shifts.

_FLUSH = 1 << 9  # float64 accumulators an int64 accumulator may absorb: 2**9 * 2**53 = 2**62
_MAX_E = 42  # largest product exponent allowed, so that SPAN = 2**(53 - e) >= 2**11 columns


@dataclass(frozen=True)
class _Plan:
    left: tuple[int, ...]  # shifts of the left operand's pieces ((0,) = not split)
    right: tuple[int, ...]  # shifts of the right operand's pieces
    span: int  # columns a float64 accumulator may hold exactly

    @staticmethod
    def of(amax: int, bmax: int) -> "_Plan":
        if max(amax, bmax) > LIMIT:
            raise ValueError(f"fixed-point values exceed the limit 2**42 (max |value| {max(amax, bmax)})")
        ba, bb = amax.bit_length(), bmax.bit_length()
        if ba + bb <= _MAX_E:
            return _Plan((0,), (0,), 1 << (53 - ba - bb))
        s = (bb + 2) // 2
        if ba + s - 1 <= _MAX_E:
            return _Plan((0,), (s, 0), 1 << (53 - (ba + s - 1)))
        s = (max(ba, bb) + 2) // 2
        return _Plan((s, 0), (s, 0), 1 << (53 - (2 * s - 2)))


def _pieces_into(out: torch.Tensor, x: torch.Tensor, shifts: tuple[int, ...]) -> torch.Tensor:
    """Write x's pieces as float64 into ``out`` (piece-major: rows [p*m, (p+1)*m) hold piece p).

    ``x`` is int64 or an exact float64 copy. Every float64 operation here is exact: x is an
    integer below 2**43 in magnitude, ``x * 2**-s + 1/2`` is a dyadic number with fewer than 53
    significant bits, floor is exact, and ``x - hi * 2**s`` is a small integer.
    """
    m = x.shape[0]
    if len(shifts) == 1:
        return out[:m].copy_(x)
    s = shifts[0]
    hi, lo = out[:m], out[m : 2 * m]
    lo.copy_(x)
    torch.mul(lo, 2.0**-s, out=hi).add_(0.5).floor_()  # floor((x + 2**(s-1)) / 2**s)
    lo.sub_(hi, alpha=2.0**s)
    return out[: 2 * m]


class _ExactSum:
    """Exact running sums of float64 blocks whose entries are integer sums of bounded products."""

    def __init__(self, rows: int, cols: int, span: int):
        self.span = span
        self.f = torch.zeros(rows, cols, dtype=torch.float64)
        self.i = torch.zeros(rows, cols, dtype=torch.int64)
        self.total = [[0] * cols for _ in range(rows)]
        self.cols = self.moves = 0

    def reserve(self, k: int) -> torch.Tensor:
        """The float64 accumulator, with room for ``k`` more columns."""
        if self.cols + k > self.span:
            self._move_float()
        self.cols += k
        return self.f

    def _move_float(self) -> None:
        self.i.add_(self.f.to(torch.int64))
        self.f.zero_()
        self.cols, self.moves = 0, self.moves + 1
        if self.moves == _FLUSH:
            self._move_int()

    def _move_int(self) -> None:
        for row, add in zip(self.total, self.i.tolist()):
            for j, v in enumerate(add):
                row[j] += v
        self.i.zero_()
        self.moves = 0

    def result(self) -> list[list[int]]:
        self._move_float()
        self._move_int()
        return self.total


def _sum_tables(tables: list[list[list[int]]]) -> list[list[int]]:
    first, *rest = tables
    for table in rest:
        for row, add in zip(first, table):
            for j, v in enumerate(add):
                row[j] += v
    return first


def _exact_products(a: torch.Tensor, b: torch.Tensor | None = None) -> list[list[int]]:
    """Exact ``<a_i, b_j>`` for all row pairs, as Python ints; ``b`` defaults to ``a`` (Gram)."""
    same = b is None
    b = a if same else b
    na, nb, d = a.shape[0], b.shape[0], a.shape[1]
    amax = _max_abs(a)
    plan = _Plan.of(amax, amax if same else _max_abs(b))
    lp, rp = len(plan.left), len(plan.right)
    shared = same and plan.left == plan.right
    width = min(_BLOCK, plan.span)

    def work(start: int, stop: int) -> list[list[int]]:
        lbuf = torch.empty(lp * na, width, dtype=torch.float64)
        rbuf = lbuf if shared else torch.empty(rp * nb, width, dtype=torch.float64)
        acc = _ExactSum(lp * na, rp * nb, plan.span)
        for lo, hi in _blocks(stop, width, start):
            k = hi - lo
            left = _pieces_into(lbuf[:, :k], a[:, lo:hi], plan.left)
            # with a is b, an unsplit left block is already b as exact float64: split that
            source = left if same and len(plan.left) == 1 else b[:, lo:hi]
            right = left if shared else _pieces_into(rbuf[:, :k], source, plan.right)
            acc.reserve(k).addmm_(left, right.t())
        return acc.result()

    t = _sum_tables(_in_parallel(work, d, width))
    return [
        [sum(t[p * na + i][q * nb + j] << (ls + rs) for p, ls in enumerate(plan.left) for q, rs in enumerate(plan.right))
         for j in range(nb)]
        for i in range(na)
    ]


def _exact_sq_norms(rows: torch.Tensor) -> list[int]:
    """Exact squared L2 norm of every row, as Python ints (same values as fixedpoint.exact_sq_norm)."""
    n, d = rows.shape
    amax = _max_abs(rows)
    plan = _Plan.of(amax, amax)
    lp, rp = len(plan.left), len(plan.right)
    width = min(_BLOCK, plan.span)

    def work(start: int, stop: int) -> list[list[int]]:
        lbuf = torch.empty(lp * n, width, dtype=torch.float64)
        rbuf = torch.empty(rp * n, width, dtype=torch.float64)
        acc = _ExactSum(n, lp * rp, plan.span)
        for lo, hi in _blocks(stop, width, start):
            k = hi - lo
            left = _pieces_into(lbuf[:, :k], rows[:, lo:hi], plan.left)
            source = left if len(plan.left) == 1 else rows[:, lo:hi]
            right = left if plan.left == plan.right else _pieces_into(rbuf[:, :k], source, plan.right)
            # Row i's inner products of its own pieces, as a batch of n small matrix products:
            # [lp, k] @ [k, rp] -> entry (i, p * rp + q) = <piece p of row i, piece q of row i>.
            acc.reserve(k).view(n, lp, rp).baddbmm_(
                left.view(lp, n, k).transpose(0, 1), right.view(rp, n, k).permute(1, 2, 0))
        return acc.result()

    t = _sum_tables(_in_parallel(work, d, width))
    return [
        sum(t[i][p * rp + q] << (ls + rs) for p, ls in enumerate(plan.left) for q, rs in enumerate(plan.right))
        for i in range(n)
    ]


def _select_sum(rows: torch.Tensor, first: int, stop: int) -> torch.Tensor:
    """Per coordinate, the sum of the sorted values at positions ``first .. stop - 1``, exactly.

    Each block is transposed to contiguous (coordinates x updates) and partitioned with numpy's
    introselect (which releases the GIL, so column ranges run in parallel); positions ``first`` and
    ``stop - 1`` then hold their sorted values and the positions between them hold exactly the
    values in between. Selection on integers returns the same values whatever the algorithm.
    Sums are at most n * 2**42 in magnitude.
    """
    n, d = rows.shape
    src = rows.detach().cpu().numpy()
    out = np.empty(d, dtype=np.int64)
    kth = sorted({first, stop - 1})

    def work(begin: int, end: int) -> None:
        for a, b in _blocks(end, _SELECT_BLOCK, begin):
            block = np.ascontiguousarray(src[:, a:b].T)
            if first > 0 or stop < n:
                block.partition(kth, axis=1)
            if stop - first == 1:
                out[a:b] = block[:, first]
            else:
                np.sum(block[:, first:stop], axis=1, out=out[a:b])

    _in_parallel(work, d, _SELECT_BLOCK)
    return torch.from_numpy(out)


def _median_rows(rows: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise lower median, ``sorted(column)[(n - 1) // 2]``, of int64 rows."""
    mid = (rows.shape[0] - 1) // 2
    return _select_sum(rows, mid, mid + 1)


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
    n = rows.shape[0]
    k = min(int(n * trim), (n - 1) // 2)
    return Aggregate(torch.div(_select_sum(rows, k, n - k), n - 2 * k, rounding_mode="floor"), tuple(range(n)))


def krum_scores(rows: torch.Tensor, f: int) -> list[int]:
    """Krum scores: each row's sum of exact squared distances to its ``n - f - 2`` nearest others.

    Squared distances ``|x_i|**2 + |x_j|**2 - 2 <x_i, x_j>`` are exact integers (Python ints)
    from an exact Gram matrix, so scores and their ranking are the same on every peer.
    """
    n = rows.shape[0]
    k = n - f - 2
    if f < 0 or k < 1:
        raise ValueError(f"Krum needs 0 <= f <= n - 3 (n={n}, f={f})")
    g = _exact_products(rows)
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
    dots = [row[0] for row in _exact_products(rows, reference.reshape(1, -1))]
    norms = _exact_sq_norms(rows)
    ref = _exact_sq_norms(reference.reshape(1, -1))[0]
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


def plain_fedavg(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Plain FedAvg: the weighted mean of every update, with no clipping and no exclusion.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS 2017). The undefended baseline: one scaled update can steer it.
    """
    _check_rows(rows)
    keep = list(range(rows.shape[0]))
    return Aggregate(_weighted_sum(rows, weights, keep), tuple(keep))


RULES = {
    "fedavg": fedavg_clipped,
    "median": coordinate_median,
    "trimmed-mean": trimmed_mean,
    "multi-krum": multi_krum,
    "trust-cosine": trust_cosine,
    "fedavg-plain": plain_fedavg,
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
    position: int = 0  # order of its submission on chain; earlier submissions win ties as originals


def drop_copies(rows: torch.Tensor, positions: list[int], *, tolerance_bits: int = 10) -> list[int]:
    """Rows to keep, dropping free-riders: zero updates (the global model resubmitted) and any
    update within a relative L2 distance of 2**-tolerance_bits of one submitted earlier (a
    stale or slightly perturbed copy). Exact integer arithmetic, so every peer drops the same.

    The threat is described by Lin et al., "Free-riders in Federated Learning: Attacks and
    Defenses" (arXiv:1911.12560, 2019); this test is our own, simpler one.
    """
    n = rows.shape[0]
    if n == 0:
        return []
    gram = _exact_products(rows)
    keep: list[int] = []
    for i in sorted(range(n), key=lambda k: (positions[k], k)):
        if gram[i][i] == 0:
            continue
        near = any((gram[i][i] + gram[j][j] - 2 * gram[i][j]) << (2 * tolerance_bits) <= gram[j][j] for j in keep)
        if not near:
            keep.append(i)
    return sorted(keep)


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
        originals = drop_copies(rows, [c.position for c in ordered])
        if not originals:
            return {k: v.clone() for k, v in base.items()}, []
        if len(originals) < len(ordered):
            rows, ordered = rows[originals], [ordered[i] for i in originals]
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


class _PlainFedAvg(AggregationStrategy):
    name = "fedavg-plain"

    def combine(self, rows, weights):
        return plain_fedavg(rows, weights)


_STRATEGIES = {cls.name: cls for cls in (_FedAvg, _Median, _TrimmedMean, _MultiKrum, _TrustCosine, _PlainFedAvg)}


def strategy_for(name: str, *, sample_cap: int) -> AggregationStrategy:
    try:
        return _STRATEGIES[name](sample_cap=sample_cap)
    except KeyError:
        raise ValueError(f"unknown aggregation rule {name!r} (known: {', '.join(_STRATEGIES)})") from None
