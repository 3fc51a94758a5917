"""The default rule's sign test counts near-parallel updates once (issue 9: a blind IPM in round 1
of sealed updates, sent as three near-copies, carried the reference it was tested against).
Pure functions on synthetic vectors; the network runs are the robustness experiment."""
import numpy as np
import torch

from fedchain.node.aggregation import agreeing_with, fedavg_clipped, make_rule
from fedchain.node.aggregation._exact import exact_products, exact_sq_norms
from fedchain.node.aggregation.mean import PARALLEL_COS, near_parallel
from fedchain.node.protocol.fixedpoint import quantize
from fedchain.node.tools.attacks import colluder_perturbation, ipm_update

D = 2000


def _rows(x: np.ndarray) -> torch.Tensor:
    return quantize(torch.from_numpy(np.asarray(x, dtype=np.float64)))


def _skewed(n: int, shared: float, seed: int, own_seed: int | None = None) -> np.ndarray:
    """``n`` updates that share a component of squared weight ``shared`` against 1 for each one's
    own direction (label skew: each peer's classes move their own weights)."""
    common = np.random.default_rng(seed).normal(0, 0.01, D)
    rng = np.random.default_rng([seed if own_seed is None else own_seed, 1])
    return np.stack([np.sqrt(shared) * common + rng.normal(0, 0.01, D) for _ in range(n)])


def _blind_ipm_round(seed: int) -> torch.Tensor:
    # Round 1, sealed: the three colluders see no honest update, only their own benign ones (their
    # own classes, and the little all updates share), and send -0.5 times their mean as three
    # near-copies (what `experiment robustness` does).
    honest, own = _skewed(7, 0.05, seed), _skewed(3, 0.05, seed, own_seed=seed + 100)
    bad = [colluder_perturbation(ipm_update(own, 0.5), k, 1) for k in ("0xa", "0xb", "0xc")]
    return _rows(np.vstack([honest, *bad]))


def _clipped_mean(rows: torch.Tensor) -> torch.Tensor:
    return fedavg_clipped(rows, [1] * rows.shape[0]).delta


def test_near_parallel_is_an_exact_cosine_threshold():
    assert PARALLEL_COS == (15, 16)
    rows = torch.tensor([[16, 0], [15, 5], [15, 6], [-16, 0], [0, 0]], dtype=torch.int64)
    # cos(0, 1) = 15/sqrt(250) = 0.949 >= 0.9375; cos(0, 2) = 15/sqrt(261) = 0.928 < 0.9375
    assert near_parallel(exact_products(rows)) == [(0, 1), (0, 1, 2), (1, 2), (3,), (4,)]
    # the boundary itself counts (|a| = |b| = 16, a.b = 240: cos = 15/16), one unit less does not
    assert near_parallel([[256, 240], [240, 256]]) == [(0, 1), (0, 1)]
    assert near_parallel([[256, 239], [239, 256]]) == [(0,), (1,)]


SIGN_TEST = {"opposed_cos": 0, "opposed_pull": 0}  # FLTrust's bare sign test, without the evidence thresholds


def test_a_blind_ipm_sent_as_near_copies_is_excluded_in_round_one():
    for seed in range(6):
        rows = _blind_ipm_round(seed)
        # Before: tested against the round's clipped mean, which the three near-copies carry.
        assert agreeing_with(rows, _clipped_mean(rows)) == list(range(10)), seed
        # Now the copies weigh as one update in the reference: they point against the honest ones.
        assert make_rule("fedavg", SIGN_TEST).combine(rows, [1] * 10).included == tuple(range(7)), seed
        # and under the default evidence thresholds too: near-copies need no more evidence than that
        assert make_rule("fedavg").combine(rows, [1] * 10).included == tuple(range(7)), seed


def test_honest_updates_are_never_excluded_in_clean_rounds():
    for seed in range(5):
        for shared in (0.0, 0.2, 2.0):  # label skew (nearly orthogonal) to IID-like (cos ~0.67)
            rows = _rows(_skewed(10, shared, seed))
            assert make_rule("fedavg").combine(rows, list(range(1, 11))).included == tuple(range(10)), (seed, shared)


def test_near_parallel_honest_updates_are_harmless():
    # IID-like updates so alike that every pair is near-parallel: each weighs 1/10 in the
    # reference, which then points the same way as the mean, and nobody is excluded.
    rows = _rows(_skewed(10, 40.0, 3))
    assert all(len(m) == 10 for m in near_parallel(exact_products(rows)))
    assert make_rule("fedavg").combine(rows, [1] * 10).included == tuple(range(10))


