"""Sample-level differential privacy (issue #11, part 2a) and membership-inference metrics.

Fast unit tests of the task's DP section, the metadata every validator checks, the accountant and
the per-peer budget, the attack metrics; and one small network (3 peer processes, 2 rounds,
``simulate --dp-epsilon 8``)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from _support import run_cli
from fedchain.node.errors import ArtifactInvalid, ConfigError
from fedchain.node.ml.data import Dataset
from fedchain.node.ml.models import init_state, register_model
from fedchain.node.ml.privacy import (PrivacyAccount, check_dp_compatible, noise_multiplier_for, poisson_sampling,
                                      train_private)
from fedchain.node.peer.privacy import SampleDP
from fedchain.node.protocol.artifact import encode
from fedchain.node.protocol.privacy import PrivacySpent, budget_micro, epsilon_to_micro, parse_privacy
from fedchain.node.protocol.round import update_metadata, validate_update
from fedchain.node.protocol.task import ModelSpec, PrivacyConfig, Task, TrainConfig
from fedchain.node.tools.operations import privacy_config
from fedchain.node.tools.privacy import (attack_metrics, chance_levels, crossfit_advantage, lira_offline_scores, membership_advantage, parse_epsilons,
                                         roc_auc)

DP = PrivacyConfig(delta=1e-5, max_grad_norm=1.0, epsilon=8.0)
PEER = "0x00000000000000000000000000000000000000a1"


# ---------------------------------------------------------------------------- the task
def _task(dp=None, rounds=2, epochs=1, **train):
    return Task(name="t", dataset="digits", model=ModelSpec(8, 3, (4,)), train=TrainConfig(epochs=epochs, dp=dp, **train),
                rounds=rounds)


def test_a_task_without_dp_keeps_its_json_and_a_dp_task_round_trips():
    plain = _task()
    assert "dp" not in plain.to_dict()["train"]  # old tasks keep their CIDs
    for dp in (DP, PrivacyConfig(noise_multiplier=1.1), PrivacyConfig(epsilon=3, noise_multiplier=0.9, delta=1e-6, max_grad_norm=2)):
        task = _task(dp)
        again = Task.from_bytes(task.to_bytes())
        assert again == task and again.train.dp == dp
    assert json.loads(_task(DP).to_bytes())["train"]["dp"] == {"delta": 1e-5, "max_grad_norm": 1.0, "epsilon": 8.0}


@pytest.mark.parametrize("fields, message", [
    ({}, "budget epsilon or a noise multiplier"),
    ({"epsilon": 0.0}, "epsilon"), ({"epsilon": math.inf}, "epsilon"), ({"epsilon": 1e9}, "epsilon"),
    ({"epsilon": 8, "delta": 0.0}, "delta"), ({"epsilon": 8, "delta": 1.0}, "delta"),
    ({"epsilon": 8, "max_grad_norm": -1.0}, "clipping"), ({"noise_multiplier": math.nan}, "noise"),
])
def test_bad_dp_settings_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        PrivacyConfig(**fields)


@pytest.mark.parametrize("dp", [
    {"delta": "1e-5", "max_grad_norm": 1.0, "epsilon": 8}, {"delta": 1e-5, "max_grad_norm": True, "epsilon": 8},
    {"delta": 1e-5, "max_grad_norm": 1.0, "epsilon": 8, "sigma": 1}, {"max_grad_norm": 1.0, "epsilon": 8}, [1, 2],
    {"delta": 1e-5, "max_grad_norm": 1.0},
])
def test_a_malformed_dp_section_in_a_task_description_is_refused(dp):
    d = _task(DP).to_dict()
    d["train"]["dp"] = dp
    with pytest.raises(ConfigError):
        Task.from_dict(d)


def test_cli_dp_options():
    assert privacy_config() is None
    assert privacy_config(epsilon=8) == PrivacyConfig(delta=1e-5, max_grad_norm=1.0, epsilon=8)
    assert privacy_config(noise=1.2, clip=2, delta=1e-6) == PrivacyConfig(delta=1e-6, max_grad_norm=2, noise_multiplier=1.2)
    with pytest.raises(ConfigError, match="go with --dp-epsilon"):
        privacy_config(clip=2.0)
    r = run_cli(["deploy", "--members", PEER, "--dp-epsilon", "-1"])
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "epsilon" in r.stderr


# ---------------------------------------------------------------------------- metadata
def _meta(**dp):
    return {"dp_epsilon_micro": "7990000", "dp_noise_micro": "1100000"} | dp


def test_dp_metadata_is_parsed_and_bounded_by_the_budget():
    assert parse_privacy(_meta(), DP) == PrivacySpent(7_990_000, 1_100_000)
    assert parse_privacy({}, None) is None
    assert budget_micro(DP) == 8_000_000 and epsilon_to_micro(8.0) == 8_000_000 and epsilon_to_micro(7.9999991) == 8_000_000
    bad = [
        (_meta(), None, "task without DP"),
        ({"dp_epsilon_micro": "1"}, DP, "needs"),
        (_meta(dp_extra="1"), DP, "unknown DP field"),
        (_meta(dp_epsilon_micro="8000001"), DP, "out of range"),  # over the budget: excluded
        (_meta(dp_epsilon_micro="07"), DP, "canonical"),
        (_meta(dp_epsilon_micro="-1"), DP, "canonical"),
        (_meta(dp_noise_micro="0"), DP, "out of range"),
        (_meta(dp_noise_micro="1000000"), PrivacyConfig(noise_multiplier=1.1), "out of range"),  # not the task's noise
    ]
    for meta, dp, message in bad:
        with pytest.raises(ArtifactInvalid, match=message):
            parse_privacy(meta, dp)
    assert parse_privacy(_meta(dp_epsilon_micro="99000000"), PrivacyConfig(noise_multiplier=1.1)).epsilon == 99.0


def test_validate_update_checks_the_dp_fields_against_the_task():
    schema = {"w": ((3,), "F32")}
    kw = dict(max_bytes=1 << 20, task_cid="QmTask", round_=1, base_cid="QmBase", submitter=PEER)
    good = encode({"w": torch.zeros(3)}, update_metadata("QmTask", 1, "QmBase", 10, PEER, privacy=PrivacySpent(5_000_000, 900_000)))
    _, samples = validate_update(good, schema, dp=DP, **kw)
    assert samples == 10
    with pytest.raises(ArtifactInvalid, match="without DP"):
        validate_update(good, schema, **kw)
    plain = encode({"w": torch.zeros(3)}, update_metadata("QmTask", 1, "QmBase", 10, PEER))
    with pytest.raises(ArtifactInvalid, match="needs"):
        validate_update(plain, schema, dp=DP, **kw)


# ---------------------------------------------------------------------------- accountant and budget
def test_the_noise_for_a_budget_spends_it_over_the_task_and_depends_on_the_shard():
    train = TrainConfig(epochs=2, batch_size=32, dp=DP)
    assert poisson_sampling(100, 32) == (0.25, 4) and poisson_sampling(5, 32) == (1.0, 1)
    small, large = noise_multiplier_for(DP, train, 3, 100), noise_multiplier_for(DP, train, 3, 1000)
    assert small > large > 0  # a larger sample rate needs more noise for the same budget
    q, k = poisson_sampling(1000, 32)
    spent = PrivacyAccount([(large, q, 3 * 2 * k)]).epsilon(DP.delta)
    assert 7.8 < spent <= 8.0
    assert noise_multiplier_for(PrivacyConfig(noise_multiplier=1.3), train, 3, 1000) == 1.3
    with pytest.raises(ConfigError, match="no noise multiplier"):
        noise_multiplier_for(PrivacyConfig(epsilon=1e-6, delta=1e-5), train, 1000, 1000)


def test_the_account_composes_rounds_and_survives_a_restart(tmp_path):
    acc = PrivacyAccount()
    assert acc.epsilon(1e-5) == 0.0
    acc.add([(1.0, 0.1, 50)])
    one = acc.epsilon(1e-5)
    acc.add([(1.0, 0.1, 50)])
    assert acc.history == [(1.0, 0.1, 100)] and acc.epsilon(1e-5) > one
    assert acc.fits(None, 1e-5, [(1.0, 0.1, 10**6)]) and not acc.fits(one, 1e-5, [(1.0, 0.1, 1)])
    path = tmp_path / "privacy.json"
    acc.save(path)
    assert PrivacyAccount.load(path).history == acc.history
    path.write_text('{"accountant": "rdp", "history": [[1.0, 2.0, 5]]}')
    with pytest.raises(ConfigError, match="refusing to start over"):
        PrivacyAccount.load(path)


def _shard(n=64, features=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset("toy", rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n).astype(np.int64), classes)


def test_dp_sgd_trains_and_reports_what_it_spent():
    task = _task(PrivacyConfig(noise_multiplier=1.0), epochs=2)
    base = init_state(task.model, seed=0)
    delta, loss, entries = train_private(task.model, base, _shard(), task.train, noise_multiplier=1.0, seed=1)
    assert set(delta) == set(base) and math.isfinite(loss)
    assert entries == [(1.0, 0.5, 4)]  # 64 samples, batch 32: q = 1/2, 2 steps per epoch, 2 epochs
    assert any(float(v.abs().sum()) > 0 for v in delta.values())
    again, _, _ = train_private(task.model, base, _shard(), task.train, noise_multiplier=1.0, seed=1)
    assert all(torch.equal(delta[k], again[k]) for k in delta)  # seeded: reproducible


def test_a_peer_stops_contributing_when_its_budget_is_spent(tmp_path):
    events = []
    task = _task(PrivacyConfig(epsilon=4.0, noise_multiplier=2.0), rounds=5)
    dp = SampleDP(task, "QmTask", 64, lambda event, round_=None, **f: events.append((event, round_, f)), state_dir=tmp_path)
    base = init_state(task.model, seed=0)
    spent = []
    for r in range(1, 6):
        if not dp.admits(r):
            break
        dp.train(r, "QmBase", base, _shard(), seed=r)
        spent.append(dp.epsilon)
    assert len(spent) == 4 and spent == sorted(spent) and spent[-1] <= 4.0  # 2.06, 2.81, 3.40, 3.91; a 5th: 4.37
    assert [e for e, _, _ in events].count("dp_budget_spent") == 1 and not dp.admits(len(spent) + 2)
    assert dp.exhausted  # the runtime then stops logging missed windows it did not miss
    assert [e for e, _, _ in events].count("dp_budget_spent") == 1  # said once
    assert dp.spent.epsilon_micro == epsilon_to_micro(spent[-1])
    # A restarted peer continues the same account: no fresh budget.
    again = SampleDP(task, "QmTask", 64, lambda *a, **k: None, state_dir=tmp_path)
    assert again.epsilon == pytest.approx(spent[-1]) and not again.admits(len(spent) + 1)


def test_a_retried_round_costs_nothing_more():
    task = _task(PrivacyConfig(noise_multiplier=1.0))
    dp = SampleDP(task, "QmTask", 64, lambda *a, **k: None)
    base = init_state(task.model, seed=0)
    first, _ = dp.train(1, "QmBase", base, _shard(), seed=1)
    eps = dp.epsilon
    second, _ = dp.train(1, "QmBase", base, _shard(), seed=1)
    assert dp.epsilon == eps and all(first[k] is second[k] for k in first)


def test_batchnorm_is_refused_for_dp_sgd():
    register_model("bn-test", lambda inputs, classes: nn.Sequential(nn.Linear(inputs, 4), nn.BatchNorm1d(4), nn.Linear(4, classes)))
    check_dp_compatible(ModelSpec(8, 3, arch="logreg"))
    with pytest.raises(ConfigError, match="cannot be trained with DP-SGD"):
        check_dp_compatible(ModelSpec(8, 3, arch="bn-test"))


# ---------------------------------------------------------------------------- attack metrics
def test_auc_and_advantage_match_their_definitions():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    m, n = rng.integers(0, 20, 300).astype(float) + 2, rng.integers(0, 20, 200).astype(float)  # ties on purpose
    labels, scores = np.r_[np.ones(300), np.zeros(200)], np.r_[m, n]
    assert roc_auc(m, n) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(labels, scores)
    assert membership_advantage(m, n) == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert attack_metrics([3.0, 4.0], [1.0, 2.0]) == {"auc": 1.0, "advantage": 1.0}
    assert attack_metrics([1.0, 1.0], [1.0, 1.0]) == {"auc": 0.5, "advantage": 0.0}
    same = attack_metrics(rng.normal(size=5000), rng.normal(size=5000))
    assert abs(same["auc"] - 0.5) < 0.02 and same["advantage"] < 0.05
    with pytest.raises(ValueError):
        roc_auc([], [1.0])


def test_chance_levels_bound_what_guessing_reaches():
    rng = np.random.default_rng(2)
    chance = chance_levels(300, 200)
    trials = [attack_metrics(rng.normal(size=300), rng.normal(size=200)) for _ in range(200)]
    assert np.mean([t["advantage"] <= chance["advantage"] for t in trials]) >= 0.9
    assert np.mean([abs(t["auc"] - 0.5) <= chance["auc"] - 0.5 for t in trials]) >= 0.9


def test_crossfit_advantage_is_unbiased_where_the_best_threshold_is_not():
    rng = np.random.default_rng(3)
    null = [(membership_advantage(m, n), crossfit_advantage(m, n, seed=i))
            for i, (m, n) in enumerate((rng.normal(size=600), rng.normal(size=200)) for _ in range(150))]
    best, cv = np.array(null).T
    mean = chance_levels(600, 200)["advantage_mean"]
    assert abs(best.mean() - mean) < 0.15 * mean  # guessing's average with the threshold fitted on the scored samples
    assert abs(cv.mean()) < 0.01 and cv.min() < 0  # fitted elsewhere: centred on 0
    separated = crossfit_advantage(rng.normal(1.5, 1, 600), rng.normal(0, 1, 200), seed=0)
    assert separated == pytest.approx(2 * 0.7734 - 1, abs=0.08)  # equal-variance Gaussians 1.5 apart: 2 Phi(0.75) - 1
    assert crossfit_advantage(np.arange(20.0) + 100, np.arange(30.0)) == 1.0  # sets apart: apart on the held-out halves too
    with pytest.raises(ValueError):
        crossfit_advantage([1.0], [0.0, 1.0])


def test_offline_lira_finds_planted_members():
    rng = np.random.default_rng(1)
    per_sample = rng.normal(0, 3, 400)  # samples differ a lot in how confident any model is on them
    shadows = per_sample + rng.normal(0, 0.5, (8, 400))
    target = per_sample + rng.normal(0, 0.5, 400)
    target[:200] += 1.0  # members: the target is more confident on them than on a model without them
    scores = lira_offline_scores(target, shadows)
    calibrated = attack_metrics(scores[:200], scores[200:])
    raw = attack_metrics(target[:200], target[200:])  # a global threshold on confidence alone
    assert calibrated["auc"] > 0.85 and calibrated["auc"] > raw["auc"] + 0.2
    with pytest.raises(ValueError):
        lira_offline_scores(target, shadows[:1])


def test_epsilon_lists():
    assert parse_epsilons("inf, 8,4,1") == [math.inf, 8.0, 4.0, 1.0]
    for bad in ("", "x", "0", "-1"):
        with pytest.raises(ConfigError):
            parse_epsilons(bad)


# ---------------------------------------------------------------------------- one small network
@pytest.mark.timeout(400)
def test_a_simulation_pins_its_model_and_batch_size_and_the_default_task_is_unchanged():
    from fedchain.node.ml.data import load_dataset, train_test_split
    from fedchain.node.tools.simulate import SimulationConfig, _task

    ds = load_dataset("digits")
    train, _ = train_test_split(ds, seed=0)
    dp = PrivacyConfig(delta=1e-5, max_grad_norm=3.0, epsilon=8.0)
    task = _task(SimulationConfig(model="logreg", batch_size=64, dp=dp), ds, train)
    assert task.model.arch == "logreg" and task.train.batch_size == 64 and task.train.dp == dp
    assert _task(SimulationConfig(), ds, train).train.to_dict() == TrainConfig(epochs=5).to_dict()  # batch 32, as before
    with pytest.raises(ConfigError, match="batch size"):
        SimulationConfig(batch_size=0)


def test_simulate_with_dp_finalizes_every_round_and_reports_epsilon(tmp_path):
    r = run_cli(["simulate", "--peers", "3", "--rounds", "2", "--epochs", "1", "--block-time", "0", "--dp-epsilon", "8",
                 "--workdir", str(tmp_path / "w"), "--json"], timeout=380)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    assert s["rounds_finalized"] == 2 and s["peer_failures"] == []
    dp = s["privacy"]
    assert dp["epsilon_budget"] == 8.0 and dp["delta"] == 1e-5 and dp["budget_spent"] == []
    per_round = [s["rounds"][i]["dp_epsilon"] for i in range(2)]
    assert all(set(p) == {"0", "1", "2"} for p in per_round)  # every peer, every round, from the chain
    for peer in "012":
        assert 0 < per_round[0][peer] < per_round[1][peer] <= 8.0
        assert per_round[1][peer] > 7.5  # the budget was computed to be spent over the task's 2 rounds
    log = (tmp_path / "w" / "logs" / "peer-0.log").read_text()
    assert '"dp_spent"' in log and len(list((tmp_path / "w" / "state").glob("*/privacy-*.json"))) == 3  # accounts kept on disk
    # experiment privacy's update inversion, on the same finished run: every member's round-1
    # update found through the restarted chain's public events, fetched from the store, attacked.
    from fedchain.node.tools.privacy import invert_published_updates

    inv = invert_published_updates(tmp_path / "w", matching_batch=2)
    assert inv["inversion_updates"] == 3 and [p["member"] for p in inv["inversion_per_member"]] == [0, 1, 2]
    assert inv["inversion_reconstructions"] > 0 and 0 <= inv["inversion_nn_match"] <= 1 and inv["matching_reconstructions"] == 6
    assert len({p["update"] for p in inv["inversion_per_member"]}) == 3


def test_privacy_plots_are_written(tmp_path):
    from fedchain.node.tools.privacy import plot_privacy, privacy_rows

    results = [dict(epsilon=e, epsilon_spent_max=None, delta=1e-5, accuracy=a, loss_auc=0.52, lira_auc=0.55, loss_advantage=0.05, lira_advantage=0.06,
                    chance_auc95=0.53, chance_advantage95=0.08) for e, a in ((math.inf, 0.9), (8, 0.88), (1, 0.3))]
    written = plot_privacy(results, tmp_path)
    assert [p.name for p in written] == ["accuracy-vs-epsilon.png", "attack-vs-epsilon.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    inverted = [r | dict(inversion_nn_match=m, inversion_psnr_mean=p, inversion_distinct=d, inversion_reconstructions=64,
                         inversion_nn_chance95=0.6225)
                for r, (m, p, d) in zip(results, ((0.7, 14.0, 5), (0.5, 6.0, 0), (0.5, 5.0, 0)))]
    (tmp_path / "inv").mkdir()
    written = plot_privacy(inverted, tmp_path / "inv")
    assert [p.name for p in written] == ["accuracy-vs-epsilon.png", "attack-vs-epsilon.png", "inversion-vs-epsilon.png"]
    assert privacy_rows(inverted)[0][-3:] == ["14.0 dB", "0.700 (0.623)", "5/64 (-)"] and privacy_rows(results)[0][-3:] == ["-", "-", "-"]
    assert privacy_rows(results)[0][8] == "-" and privacy_rows([results[1] | dict(loss_advantage_cv=0.01, lira_advantage_cv=-0.02)])[0][8] == "0.010/-0.020"
