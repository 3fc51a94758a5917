"""Exact integer building blocks shared by the aggregation rules.

Everything here is an exact integer function of its inputs: the blocked loops, thread splits and
float64 pieces are arranged so that no result depends on the BLAS kernel, the blocking or the
thread count (see the comment above ``_Plan``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..protocol.fixedpoint import LIMIT, WEIGHT_BITS, normalized_weights

__all__ = [
    "Aggregate", "ONE", "lower_median", "check_rows", "combine", "weighted_sum", "scaled", "rescaled",
    "exact_products", "exact_sq_norms", "select_sum", "median_rows",
]

_BLOCK = 1 << 12  # columns per block: n rows of int64 and their float64 pieces stay in cache
_SELECT_BLOCK = 1 << 11  # columns per block for median and trimmed mean
ONE = _ONE = 1 << WEIGHT_BITS


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



lower_median = _lower_median
check_rows = _check_rows
combine = _combine
weighted_sum = _weighted_sum
scaled = _scaled
rescaled = _rescaled
exact_products = _exact_products
exact_sq_norms = _exact_sq_norms
select_sum = _select_sum
median_rows = _median_rows