def test_without_near_parallel_updates_the_result_is_the_old_rule_bit_for_bit():
    # No two rows near-parallel: the reference is the round's clipped mean, every member weighing
    # the same in it (one member, one vote), and the result the weighted clipped mean of the rest.
    honest = _skewed(7, 0.3, 9)
    rows = _rows(np.vstack([honest, -1.5 * honest[:2]]))  # two sign flips of different updates
    assert all(len(m) == 1 for m in near_parallel(exact_products(rows)))
    weights = [3, 1, 4, 1, 5, 9, 2, 6, 5]
    # (under the bare sign test: these flips of weakly aligned label-skewed updates fall inside the
    # default evidence thresholds, test_aggregation_evidence.py)
    out = fedavg_clipped(rows, weights, exclude_opposed=True, opposed_cos=(0, 1), opposed_pull=(0, 1))
    keep = agreeing_with(rows, fedavg_clipped(rows, [1] * 9).delta)
    assert out.included == tuple(keep) and len(keep) < 9
    assert torch.equal(out.delta, fedavg_clipped(rows[keep], [weights[i] for i in keep]).delta)


def test_near_copies_weigh_as_one_update_in_the_aggregate_too():
    # A copy never pays: three colluders sending one vector that the sign test keeps (inside the
    # honest spread, as ALIE and Min-Max are) move the aggregate as one member would, not three.
    honest = _skewed(7, 2.0, 5)
    crafted = honest.mean(axis=0) - 0.8 * honest.std(axis=0)
    rows = _rows(np.vstack([honest, *[colluder_perturbation(crafted, k, 2) for k in ("0xa", "0xb", "0xc")]]))
    assert [len(m) for m in near_parallel(exact_products(rows))] == [1] * 7 + [3] * 3
    out = make_rule("fedavg").combine(rows, [2] * 10)
    assert out.included == tuple(range(10))
    # bit for bit the clipped mean with the copies' weights divided by three (nothing excluded),
    # clipped to the lower median of the norms with the copies counted once between them
    assert torch.equal(out.delta, fedavg_clipped(rows, [6] * 7 + [2] * 3, clip_sq=_median_counting(rows, [3] * 7 + [1] * 3)).delta)
    assert not torch.equal(out.delta, fedavg_clipped(rows, [2] * 10).delta)


def _median_counting(rows: torch.Tensor, counts: list[int]) -> int:
    norms = sorted(q for q, c in zip(exact_sq_norms(rows), counts) for _ in range(c))
    return norms[(len(norms) - 1) // 2]


def test_near_copies_cannot_pull_the_clip_bound_down():
    # Three tiny near-copies would be three of the ten norms, moving the lower median (the clip
    # bound of every update) down by up to three places; counted once they move it by one at most.
    honest = _skewed(7, 2.0, 6) * np.linspace(0.5, 2.0, 7)[:, None]
    tiny = 0.05 * honest.mean(axis=0)
    rows = _rows(np.vstack([honest, *[colluder_perturbation(tiny, k, 4) for k in ("0xa", "0xb", "0xc")]]))
    norms = exact_sq_norms(rows)
    out = make_rule("fedavg").combine(rows, [1] * 10)
    assert out.included == tuple(range(10))
    honest = sorted(norms[:7])
    assert max(norms[7:]) < honest[0]
    # the lower median of the seven honest norms and one copy: one place below the honest median
    assert _median_counting(rows, [3] * 7 + [1] * 3) == honest[2]
    # (the plain lower median of the ten would have been three places below it)
    assert sorted(norms)[4] == honest[1] and fedavg_clipped(rows, [1] * 10, exclude_opposed=False).delta.ne(
        fedavg_clipped(rows, [1] * 10, exclude_opposed=False, clip_sq=honest[2]).delta).any()
    assert torch.equal(out.delta, fedavg_clipped(rows, [3] * 7 + [1] * 3, clip_sq=honest[2]).delta)


def test_copies_share_weight_only_with_the_copies_that_are_kept():
    # Two sets of near-copies: one opposed to the reference (excluded), one kept. The kept set's
    # members share one weight among themselves; the excluded ones take nothing from them.
    honest = _skewed(6, 2.0, 8)
    mean = honest.mean(axis=0)
    kept = [colluder_perturbation(mean - 0.5 * honest.std(axis=0), k, 3) for k in ("0xa", "0xb")]
    opposed = [colluder_perturbation(-2.0 * mean, k, 3) for k in ("0xc", "0xd", "0xe")]
    rows = _rows(np.vstack([honest, *kept, *opposed]))
    out = make_rule("fedavg").combine(rows, [1] * 11)
    assert out.included == tuple(range(8))
    assert torch.equal(out.delta, fedavg_clipped(rows[:8], [2] * 6 + [1] * 2, clip_sq=_median_counting(rows[:8], [2] * 6 + [1] * 2)).delta)
