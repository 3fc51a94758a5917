"""Adaptive attacks (ALIE, IPM, Min-Max) as pure functions on synthetic vectors, and the rules'
evidence-based exclusion against them. No chain: the network runs are the robustness experiment."""
import numpy as np
import pytest
import torch

from fedchain.node.aggregation import agreeing_with, drop_copies, krum_outliers, make_rule, multi_krum
from fedchain.node.protocol.fixedpoint import quantize
from fedchain.node.tools.attacks import (
    ADAPTIVE, ATTACKS, alie_update, alie_z, colluder_perturbation, deviation, ipm_update, make_attack,
    minmax_agnostic, minmax_tailored, search_gamma,
)


def _benign(n=7, d=200, seed=0, spread=0.5):
    rng = np.random.default_rng(seed)
    direction = rng.normal(0, 1, d) * 0.1
    return direction + rng.normal(0, spread * 0.1, (n, d))


def _rows(x: np.ndarray) -> torch.Tensor:
    return quantize(torch.from_numpy(np.asarray(x, dtype=np.float64)))


def test_alie_z_follows_the_papers_formula():
    # n = 10, m = 3: s = floor(10/2 + 1) - 3 = 3, z = Phi^-1(7/10)
    assert alie_z(10, 3) == pytest.approx(0.5244, abs=1e-4)
    # n = 50, m = 12 (the paper's setting): s = 14, z = Phi^-1(36/50)
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)
    assert alie_z(10, 0) == 0.0  # clamped: no attackers, no shift
    assert alie_z(10, 9) > 4  # a malicious majority: as far as the clamp allows


def test_alie_is_mean_minus_z_std_coordinate_wise():
    b = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, 4.0]])
    out = alie_update(b, 1.5)
    assert out == pytest.approx(b.mean(0) - 1.5 * b.std(0))


def test_ipm_points_against_the_benign_mean():
    b = _benign()
    out = ipm_update(b, 0.5)
    assert out == pytest.approx(-0.5 * b.mean(0))
    assert float(out @ b.mean(0)) < 0


def test_search_gamma_finds_the_edge_of_a_monotone_predicate():
    assert search_gamma(lambda g: g <= 3.7) == pytest.approx(3.7, abs=1e-4)
    assert search_gamma(lambda g: False) == 0.0
    assert search_gamma(lambda g: True) == pytest.approx(20.0, abs=1e-3)  # the search's range: 2 * gamma_init


@pytest.mark.parametrize("kind", ["std", "unit", "sign"])
def test_minmax_agnostic_stays_inside_the_benign_cloud_and_uses_all_of_it(kind):
    b = _benign()
    out = minmax_agnostic(b, kind)
    pair = max(np.linalg.norm(x - y) for x in b for y in b)
    far = max(np.linalg.norm(out - x) for x in b)
    assert far <= pair + 1e-9
    assert far >= pair * 0.999  # the largest gamma: the constraint is (nearly) tight
    assert np.linalg.norm(out - b.mean(0)) > 0
    assert np.allclose(out, b.mean(0) - (np.linalg.norm(out - b.mean(0)) / np.linalg.norm(deviation(b, kind))) * deviation(b, kind))


def test_minmax_tailored_to_multi_krum_is_still_selected_by_multi_krum():
    b = _benign(n=7)
    krum = make_rule("multi-krum", {"num_malicious_clients": 3, "num_clients_to_keep": 6})
    keys = ["0xa", "0xb", "0xc"]

    def kept(mal):
        crafted = [colluder_perturbation(mal, k, 1) for k in keys]
        return all(i in krum.combine(_rows(np.vstack([b, *crafted])), [1] * 10).included for i in range(7, 10))

    out = minmax_tailored(b, kept)
    assert kept(out)
    assert np.linalg.norm(out - b.mean(0)) > np.linalg.norm(b.std(0))  # it pulls, well past one std


def test_colluders_perturbations_survive_the_free_rider_test():
    x = _benign(n=1)[0]
    copies = [colluder_perturbation(x, k, 3) for k in ("0xa", "0xb", "0xc")]
    assert colluder_perturbation(x, "0xA", 3) == pytest.approx(copies[0])  # deterministic, case-blind
    assert all(np.linalg.norm(c - x) == pytest.approx(2.0**-8 * np.linalg.norm(x)) for c in copies)
    assert drop_copies(_rows(np.vstack(copies)), [0, 1, 2]) == [0, 1, 2]
    assert drop_copies(_rows(np.vstack([x, x * (1 + 2.0**-12)])), [0, 1]) == [0]  # a plain copy is dropped


