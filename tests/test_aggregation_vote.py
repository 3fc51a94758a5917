"""The default rule's reference is a vote: every member counts once in it, whatever its sample count
or reputation (issue 9). Weighted, members with large shards carried the test they were judged by.

The rows are a real round: round 3 of `experiment robustness --partition dirichlet --alpha 0.5`,
digits, seed 2, three colluders (members 7-9) running `ipm-spread`, recorded by wrapping
`FedAvg.combine` (tests/data/README.md)."""
from pathlib import Path

import numpy as np
import torch

from fedchain.node.aggregation import agreeing_with, fedavg_clipped, make_rule
from fedchain.node.aggregation._exact import exact_products, exact_sq_norms, lower_median
from fedchain.node.aggregation.mean import _clip_factors, near_parallel

ROUND = Path(__file__).parent / "data" / "spread-ipm-round3.npz"
HONEST, COLLUDERS = tuple(range(7)), (7, 8, 9)


def _round():
    with np.load(ROUND, allow_pickle=False) as data:
        return torch.from_numpy(data["rows"]), [int(w) for w in data["weights"]]


def _cosines(rows, reference):
    x, r = rows.double(), reference.double()
    return (x @ r / x.norm(dim=1) / r.norm()).tolist()


def test_the_recorded_round_is_what_the_test_claims():
    rows, weights = _round()
    assert rows.shape == (10, 4810) and rows.dtype == torch.int64
    # the colluders hold 40% of the sample-weighted round; honest members 0 and 5 the least
    assert 5 * sum(weights[i] for i in COLLUDERS) >= 2 * sum(weights)
    assert sorted(range(10), key=weights.__getitem__)[:2] == [0, 5]
    # spread: no two updates are near-copies, so only the vote can tell them apart
    assert all(len(m) == 1 for m in near_parallel(exact_products(rows)))


def test_weighted_by_samples_the_colluders_would_carry_the_reference():
    rows, weights = _round()
    weighted = fedavg_clipped(rows, weights).delta
    norms = exact_sq_norms(rows)
    keep = agreeing_with(rows, weighted, factors=_clip_factors(norms, lower_median(norms)), cos=(1, 2), pull=(1, 2))
    assert keep == [1, 2, 3, 4, 6, 7, 8, 9]  # honest 0 and 5 out, the colluders in
    assert all(abs(c) < 0.1 for c in (_cosines(rows, weighted)[i] for i in COLLUDERS))  # steered to ~90 degrees


def test_one_member_one_vote_excludes_the_colluders_and_keeps_every_honest_member():
    rows, weights = _round()
    out = make_rule("fedavg").combine(rows, weights)
    assert out.included == HONEST
    vote = fedavg_clipped(rows, [1] * 10).delta
    assert all(c < -0.18 for c in (_cosines(rows, vote)[i] for i in COLLUDERS))
    # the result is still the sample- and reputation-weighted clipped mean of the kept members
    assert torch.equal(out.delta, fedavg_clipped(rows[list(HONEST)], [weights[i] for i in HONEST]).delta)


def test_weights_do_not_change_who_is_excluded():
    rows, weights = _round()
    rule = make_rule("fedavg")
    for w in (weights, [1] * 10, [10**6 if i in COLLUDERS else 1 for i in range(10)], list(range(1, 11))):
        assert rule.combine(rows, w).included == HONEST


def test_reference_weights():
    from fedchain.node.aggregation.mean import REFERENCES, reference_weights

    w = [5, 1, 9, 3, 7]
    assert reference_weights(w) == reference_weights(w, "vote") == [1] * 5
    assert reference_weights(w, "weights") == w
    assert reference_weights(w, "capped") == [5, 1, 5, 3, 5]  # at most the lower median
    assert REFERENCES == ("vote", "weights", "capped")
    import pytest

    with pytest.raises(ValueError, match="unknown reference"):
        reference_weights(w, "mean")


def test_only_the_vote_keeps_honest_member_0_in_the_recorded_round():
    # The alternatives kept to measure the vote against: weighted, the colluders carry the
    # reference; capped at the lower median weight, they still do, and only peer 0 goes.
    rows, weights = _round()
    assert fedavg_clipped(rows, weights, exclude_opposed=True, reference="weights").included == (1, 2, 3, 4, 6, 7, 8, 9)
    assert fedavg_clipped(rows, weights, exclude_opposed=True, reference="capped").included == (1, 2, 3, 4, 5, 6, 7, 8, 9)
    assert fedavg_clipped(rows, weights, exclude_opposed=True).included == HONEST


def test_colluders_claiming_the_sample_cap_report_it(monkeypatch):
    from fedchain.node.tools import attacks

    seen = {}

    def crafted(self, delta, ctx):  # stands in for the spread IPM itself: records what it is given
        seen["samples"] = ctx.metadata["samples"]
        return delta

    monkeypatch.setattr(attacks.InnerProductManipulationSpread, "transform", crafted)

    class _Task:
        sample_cap = 216

    class _Peer:
        task = _Task()

    class _Ctx:
        peer, metadata = _Peer(), {"samples": 50}

    [plugin] = attacks.make_attack("ipm-spread-cap", colluders=["0xa"])
    assert plugin.name == "ipm-spread-cap" and isinstance(plugin, attacks.InnerProductManipulationSpread)
    ctx = _Ctx()
    plugin.transform({}, ctx)
    assert ctx.metadata["samples"] == seen["samples"] == 216
