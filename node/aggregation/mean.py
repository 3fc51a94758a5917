"""Averaging rules: FedAvg with norm clipping (the default) and plain FedAvg (the baseline)."""
from __future__ import annotations

import math
from fractions import Fraction

import torch

from ..errors import ConfigError
from ..protocol.fixedpoint import FRAC_BITS, LIMIT, WEIGHT_BITS, normalized_weights
from ._exact import ONE, Aggregate, check_rows, combine, exact_products, exact_sq_norms, lower_median, scaled, weighted_sum
from .base import AggregationRule

__all__ = ["agreeing_with", "near_parallel", "reference_weights", "REFERENCES", "fedavg_clipped", "plain_fedavg", "FedAvg", "PlainFedAvg", "OPPOSED_COS", "OPPOSED_PULL"]

# Updates at a cosine of at least 15/16 (about 20 degrees) are near-parallel: they count as one in
# the reference of the sign test, in the aggregate and in its clip bound. Two honest digits updates
# of a round measured at most 0.918 on IID shards, 0.857 under Dirichlet(0.5) and 0.873 under
# Dirichlet(0.1) label skew (benchmarks/near_copies.py); the colluders' near-copies of one vector,
# above 0.9999.
PARALLEL_COS = (15, 16)

# The evidence an update must show against the reference to be excluded: an inner product that is
# not positive and, besides, a cosine of at most -1/2 (120 degrees or more from the reference), or a
# pull back along the reference of at least half the reference's own length (an update that, clipped
# as in the mean, takes back half of what the average update gives). Under Dirichlet(0.5) label
# skew, honest digits updates measured down to -0.19 in cosine and -0.24 in pull (round 1, no
# history); inner-product manipulation crafted from a public round, -0.72 or less in cosine.
OPPOSED_COS = (1, 2)
OPPOSED_PULL = (1, 2)


def agreeing_with(
    rows: torch.Tensor, reference: torch.Tensor, *, factors: list[int] | None = None,
    cos: tuple[int, int] = (0, 1), pull: tuple[int, int] = (0, 1), alike: list[bool] | None = None,
) -> list[int]:
    """Rows not opposed to ``reference`` with evidence, exactly (``exact_products``), so every peer
    keeps the same rows. A row is opposed when its inner product ``d`` with the reference is not
    positive and either its cosine is at most ``-cos`` (``d**2 * q**2 >= p**2 * |row|**2 * |ref|**2``)
    or, scaled by its clip factor ``f`` (``factors``, in units of ``2**20``; 1 when ``None``), its
    pull ``f * d`` is at most ``-pull`` times ``|ref|**2``. A row flagged in ``alike`` (one of a
    set of near-copies) is opposed as soon as ``d`` is not positive. With both thresholds 0 (the
    defaults) this is the plain sign test: every row with a positive inner product is kept. No
    evidence, no exclusion: when the reference is zero, or when every row is opposed, every row is
    kept."""
    n = rows.shape[0]
    if not bool(reference.any()):
        return list(range(n))
    ref = reference.reshape(1, -1)
    dots = [row[0] for row in exact_products(rows, ref)]
    ref_sq = exact_products(ref)[0][0]
    norms = exact_sq_norms(rows) if cos[0] else [0] * n
    factors = factors or [ONE] * n
    (cp, cq), (pp, pq) = cos, pull

    def opposed(i: int) -> bool:
        d = dots[i]
        if d > 0:
            return False
        if alike is not None and alike[i]:
            return True
        by_angle = d * d * cq * cq >= cp * cp * norms[i] * ref_sq
        by_pull = pq * factors[i] * d <= -pp * ref_sq * ONE
        return by_angle or by_pull

    keep = [i for i in range(n) if not opposed(i)]
    return keep or list(range(n))


def near_parallel(gram: list[list[int]], cos: tuple[int, int] = PARALLEL_COS) -> list[tuple[int, ...]]:
    """For each row, the rows (itself included) whose cosine with it is at least ``p/q``, from the
    exact Gram matrix: ``G[i][j] > 0`` and ``G[i][j]**2 * q**2 >= p**2 * G[i][i] * G[j][j]``, in
    integers, so every peer finds the same. A zero row is near-parallel to nothing but itself."""
    p, q = cos
    n = len(gram)
    return [
        tuple(j for j in range(n) if j == i or (gram[i][j] > 0 and gram[i][j] ** 2 * q * q >= p * p * gram[i][i] * gram[j][j]))
        for i in range(n)
    ]


