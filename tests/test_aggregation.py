"""Aggregation rules: small hand-checkable cases, robustness properties and the exact helpers."""
from __future__ import annotations

import math
import random

import pytest
import torch

from fedchain.node import aggregation as agg
from fedchain.node.aggregation import (
    RULE_IDS,
    RULES,
    Aggregate,
    Contribution,
    coordinate_median,
    fedavg_clipped,
    multi_krum,
    make_rule,
    trimmed_mean,
    trust_cosine,
)
from fedchain.node.protocol.fixedpoint import LIMIT, WEIGHT_BITS, clip_to_norm, exact_sq_norm, normalized_weights

ONE = 1 << WEIGHT_BITS


def T(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def ref_weighted_mean(rows: list[list[int]], weights: list[int]) -> list[int]:
    """floor(sum_i w_i x_i / 2**20) with w = normalized_weights(weights), in Python ints."""
    w = [(x << WEIGHT_BITS) // sum(weights) for x in weights]
    return [sum(wi * r[j] for wi, r in zip(w, rows)) >> WEIGHT_BITS for j in range(len(rows[0]))]


# --------------------------------------------------------------------------- registry


def test_rule_ids_are_stable_and_every_rule_is_registered_once():
    assert RULE_IDS == {"fedavg": 0, "median": 1, "trimmed-mean": 2, "multi-krum": 3, "trust-cosine": 4, "fedavg-plain": 5}
    assert list(RULES) == list(RULE_IDS)
    assert len(set(RULE_IDS.values())) == len(RULE_IDS)
    for name, cls in RULES.items():
        assert make_rule(name).name == name and cls.name == name
        assert cls.__doc__ and "(" in cls.__doc__  # names its paper


def test_unknown_rule_and_bad_sample_cap_are_rejected():
    from fedchain.node.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown aggregation rule"):
        make_rule("krum-ish")
    with pytest.raises(ConfigError):
        make_rule("median").aggregate({}, [], sample_cap=0)


# --------------------------------------------------------------------------- median, trimmed mean


def test_median_odd_count():
    rows = T([[1, 5, -7], [3, -2, -7], [2, 0, 9]])
    out = coordinate_median(rows, [1, 1, 1])
    assert out.delta.tolist() == [2, 0, -7]
    assert out.included == (0, 1, 2)


def test_median_even_count_is_the_lower_median():
    rows = T([[1, 10], [4, 40], [3, 30], [2, 20]])
    assert coordinate_median(rows, [1, 1, 1, 1]).delta.tolist() == [2, 20]


def test_median_ignores_weights():
    rows = T([[1], [2], [100]])
    assert coordinate_median(rows, [1, 1, 1000]).delta.tolist() == [2]


def test_trimmed_mean_drops_extremes():
    rows = T([[1, -100], [2, -4], [3, -3], [4, -1], [100, 50]])  # n=5, trim 0.2: drop 1 each side
    out = trimmed_mean(rows, [1] * 5)
    assert out.delta.tolist() == [3, -3]  # (2+3+4)/3 = 3; (-4-3-1)/3 = -2.67, floor -3
    assert out.included == (0, 1, 2, 3, 4)


def test_trimmed_mean_without_trimming_is_the_floor_mean():
    rows = T([[1], [2], [4]])
    assert trimmed_mean(rows, [1, 1, 1], trim=0.0).delta.tolist() == [2]  # 7/3 floor
    assert trimmed_mean(T([[-1], [-2]]), [1, 1]).delta.tolist() == [-2]  # n=2: nothing trimmed, -1.5 floor


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9, 50])
def test_median_and_trimmed_mean_match_a_full_sort(n, monkeypatch):
    monkeypatch.setattr(agg._exact, "_SELECT_BLOCK", 64)  # many blocks, uneven last block
    gen = torch.Generator().manual_seed(n)
    rows = torch.randint(-LIMIT, LIMIT + 1, (n, 1000), generator=gen)
    rows[:, :10] = 7  # ties
    srt = torch.sort(rows, dim=0).values
    assert torch.equal(coordinate_median(rows, [1] * n).delta, srt[(n - 1) // 2])
    k = min(int(n * 0.2), (n - 1) // 2)
    expect = torch.div(srt[k : n - k].sum(0), n - 2 * k, rounding_mode="floor")
    assert torch.equal(trimmed_mean(rows, [1] * n).delta, expect)


# --------------------------------------------------------------------------- fedavg


def test_fedavg_clipping_caps_a_scaled_update():
    u = 1 << 10
    rows = T([[30 * u, 40 * u]])  # norm 50u, bound 5u
    out = fedavg_clipped(rows, [1], clip_sq=(5 * u) ** 2)
    factor = math.isqrt(((25 * u * u) << 40) // (2500 * u * u))
    assert factor == ONE // 10
    assert out.delta.tolist() == [(30 * u * factor) >> 20, (40 * u * factor) >> 20] == [3071, 4095]
    assert exact_sq_norm(out.delta) <= (5 * u) ** 2


def test_fedavg_default_bound_is_the_lower_median_norm():
    honest = [[3, 4], [4, 3], [0, 5]]  # all norm 5
    rows = T([[x * 1000 for x in r] for r in honest] + [[3000 * 100, 4000 * 100]])  # 100x scaled
    out = fedavg_clipped(rows, [1, 1, 1, 1])
    clipped = clip_to_norm(rows[3], exact_sq_norm(rows[3]), 5000**2)
    expect = ref_weighted_mean(rows[:3].tolist() + [clipped.tolist()], [1, 1, 1, 1])
    assert out.delta.tolist() == expect
    assert max(abs(v) for v in out.delta.tolist()) <= 5000  # the scaled update cannot dominate


def test_weights_change_the_fedavg_result():
    rows = T([[8, 0], [0, 8], [0, 8]])  # equal norms: nothing is clipped
    assert fedavg_clipped(rows, [1, 1, 2]).delta.tolist() == [2, 6]
    assert fedavg_clipped(rows, [2, 1, 1]).delta.tolist() == [4, 4]
    assert fedavg_clipped(rows, [1, 0, 0]).delta.tolist() == [8, 0]


def test_fedavg_matches_the_reference_composition_bit_for_bit(monkeypatch):
    """The blocked implementation equals clip_to_norm + exact_sq_norm + the old weighted sum."""
    monkeypatch.setattr(agg._exact, "_BLOCK", 300)
    gen = torch.Generator().manual_seed(3)
    for scale, n in ((1 << 20, 5), (1 << 36, 4), (LIMIT, 3)):
        rows = torch.randint(-scale, scale + 1, (n, 2000), generator=gen)
        rows[0] *= 0  # a zero update
        rng = random.Random(n)
        weights = [rng.randint(0, 9) for _ in range(n)]
        weights[1] += 1
        norms = [exact_sq_norm(r) for r in rows]
        bound = sorted(norms)[(n - 1) // 2]
        clipped = torch.stack([clip_to_norm(rows[i], norms[i], bound) for i in range(n)])
        w = normalized_weights(weights)
        acc = torch.zeros(rows.shape[1], dtype=torch.int64)
        for wi, r in zip(w.tolist(), clipped):
            acc += r * wi
        assert torch.equal(fedavg_clipped(rows, weights).delta, torch.div(acc, ONE, rounding_mode="floor"))


# --------------------------------------------------------------------------- Multi-Krum


def test_krum_scores_by_hand_and_ties_broken_by_member_order():
    rows = T([[0], [1], [2], [10]])  # n=4, f=0: each score sums the 2 nearest squared distances
    assert agg.krum_scores(rows, 0) == [1 + 4, 1 + 1, 1 + 4, 64 + 81]
    out = multi_krum(rows, [1, 1, 1, 1], f=0, m=2)
    assert out.included == (0, 1)  # rows 0 and 2 tie at 5: the lower member wins
    assert out.delta.tolist() == [0]  # floor((0 + 1) / 2)


def _honest_and_attackers(d=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randint(1000, 2000, (d,), generator=gen)
    honest = [g + torch.randint(-50, 51, (d,), generator=gen) for _ in range(5)]
    outlier = torch.full((d,), 10**9)
    flipped = -3 * g
    rows = torch.stack([honest[0], outlier, honest[1], honest[2], flipped, honest[3], honest[4]])
    return rows, [0, 2, 3, 5, 6]


def test_multi_krum_excludes_a_far_outlier_and_a_sign_flipped_update():
    rows, honest = _honest_and_attackers()
    weights = [3, 1, 4, 1, 5, 9, 2]
    out = multi_krum(rows, weights)  # n=7: f=2, m=5
    assert out.included == tuple(honest)
    expect = ref_weighted_mean([rows[i].tolist() for i in honest], [weights[i] for i in honest])
    assert out.delta.tolist() == expect


def test_multi_krum_parameters():
    rows, _ = _honest_and_attackers()
    assert len(multi_krum(rows, [1] * 7, f=1).included) == 6  # m = n - f
    assert multi_krum(rows, [1] * 7, m=1).included[0] in (0, 2, 3, 5, 6)
    with pytest.raises(ValueError):
        multi_krum(rows, [1] * 7, f=5)  # n - f - 2 = 0 neighbours
    with pytest.raises(ValueError):
        multi_krum(rows, [1] * 7, m=0)
    with pytest.raises(ValueError):
        multi_krum(rows, [1] * 7, f=-1)


def test_multi_krum_small_n_keeps_everything():
    assert multi_krum(T([[4, 2]]), [1]).included == (0,)
    out = multi_krum(T([[0, 2], [10**6, 4]]), [1, 1])
    assert out.included == (0, 1) and out.delta.tolist() == [500000, 3]
    assert multi_krum(T([[0], [1], [10**6]]), [1, 1, 1]).included == (0, 1, 2)  # n=3: f=0, m=3


# --------------------------------------------------------------------------- trust-cosine


def test_trust_cosine_gives_zero_weight_to_a_sign_flipped_update():
    rows = T([[3, 4], [3, 4], [-6, -8]])  # reference (median) = [3, 4]
    scores, dots, norms, ref = agg.trust_scores(rows, agg._exact.median_rows(rows))
    assert scores == [ONE, ONE, 0] and ref == 25 and dots == [25, 25, -50]
    out = trust_cosine(rows, [1, 1, 1])
    assert out.included == (0, 1)
    assert out.delta.tolist() == [3, 4]


def test_trust_cosine_excludes_orthogonal_updates_and_rescales_to_the_reference_norm():
    rows = T([[3, 4], [3, 4], [-4, 3]])  # reference [3, 4]; <[-4, 3], [3, 4]> = 0
    assert trust_cosine(rows, [1, 1, 1]).included == (0, 1)
    rows = T([[1, 0], [100, 0], [100, 0]])  # reference [100, 0]: row 0 is scaled up 100x
    out = trust_cosine(rows, [2, 1, 1])  # weights 2**19, 2**18, 2**18: no rounding
    assert out.included == (0, 1, 2) and out.delta.tolist() == [100, 0]


def test_trust_cosine_by_hand_weights_are_trust_times_weight():
    rows = T([[4, 0], [0, 4], [4, 4]])  # reference [4, 4], |r| = sqrt(32)
    scores, *_ = agg.trust_scores(rows, agg._exact.median_rows(rows))
    assert scores == [741455, 741455, ONE]  # floor(2**20 * cos 45 degrees), 2**20
    # rescaled to |r|: floor(4 * 1482910 / 2**20) = 5 -> [5, 0], [0, 5]; [4, 4] unchanged
    assert ref_weighted_mean([[5, 0], [0, 5], [4, 4]], scores) == [3, 3]
    assert trust_cosine(rows, [1, 1, 1]).delta.tolist() == [3, 3]
    assert trust_cosine(rows, [3, 1, 1]).delta.tolist() == [3, 1]


def test_trust_cosine_among_honest_updates_and_attackers():
    rows, honest = _honest_and_attackers()
    out = trust_cosine(rows, [1] * 7)
    assert 4 not in out.included  # the sign-flipped update
    assert set(honest) <= set(out.included)
    ref = agg._exact.median_rows(rows).to(torch.float64)
    got = out.delta.to(torch.float64)
    assert torch.linalg.norm(got) <= torch.linalg.norm(ref) * 1.000001  # rescaled to the reference norm
    assert torch.nn.functional.cosine_similarity(got, ref, dim=0) > 0.99


def test_trust_scores_match_float_cosines():
    gen = torch.Generator().manual_seed(5)
    rows = torch.randint(-(1 << 30), 1 << 30, (6, 500), generator=gen)
    ref = rows[0] + rows[1]
    scores, *_ = agg.trust_scores(rows, ref)
    for s, r in zip(scores, rows):
        cos = torch.nn.functional.cosine_similarity(r.double(), ref.double(), dim=0).item()
        assert abs(s / ONE - max(cos, 0.0)) < 2e-6


def test_trust_cosine_with_a_zero_reference_includes_nothing():
    out = trust_cosine(T([[1, 0], [0, 0], [0, 0]]), [1, 1, 1])
    assert out.included == () and out.delta.tolist() == [0, 0]


@pytest.mark.parametrize("factor", [0, 1, ONE - 1, ONE, ONE + 1, 3 * ONE + 12345, 1 << 40, 1 << 62, 1 << 80])
def test_rescaling_is_exact_and_clamped(factor):
    xs = [0, 1, -1, 7, -7, 12345, -12345, LIMIT, -LIMIT, LIMIT - 1, -(LIMIT - 1), 1 << 30, -(1 << 30)]
    rows = T([xs, xs[::-1]])
    transform = agg._exact.rescaled([factor, factor])
    got = rows if transform is None else transform(rows)
    expect = [[max(-LIMIT, min(LIMIT, (x * factor) >> WEIGHT_BITS)) for x in r] for r in rows.tolist()]
    assert got.tolist() == expect


# --------------------------------------------------------------------------- through the strategy


def _contributions(n=6, d=(3, 5), seed=0, scale=0.01):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for member in range(n):
        delta = {"w": torch.randn(d, generator=gen) * scale, "b": torch.randn(d[0], generator=gen) * scale}
        if member == 2:
            delta = {k: -4 * v for k, v in delta.items()}  # a sign-flipped, scaled update
        out.append(Contribution(member=member, cid=f"cid{member}", delta=delta, samples=10 + member, reputation=1 + member % 3))
    base = {"w": torch.randn(d, generator=gen), "b": torch.randn(d[0], generator=gen)}
    return base, out


@pytest.mark.parametrize("rule", list(RULES))
def test_result_does_not_depend_on_the_order_of_contributions(rule):
    base, contributions = _contributions()
    strategy = make_rule(rule)
    first, inc_first = strategy.aggregate(base, contributions, sample_cap=12)
    shuffled = contributions[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != contributions
    second, inc_second = strategy.aggregate(base, shuffled, sample_cap=12)
    assert [c.member for c in inc_first] == [c.member for c in inc_second]
    assert [c.member for c in inc_first] == sorted(c.member for c in inc_first)
    for k in base:
        assert first[k].dtype == torch.float32 and first[k].shape == base[k].shape
        assert first[k].numpy().tobytes() == second[k].numpy().tobytes()


@pytest.mark.parametrize("rule", list(RULES))
def test_float32_output_is_finite_even_for_extreme_updates(rule):
    base, contributions = _contributions(scale=1e6)  # quantize clamps to +-2**14
    contributions[0].delta["w"][0, 0] = float("inf")
    new, _ = make_rule(rule).aggregate(base, contributions, sample_cap=12)
    for t in new.values():
        assert t.dtype == torch.float32 and bool(torch.isfinite(t).all())


@pytest.mark.parametrize("rule", list(RULES))
def test_single_update_is_returned_exactly(rule):
    rows = T([[5, -3, 0, LIMIT, -LIMIT]])
    out = RULES[rule]().combine(rows, [7])
    assert isinstance(out, Aggregate)
    assert out.delta.tolist() == rows[0].tolist() and out.included == (0,)


@pytest.mark.parametrize("rule", list(RULES))
def test_all_zero_weights_fall_back_to_equal_weights(rule):
    rows, _ = _honest_and_attackers(d=16, seed=2)
    zero, ones = RULES[rule]().combine(rows, [0] * 7), RULES[rule]().combine(rows, [1] * 7)
    assert zero.delta.tolist() == ones.delta.tolist() and zero.included == ones.included


def test_strategy_with_zero_reputation_everywhere_still_aggregates():
    base, contributions = _contributions()
    contributions = [Contribution(c.member, c.cid, c.delta, c.samples, 0) for c in contributions]
    for rule in RULES:
        new, included = make_rule(rule).aggregate(base, contributions, sample_cap=12)
        assert included and all(bool(torch.isfinite(t).all()) for t in new.values())


def test_no_contributions_returns_the_base_model():
    base, _ = _contributions()
    for rule in RULES:
        new, included = make_rule(rule).aggregate(base, [], sample_cap=1)
        assert included == [] and all(torch.equal(new[k], base[k]) for k in base)


def test_rules_reject_bad_rows():
    with pytest.raises(ValueError):
        coordinate_median(torch.zeros((0, 3), dtype=torch.int64), [])
    with pytest.raises(ValueError):
        multi_krum(torch.zeros((3, 3), dtype=torch.float32), [1, 1, 1])
    with pytest.raises(ValueError, match="limit"):
        agg._exact.exact_products(T([[LIMIT + 1, 0]]))


# --------------------------------------------------------------------------- exact helpers


def _py_products(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    return [[sum(x * y for x, y in zip(p, q)) for q in b] for p in a]


@pytest.mark.parametrize(
    "abits,bbits,plan",
    [(10, 10, "direct"), (21, 21, "direct"), (24, 24, "one-sided"), (28, 28, "one-sided"),
     (29, 29, "two-sided"), (43, 43, "two-sided"), (43, 3, "two-sided"), (3, 43, "one-sided")],
)
def test_exact_products_and_norms_are_exact_in_every_plan(abits, bbits, plan, monkeypatch):
    monkeypatch.setattr(agg._exact, "_BLOCK", 512)  # many blocks, several float64 accumulator moves
    monkeypatch.setattr(agg._exact, "_FLUSH", 3)  # and several int64 accumulator moves
    gen = torch.Generator().manual_seed(abits * 100 + bbits)

    def values(bits, n):
        top = min((1 << bits) - 1, LIMIT)
        x = torch.randint(-top, top + 1, (n, 5000), generator=gen)
        x[0, :50] = top  # worst-case magnitudes
        x[-1, 50:100] = -top
        return x

    a, b = values(abits, 4), values(bbits, 3)
    got_plan = agg._exact._Plan.of(agg._exact._max_abs(a), agg._exact._max_abs(b))
    assert {(1, 1): "direct", (1, 2): "one-sided", (2, 2): "two-sided"}[len(got_plan.left), len(got_plan.right)] == plan
    assert got_plan.span >= 1 << 11
    assert agg._exact.exact_products(a, b) == _py_products(a.tolist(), b.tolist())
    assert agg._exact.exact_products(a) == _py_products(a.tolist(), a.tolist())
    assert agg._exact.exact_sq_norms(a) == [exact_sq_norm(r) for r in a]


def test_exact_products_of_zeros_and_empty_rows():
    assert agg._exact.exact_products(torch.zeros((2, 5), dtype=torch.int64)) == [[0, 0], [0, 0]]
    assert agg._exact.exact_sq_norms(torch.zeros((2, 0), dtype=torch.int64)) == [0, 0]


def test_threaded_selection_matches_single_threaded():
    gen = torch.Generator().manual_seed(9)
    rows = torch.randint(-1000, 1000, (7, 50_000), generator=gen)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = coordinate_median(rows, [1] * 7).delta, trimmed_mean(rows, [1] * 7).delta
        torch.set_num_threads(2)
        two = coordinate_median(rows, [1] * 7).delta, trimmed_mean(rows, [1] * 7).delta
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(x, y) for x, y in zip(one, two))


def test_plain_fedavg_is_the_weighted_mean_and_a_scaled_update_steers_it():
    from fedchain.node.aggregation import plain_fedavg

    rows = torch.tensor([[10, 10], [12, 8], [-1000, 1000]], dtype=torch.int64)
    out = plain_fedavg(rows, [1, 1, 2])
    assert out.included == (0, 1, 2)
    assert out.delta.tolist() == [(10 + 12 - 2000) // 4, (10 + 8 + 2000) // 4]


def test_free_riders_are_dropped_the_copy_not_the_original():
    from fedchain.node.aggregation import drop_copies

    honest = torch.tensor([1000, -2000, 3000, 500], dtype=torch.int64)
    other = torch.tensor([-700, 900, 100, 2500], dtype=torch.int64)
    copy = honest + torch.tensor([0, 1, 0, -1])  # a slightly perturbed copy
    zero = torch.zeros(4, dtype=torch.int64)  # the global model resubmitted
    rows = torch.stack([copy, honest, zero, other])
    # the copy was submitted after the original, so it is the one dropped
    assert drop_copies(rows, positions=[3, 0, 1, 2]) == [1, 3]
    assert drop_copies(torch.stack([honest, other]), positions=[0, 1]) == [0, 1]