def test_default_rule_excludes_ipm_and_keeps_every_honest_update():
    b = _benign(n=7)
    mal = [colluder_perturbation(ipm_update(b), k, 1) for k in ("0xa", "0xb", "0xc")]
    fedavg = make_rule("fedavg")
    assert fedavg.combine(_rows(b), [1] * 7).included == tuple(range(7))
    assert fedavg.combine(_rows(np.vstack([b, *mal])), [1] * 10).included == tuple(range(7))
    assert make_rule("fedavg", {"exclude_opposed": False}).combine(_rows(np.vstack([b, *mal])), [1] * 10).included == tuple(range(10))


def test_agreeing_with_needs_evidence():
    rows = torch.tensor([[4, 4], [3, 5], [5, 3], [-4, -4]], dtype=torch.int64)
    assert agreeing_with(rows, torch.zeros(2, dtype=torch.int64)) == [0, 1, 2, 3]  # zero reference: no evidence
    assert agreeing_with(rows, torch.tensor([1, 1])) == [0, 1, 2]
    assert agreeing_with(rows, torch.tensor([1, -1])) == [2]  # products 0, -2, 2, 0: only a positive one counts
    assert agreeing_with(rows[:1], torch.tensor([-1, -1])) == [0]  # nobody agrees: nobody is excluded