def _clip_factors(norms: list[int], bound: int) -> list[int]:
    # clip_to_norm's factor, floor(2**20 * sqrt(bound) / norm); 2**20 (identity) when unclipped.
    return [ONE if (q <= bound or q == 0) else math.isqrt((bound << (2 * WEIGHT_BITS)) // q) for q in norms]


def _weighted_lower_median(values: list[int], shares: list[int]) -> int:
    """The lower median of ``values`` where value i counts ``shares[i]`` times: the smallest value
    whose cumulative share reaches half the total (the plain lower median for equal shares)."""
    total, running = sum(shares), 0
    for value, share in sorted(zip(values, shares)):
        running += share
        if 2 * running >= total:
            return value
    raise ValueError("no values")


def _clipped_mean(rows: torch.Tensor, keep: list[int], weights: list[int], norms: list[int], clip_sq: int,
                  shares: list[int] | None = None) -> torch.Tensor:
    kept_norms = [norms[i] for i in keep]
    bound = clip_sq or (lower_median(kept_norms) if shares is None else _weighted_lower_median(kept_norms, [shares[i] for i in keep]))
    factors = _clip_factors(kept_norms, bound)
    kept_weights = [weights[i] for i in keep]
    w = normalized_weights(kept_weights) if sum(kept_weights) > 0 else normalized_weights([1] * len(keep))
    return combine(rows, keep, w, scaled(factors))


def _shares(groups: list[tuple[int, ...]], keep: list[int]) -> list[int] | None:
    """Each kept row's share, ``L / m`` with ``m`` the number of kept rows near-parallel to it
    (itself included; ``groups`` from ``near_parallel``) and ``L`` the lcm of those counts, so that
    a set of near-copies counts as one row; rows not kept have share 0. ``None`` when no two kept
    rows are near-parallel."""
    kept = set(keep)
    counts = {i: sum(1 for j in groups[i] if j in kept) for i in keep}
    if max(counts.values(), default=1) == 1:
        return None
    scale = math.lcm(*counts.values())
    return [scale // counts[i] if i in kept else 0 for i in range(len(groups))]


def _shared_mean(rows: torch.Tensor, keep: list[int], weights: list[int], norms: list[int], clip_sq: int,
                 shares: list[int] | None) -> torch.Tensor:
    """The clipped, weighted mean of the kept rows with near-copies counted once: each row's weight
    (after the mean's fallback to equal weights) and its count in the median clip bound are
    multiplied by its share (``_shares`` over ``keep``). ``_clipped_mean`` when ``shares`` is None
    (no two kept rows near-parallel)."""
    if shares is None:
        return _clipped_mean(rows, keep, weights, norms, clip_sq)
    base = weights if sum(weights[i] for i in keep) > 0 else [1] * len(weights)
    return _clipped_mean(rows, keep, [w * s for w, s in zip(base, shares)], norms, clip_sq, shares)


REFERENCES = ("vote", "weights", "capped")


def reference_weights(weights: list[int], how: str = "vote") -> list[int]:
    """Each member's weight in the reference of the exclusion test. ``vote`` (the default): 1 each,
    one member one vote, as in the contract's quorum. ``weights``: the aggregate's own weights
    (``min(samples, sample_cap) * reputation``), as before the vote. ``capped``: those weights,
    each at most their lower median. The last two are kept to measure the vote against
    (``benchmarks/reference_weights.py``): both let colluders who claim the sample cap carry the
    reference (README, Robustness results)."""
    if how == "vote":
        return [1] * len(weights)
    if how == "weights":
        return list(weights)
    if how == "capped":
        cap = lower_median(weights)
        return [min(w, cap) for w in weights]
    raise ValueError(f"unknown reference {how!r}; expected one of {', '.join(REFERENCES)}")


def fedavg_clipped(
    rows: torch.Tensor, weights: list[int], *, clip_sq: int = 0, exclude_opposed: bool = False,
    opposed_cos: tuple[int, int] = OPPOSED_COS, opposed_pull: tuple[int, int] = OPPOSED_PULL, reference: str = "vote",
) -> Aggregate:
    """Reputation-weighted FedAvg with L2 norm clipping, optionally without the updates that
    point against it.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS 2017), with per-update norm clipping as in McMahan et al., "Learning
    Differentially Private Recurrent Language Models" (ICLR 2018). ``clip_sq`` is the squared
    bound in fixed-point units; 0 clips to the lower median of the (kept) updates' norms.

    ``exclude_opposed``: the clipped mean of every update, each member counted once, is the
    reference; the updates opposed to it (below) are excluded, and the weighted mean is computed
    over the rest (clip bound included). At its core is the sign test of FLTrust (Cao et al.,
    "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping", NDSS 2021), whose ReLU
    gives zero trust to an update at 90 degrees or more from the reference; with no trusted root
    data set, the reference is the round's own clipped mean, in which clipping bounds every
    update's pull to the median norm. The reference is a vote, one member one vote as in the
    contract's quorum: it is not weighted by sample counts (self-reported) or reputation, which
    weigh only the aggregate (``reference`` names the alternatives, ``reference_weights``).
    Weighted, it let members with large shards carry the test they are judged by: on
    Dirichlet(0.5) digits the three colluders of a spread inner-product manipulation held 40% of
    the weight, sat at a positive cosine to the mean they steered, and two honest members with
    small shards were excluded in their place; colluders who claim the sample cap do the same on
    purpose (README, Robustness results: one member, one vote). It removes inner-product
    manipulation (Xie et al., "Fall of Empires", UAI 2020) and sign flips, which by construction
    point against the honest mean. The coordinate-wise median was tried first as the reference and rejected: under
    Dirichlet(0.5) label skew it excluded up to four honest updates a round (an honest update
    trained on few classes often points away from the median) and let IPM through.

    In the reference, near-parallel updates count once (``near_parallel``: cosine at least
    ``PARALLEL_COS``, exactly): each update's weight is divided by the number of updates
    near-parallel to it, itself included, as FoolsGold (Fung et al., "The Limitations of Federated
    Learning in Sybil Settings", RAID 2020) discounts updates that are alike. Colluders sending one
    vector as near-copies otherwise carry the reference they are tested against: with sealed
    updates, a round-1 IPM crafted from the colluders' own label-skewed updates was at a positive
    angle to a mean it made up 3/10 of, and honest updates were excluded in its place. Without a
    near-parallel pair the reference is the round's clipped mean with equal weights. The
    aggregate counts them once too: each kept update's weight is divided by the number of kept updates near-parallel
    to it, so a set of near-copies inside the honest spread (ALIE, Min-Max: Baruch et al., NeurIPS
    2019; Shejwalkar and Houmansadr, NDSS 2021, whose colluders all send one vector) moves the
    aggregate as one member would, not as many: a copy does not pay. Their count in the median clip
    bound is shared the same way, so short copies cannot pull every update's bound down. Near-copies
    are kept (and rewarded) when they agree with the reference; only their weight is shared.
    Colluders who spread their copies apart, below the threshold, escape all three; that costs them
    norm (clipped to the median) and, under Min-Max's distance bound, reach (README, Robustness
    results: spread copies). The previous round's global step was tried as a reference an attacker
    cannot steer and rejected: on Dirichlet(0.5) digits, label-skewed honest updates are at up to
    -0.38 cosine to it and would have been excluded.

    A lone update is excluded only with evidence (``agreeing_with``): a non-positive inner product
    with the reference and, besides, a cosine of at most ``-opposed_cos`` or a pull back along it,
    after clipping, of at least ``opposed_pull`` times the reference's squared length (the
    mean of the clipped updates' pulls is exactly that length: ``opposed_pull`` 1/2 excludes an
    update that takes back half of what the average update gives). FLTrust's bare sign test (both
    thresholds 0) assumes a reference every honest update agrees with; under label skew, with no
    root data set, an honest update trained on classes the others lack can sit just past 90
    degrees from the round's mean (on Dirichlet(0.5) digits, round 1: cosine -0.19, pull -0.24),
    and was excluded and halved in reputation while attackers inside the spread were kept. Kept
    past 90 degrees, an update can cost the aggregate at most half an average update's progress,
    or point at most 120 degrees away; inner-product manipulation crafted from a public round
    measured -0.72 or less in cosine. Near-copies are the exception: independent honest updates
    are not near-parallel (at most 0.895 in cosine on IID digits, 0.857 under label skew), so a
    set of them is already evidence of coordination, as FoolsGold (Fung et al., RAID 2020) takes
    alike updates for sybils, and each of them is excluded as soon as its inner product with the
    reference is not positive: a blind round-1 manipulation, crafted from the colluders' own
    label-skewed updates and sent as near-copies, measured -0.27 and -0.12 in cosine, inside
    the bounds above.

    Bit-identical to clipping each row with ``fixedpoint.clip_to_norm`` and then taking the
    weighted mean, but done in one blocked pass.
    """
    check_rows(rows)
    n = rows.shape[0]
    norms = exact_sq_norms(rows)
    every = list(range(n))
    if not exclude_opposed or n <= 2:
        return Aggregate(_clipped_mean(rows, every, weights, norms, clip_sq), tuple(every))
    groups = near_parallel(exact_products(rows))
    shares = _shares(groups, every)
    ref = _shared_mean(rows, every, reference_weights(weights, reference), norms, clip_sq, shares)
    bound = clip_sq or (lower_median(norms) if shares is None else _weighted_lower_median(norms, shares))
    keep = agreeing_with(rows, ref, factors=_clip_factors(norms, bound),
                         cos=opposed_cos, pull=opposed_pull, alike=[len(m) > 1 for m in groups])
    kept_shares = shares if keep == every else _shares(groups, keep)
    return Aggregate(_shared_mean(rows, keep, weights, norms, clip_sq, kept_shares), tuple(keep))



def plain_fedavg(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Plain FedAvg: the weighted mean of every update, with no clipping and no exclusion.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS 2017). The undefended baseline: one scaled update can steer it.
    """
    check_rows(rows)
    keep = list(range(rows.shape[0]))
    return Aggregate(weighted_sum(rows, weights, keep), tuple(keep))



class FedAvg(AggregationRule):
    """Reputation-weighted FedAvg with L2 clipping (McMahan et al., AISTATS 2017 and ICLR 2018),
    without the updates that point against it (the sign test of FLTrust, Cao et al., NDSS 2021).

    ``clip_norm``: the L2 bound on each update; ``None`` (the default) clips to the lower median
    of the kept updates' norms, which adapts to the model and the round.
    ``exclude_opposed`` (default True): exclude, with evidence, every update opposed to the round's
    clipped mean (``fedavg_clipped``): a non-positive inner product and a cosine of at most
    ``-opposed_cos`` (default 0.5) or a pull back of at least ``opposed_pull`` (default 0.5) times
    the mean's squared length. Both 0: FLTrust's bare sign test, as before this version.
    """

    name = "fedavg"
    rule_id = 0
    works_on_sums = True  # only with exclude_opposed=False: the exclusion test needs each update

    def __init__(self, clip_norm: float | None = None, exclude_opposed: bool = True,
                 opposed_cos: float = OPPOSED_COS[0] / OPPOSED_COS[1], opposed_pull: float = OPPOSED_PULL[0] / OPPOSED_PULL[1]):
        if clip_norm is not None and not (math.isfinite(clip_norm) and 0 < clip_norm < LIMIT >> FRAC_BITS):
            raise ConfigError(f"fedavg: clip_norm must be a positive finite number, got {clip_norm!r}")
        if not isinstance(exclude_opposed, bool):
            raise ConfigError(f"fedavg: exclude_opposed must be true or false, got {exclude_opposed!r}")
        for name, value, top in (("opposed_cos", opposed_cos, 1), ("opposed_pull", opposed_pull, 64)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and 0 <= value <= top):
                raise ConfigError(f"fedavg: {name} must be a number from 0 to {top}, got {value!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.exclude_opposed = exclude_opposed
        self.opposed_cos, self.opposed_pull = float(opposed_cos), float(opposed_pull)
        self.works_on_sums = not exclude_opposed

    def params(self):
        out = {} if self.clip_norm is None else {"clip_norm": self.clip_norm}
        if not self.exclude_opposed:
            out["exclude_opposed"] = False
        if Fraction(self.opposed_cos) != Fraction(*OPPOSED_COS):
            out["opposed_cos"] = self.opposed_cos
        if Fraction(self.opposed_pull) != Fraction(*OPPOSED_PULL):
            out["opposed_pull"] = self.opposed_pull
        return out

    def combine(self, rows, weights):
        # Exact binary fractions of the float parameters, so every peer tests the same integers.
        tests = {"opposed_cos": Fraction(self.opposed_cos).as_integer_ratio(),
                 "opposed_pull": Fraction(self.opposed_pull).as_integer_ratio()}
        if self.clip_norm is None:
            return fedavg_clipped(rows, weights, exclude_opposed=self.exclude_opposed, **tests)
        q = round(self.clip_norm * (1 << FRAC_BITS))
        return fedavg_clipped(rows, weights, clip_sq=q * q, exclude_opposed=self.exclude_opposed, **tests)


class PlainFedAvg(AggregationRule):
    """Plain FedAvg, the undefended baseline (McMahan et al., AISTATS 2017)."""

    name = "fedavg-plain"
    rule_id = 5
    works_on_sums = True

    def combine(self, rows, weights):
        return plain_fedavg(rows, weights)
