"""The default rule excludes an update only with evidence against the round's reference (issue 9:
label-skewed honest peers just past 90 degrees from the round's mean were excluded in round 1 and
halved, while attackers inside the honest spread ended above them). Pure functions on small exact
rows and synthetic label-skewed rounds; the network runs are the robustness experiment."""
import numpy as np
import pytest
import torch

from fedchain.node.aggregation import agreeing_with, make_rule
from fedchain.node.aggregation._exact import ONE
from fedchain.node.aggregation.mean import OPPOSED_COS, OPPOSED_PULL
from fedchain.node.errors import ConfigError
from fedchain.node.protocol.fixedpoint import quantize
from fedchain.node.tools.attacks import colluder_perturbation, ipm_update

D = 2000
HALF = {"cos": (1, 2), "pull": (1, 2)}


def _t(rows):
    return torch.tensor(rows, dtype=torch.int64)


def test_the_evidence_thresholds_are_exact_at_their_boundaries():
    assert OPPOSED_COS == OPPOSED_PULL == (1, 2)
    ref = _t([2, 0, 0, 0, 0])  # |ref|^2 = 4: half of it is 2
    rows = _t([
        [-1, 1, 1, 1, 0],  # cosine exactly -1/2 (d = -2, |row| = 2); pull -2
        [-2, 2, 2, 2, 1],  # cosine -0.485; pull -4
        [-1, 1, 1, 1, 1],  # cosine -0.447; pull exactly -2 = -|ref|^2 / 2
        [0, 5, 0, 0, 0],   # orthogonal: the bare sign test excludes it, evidence does not
        [1, -4, 4, 4, 4],  # a positive inner product: always kept
    ])
    assert agreeing_with(rows, ref) == [4]  # the bare sign test (the function's default)
    assert agreeing_with(rows, ref, cos=(1, 2), pull=(64, 1)) == [1, 2, 3, 4]  # the angle alone
    assert agreeing_with(rows, ref, cos=(1, 1), pull=(1, 2)) == [3, 4]  # the pull alone
    assert agreeing_with(rows, ref, **HALF) == [3, 4]
    # The pull counts the row as clipped: one unit of clip factor below 1 keeps row 2 (pull just
    # above -2), half keeps row 1 at exactly -2 (still opposed) and row 0 opposed by its angle.
    assert agreeing_with(rows, ref, factors=[ONE // 2, ONE // 2, ONE - 1, ONE, ONE], **HALF) == [2, 3, 4]


def test_every_row_opposed_is_no_evidence():
    rows = _t([[-4, 0], [-3, 1]])
    assert agreeing_with(rows, _t([1, 0]), **HALF) == [0, 1]
    assert agreeing_with(rows, _t([0, 0]), **HALF) == [0, 1]


def _skewed(n, shared, seed):
    common = np.random.default_rng(seed).normal(0, 0.01, D)
    rng = np.random.default_rng([seed, 1])
    return np.stack([np.sqrt(shared) * common + rng.normal(0, 0.01, D) for _ in range(n)])


def _rows(x):
    return quantize(torch.from_numpy(np.asarray(x, dtype=np.float64)))


def _past_90_degrees(honest, cos):
    """An honest-looking update of the same norm as honest[0] at cosine ``cos`` to the honest
    mean: a peer trained on classes the others lack."""
    mean = honest.mean(axis=0)
    u = mean / np.linalg.norm(mean)
    own = np.random.default_rng(99).normal(0, 1, D)  # its own classes: a direction of its own
    other = own - (own @ u) * u
    other /= np.linalg.norm(other)
    return np.linalg.norm(honest[0]) * (cos * u + np.sqrt(1 - cos * cos) * other)


def test_a_label_skewed_honest_update_just_past_90_degrees_is_kept():
    for seed in range(4):
        honest = _skewed(9, 0.3, seed)
        rows = _rows(np.vstack([honest, _past_90_degrees(honest, -0.35)]))
        assert make_rule("fedavg").combine(rows, [1] * 10).included == tuple(range(10)), seed
        # the bare sign test excluded it
        assert make_rule("fedavg", {"opposed_cos": 0, "opposed_pull": 0}).combine(rows, [1] * 10).included == tuple(range(9)), seed


def test_near_copies_are_excluded_on_the_bare_sign():
    # The same weakly opposed update as above, sent by three colluders as near-copies: no
    # independent honest peers send near-parallel updates, so a non-positive product is enough.
    rows = _t([[-2, 2, 2, 2, 1], [-2, 2, 2, 2, 1], [0, 5, 0, 0, 0], [1, -4, 4, 4, 4]])
    ref = _t([2, 0, 0, 0, 0])
    assert agreeing_with(rows, ref, cos=(1, 2), pull=(64, 1)) == [0, 1, 2, 3]
    assert agreeing_with(rows, ref, cos=(1, 2), pull=(64, 1), alike=[True, True, False, False]) == [2, 3]
    assert agreeing_with(rows, ref, cos=(1, 2), pull=(64, 1), alike=[False, False, True, True]) == [0, 1, 3]
    for seed in range(4):
        honest = _skewed(7, 0.3, seed)
        lone = _past_90_degrees(honest, -0.35)
        copies = [colluder_perturbation(lone, k, 1) for k in ("0xa", "0xb", "0xc")]
        assert make_rule("fedavg").combine(_rows(np.vstack([honest, *copies])), [1] * 10).included == tuple(range(7)), seed


def test_ipm_crafted_from_a_public_round_and_sign_flips_are_still_excluded():
    for seed in range(4):
        honest = _skewed(7, 0.3, seed)
        public = _skewed(7, 0.3, seed + 50) * 0.5 + honest * 0.5  # last round's revealed updates, alike
        ipm = [colluder_perturbation(ipm_update(public, 0.5), k, 2) for k in ("0xa", "0xb", "0xc")]
        rows = _rows(np.vstack([honest, *ipm]))
        assert make_rule("fedavg").combine(rows, [1] * 10).included == tuple(range(7)), seed
        flips = _rows(np.vstack([honest, -4 * honest[:3]]))  # the signflip attack, three peers
        assert make_rule("fedavg").combine(flips, [1] * 10).included == tuple(range(7)), seed


def test_clean_label_skewed_rounds_exclude_nobody():
    for seed in range(5):
        for shared in (0.05, 0.3, 2.0):
            rows = _rows(_skewed(10, shared, seed))
            assert make_rule("fedavg").combine(rows, list(range(1, 11))).included == tuple(range(10)), (seed, shared)


def test_the_thresholds_are_pinned_parameters():
    assert make_rule("fedavg").params() == {}
    rule = make_rule("fedavg", {"opposed_cos": 0, "opposed_pull": 0.25})
    assert rule.params() == {"opposed_cos": 0.0, "opposed_pull": 0.25}
    for bad in ({"opposed_cos": -0.1}, {"opposed_cos": 1.5}, {"opposed_pull": float("nan")}, {"opposed_pull": True},
                {"opposed_cos": "half"}):
        with pytest.raises(ConfigError):
            make_rule("fedavg", bad)