def test_default_rule_keeps_label_skewed_honest_updates():
    # Three honest peers trained on different classes: their updates share little, and the
    # coordinate-wise median is ~0 where only one of them moves. None points against the mean.
    rng = np.random.default_rng(1)
    common = rng.normal(0, 0.02, 300)
    b = np.stack([common + np.where(np.arange(300) // 100 == k, rng.normal(0.1, 0.05, 300), -0.01) for k in range(3)])
    assert make_rule("fedavg").combine(_rows(b), [1] * 3).included == (0, 1, 2)


def test_krum_outliers_by_hand():
    scores = [100, 104, 98, 102, 101, 99, 103, 500, 205]  # lower median 102
    assert krum_outliers(scores, 2.0, 3) == [7, 8]  # 205 > 2 * 102
    assert krum_outliers(scores, 2.02, 3) == [7]  # 205 < 2.02 * 102
    assert krum_outliers(scores, 2.0, 1) == [7]  # at most f, the highest first
    assert krum_outliers(scores[:7], 2.0, 3) == []  # a clean round: nothing to exclude


@pytest.mark.parametrize("seed", range(6))
def test_multi_krum_spares_gaussian_rounds(seed):
    b = _benign(n=10, seed=seed)
    assert make_rule("multi-krum").combine(_rows(b), [1] * 10).included == tuple(range(10))


def test_multi_krum_without_a_quota_keeps_every_honest_update():
    b = _benign(n=10, seed=3)
    assert len(multi_krum(_rows(b), [1] * 10).included) == 7  # the paper's quota: n - f kept, 3 honest dropped
    assert make_rule("multi-krum").combine(_rows(b), [1] * 10).included == tuple(range(10))
    far = np.vstack([b[:9], b[9] * 40])
    assert make_rule("multi-krum").combine(_rows(far), [1] * 10).included == tuple(range(9))


def test_adaptive_attacks_are_registered_and_take_their_colluders():
    assert set(ADAPTIVE) <= set(ATTACKS)
    for name in ADAPTIVE:
        [plugin] = make_attack(name, colluders=["0xAB", "0xCD"])
        assert plugin.name == name and plugin.colluders == {"0xab", "0xcd"}


def _result(rule, attack, frac, seed, acc, final_reps, *, partition="iid", peers=4, bad=(), included=(15, 15)):
    return {"included": list(included),"dataset": "digits", "rule": rule, "attack": attack, "malicious": frac, "seed": seed, "peers": peers,
            "rounds": 2, "malicious_peers": list(bad), "partition": partition, "alpha": 0.5 if partition != "iid" else None,
            "final_accuracy": acc, "accuracy": [acc / 2, acc], "reputation": [[1000] * peers, final_reps],
            "rounds_finalized": 2, "backdoor_success_rate": None}


def test_summaries_average_seeds_and_flag_reputation_targets():
    from fedchain.node.tools.experiment import REPUTATION_HEADERS, SUMMARY_HEADERS, reputation_summary, robustness_summary

    results = [
        _result("fedavg", "none", 0.0, 0, 0.80, [1100, 1100, 1100, 1100]),
        _result("fedavg", "none", 0.0, 1, 0.90, [1100, 1100, 900, 1100]),  # an honest peer lost reputation
        _result("fedavg", "ipm", 0.25, 0, 0.84, [1100, 1100, 1100, 500], bad=[3], included=(0b1111, 0b0111)),
        _result("fedavg", "ipm", 0.25, 1, 0.86, [1100, 1000, 1100, 1050], bad=[3], included=(0b0111, None)),  # attacker above honest peer 1
    ]
    results += [_result("fedavg", "honest-only", 0.25, s, acc, [1100] * 3, peers=3) for s, acc in ((0, 0.83), (1, 0.83))]
    rows = {(r["rule"], r["attack"]): r for r in (dict(zip(REPUTATION_HEADERS, x)) for x in reputation_summary(results))}
    clean, ipm, ref = rows[("fedavg", "none")], rows[("fedavg", "ipm")], rows[("fedavg", "honest-only")]
    assert clean["final acc"] == "0.8500 ± 0.0500" and clean["honest below start"] == "1/2" and clean["protocol"] == "plain"
    assert ipm["vs clean (same rule)"] == "+0.0 pp" and ipm["attacker above an honest peer"] == "1/2"
    assert ipm["vs honest-only (same rule)"] == "+2.0 pp"  # the attackers' updates vs their shards' absence
    assert ipm["attacker updates aggregated"] == "1/3"  # of 3 finalized rounds' attacker updates, one was kept
    assert ref["vs clean (same rule)"] == "-2.0 pp" and ref["attacker above an honest peer"] == "" and ref["seeds"] == "2"
    assert ipm["lowest honest rep"] == "1000" and ipm["highest attacker rep"] == "1050"
    assert ipm["attackers below every honest from round"] == "2,never"
    summary = [dict(zip(SUMMARY_HEADERS, r)) for r in robustness_summary(results)]
    assert [s["attack"] for s in summary] == ["none", "honest-only", "ipm"] and summary[2]["best acc"] == "0.8500 ± 0.0100"
    # without an attack-free run there is nothing to compare with: "-", not "+nan pp"
    alone = [dict(zip(SUMMARY_HEADERS, r)) for r in robustness_summary([r for r in results if r["attack"] == "ipm"])]
    assert alone[0]["vs no attack"] == "-"


def test_plots_cover_every_malicious_fraction_and_partition(tmp_path):
    from fedchain.node.tools.experiment import plot_results

    results = [_result("fedavg", "none", 0.0, 0, 0.8, [1100] * 4),
               _result("fedavg", "ipm", 0.25, 0, 0.8, [1100, 1100, 1100, 500], bad=[3]),
               _result("fedavg", "ipm", 0.5, 0, 0.7, [1100, 1100, 500, 500], bad=[2, 3]),
               _result("fedavg", "alie", 0.25, 0, 0.8, [1100, 1100, 1100, 1100], bad=[3], partition="dirichlet")]
    names = sorted(p.name for p in plot_results(results, tmp_path))
    assert names == ["accuracy-digits-25pct.png", "accuracy-digits-50pct.png", "accuracy-digits-dirichlet0.5.png",
                     "reputation-bands-digits-dirichlet0.5.png", "reputation-bands-digits.png",
                     "reputation-digits-dirichlet0.5.png", "reputation-digits.png"]


def test_collusion_channel_gives_every_colluder_the_whole_teams_rows():
    import threading

    from fedchain.node.tools.attacks import Collusion

    team = Collusion(3, timeout=30)
    got = {}

    def colluder(i):
        team.post("task", 2, f"0x{i}", np.full(2, float(i)))
        got[i] = team.gather("task", 2)

    threads = [threading.Thread(target=colluder, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(got) == [0, 1, 2] and all([float(r[0]) for r in rows] == [0.0, 1.0, 2.0] for rows in got.values())
    assert [float(r[0]) for r in Collusion(2, timeout=0.01).gather("task", 1)] == []  # a lone colluder does not hang


class _Contribution:
    def __init__(self, member, value):
        self.member, self.delta = member, {"w": torch.full((2,), float(value))}


def test_sealed_adaptive_attacker_uses_what_is_public_and_its_team_only(monkeypatch):
    """Under sealed updates the round's honest updates are not public until it closes: the attacker
    does not wait for them, and crafts from its team's benign updates (all of them, through the
    channel) plus the previous round's revealed honest updates."""
    from types import SimpleNamespace

    from fedchain.node.tools import attacks
    from fedchain.node.tools.attacks import Collusion

    members = ["0xh0", "0xh1", "0xb2", "0xb3"]
    looked_up = []

    def visible(peer, round_):
        looked_up.append(round_)
        return SimpleNamespace(contributions=[_Contribution(i, 10 * round_ + i) for i in range(4)])

    monkeypatch.setattr(attacks, "visible_updates", visible)
    team = Collusion(2, timeout=5)
    team.post("task", 3, "0xb3", np.array([7.0, 7.0]))  # the other colluder's benign update
    crafted = {}

    class Probe(attacks._Adaptive):
        name = "probe"

        def craft(self, benign, ctx, m):
            crafted["rows"], crafted["m"] = benign.copy(), m
            return benign.mean(axis=0)

    peer = SimpleNamespace(sealed=True, members=members, address="0xb2", task_cid="task", poll=0.0,
                           task=SimpleNamespace(submit_blocks=300), round_start_block=lambda r: 0,
                           chain=SimpleNamespace(block_number=lambda: 0))
    plugin = Probe(["0xb2", "0xb3"], channel=team, max_wait=60)
    plugin.transform({"w": torch.tensor([5.0, 5.0])}, SimpleNamespace(round=3, peer=peer))
    assert looked_up == [2]  # only the previous round: nothing of round 3 is public
    assert [float(r[0]) for r in crafted["rows"]] == [5.0, 7.0, 20.0, 21.0] and crafted["m"] == 2
    peer.sealed, looked_up[:] = False, []
    plugin.transform({"w": torch.tensor([5.0, 5.0])}, SimpleNamespace(round=3, peer=peer))
    assert looked_up == [3] and [float(r[0]) for r in crafted["rows"]] == [30.0, 31.0]  # plain: the round's honest updates


def test_spread_variants_dodge_the_near_copy_count_but_stay_in_the_bound():
    from fedchain.node.aggregation._exact import exact_products
    from fedchain.node.aggregation.mean import near_parallel
    from fedchain.node.tools.attacks import SPREAD, MinMaxSpread, _max_distance_to, _max_pairwise

    x = np.random.default_rng(0).normal(0, 0.01, 5000)
    tight = [colluder_perturbation(x, k, 1) for k in ("0xa", "0xb", "0xc")]
    spread = [colluder_perturbation(x, k, 1, relative=SPREAD) for k in ("0xa", "0xb", "0xc")]
    assert [len(m) for m in near_parallel(exact_products(_rows(np.vstack(tight))))] == [3, 3, 3]
    assert [len(m) for m in near_parallel(exact_products(_rows(np.vstack(spread))))] == [1, 1, 1]
    for name in ("alie-spread", "ipm-spread", "minmax-spread"):
        [plugin] = make_attack(name, colluders=["0xa"])
        assert plugin.spread == SPREAD and plugin.name == name

    class _Peer:
        rule = make_rule("fedavg")
        members = ["0xa", "0xb", "0xc", "0x1"]
        address = "0xa"

    class _Ctx:
        peer, round = _Peer(), 2

    benign = np.random.default_rng(1).normal(0.01, 0.01, (7, 400))
    mal = MinMaxSpread(["0xb", "0xc"]).craft(benign, _Ctx(), 3)
    # every spread copy stays inside the largest benign distance, as Min-Max's bound requires
    copies = [colluder_perturbation(mal, a, 2, relative=SPREAD) for a in ("0xa", "0xb", "0xc")]
    assert max(_max_distance_to(benign, c) for c in copies) <= _max_pairwise(benign)


def test_spread_variants_tune_their_spread_to_look_typical():
    from fedchain.node.tools.attacks import SPREAD, MinMaxSpread

    attacker = MinMaxSpread(["0xb"])
    rng = np.random.default_rng(3)
    common = rng.normal(0, 1, 2000)
    # IID-like benign rows (cosine about 0.9 to each other): a small spread looks typical
    attacker._tune(np.stack([3 * common + rng.normal(0, 1, 2000) for _ in range(8)]))
    assert SPREAD <= attacker.spread < 0.5
    # label-skewed rows (nearly orthogonal): the copies must be as far apart, the widest spread
    attacker._tune(rng.normal(0, 1, (8, 2000)))
    assert attacker.spread == 2.0
    # copies at the tuned spread are about as alike as the benign rows are to their closest other
    rows = np.stack([common + rng.normal(0, 0.8, 2000) for _ in range(8)])
    attacker._tune(rows)
    x = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    c = x @ x.T
    np.fill_diagonal(c, -1)
    typical = float(np.median(c.max(axis=1)))
    copies = np.stack([colluder_perturbation(common, k, 1, relative=attacker.spread) for k in ("0xa", "0xb", "0xc")])
    y = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    assert abs(float((y @ y.T)[0, 1]) - typical) < 0.08
