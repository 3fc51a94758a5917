"""Federated evaluation: the integer form peers publish, its strict validation, the weighting
that combines it, the metrics themselves against scikit-learn, the gauge, and the CLI's help."""
from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import click
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from fedchain.node.errors import ArtifactInvalid
from fedchain.node.ml.evaluation import classification_counts, evaluate_samples, roc_auc_twice_u
from fedchain.node.protocol.artifact import encode
from fedchain.node.protocol.evaluation import (
    Evaluation, evaluation_metadata, federated_metric, mse_to_micro, parse_evaluation, to_ppm,
)
from fedchain.node.protocol.round import Contribution, RoundInputs, update_metadata, validate_update
from fedchain.node.protocol.task import ModelSpec

PEER = "0xabc0000000000000000000000000000000000001"
SCHEMA = {"w": ((3,), "F32")}


def _update(round_=3, **eval_fields) -> bytes:
    meta = update_metadata("QmTask", round_, "QmBase", 10, PEER) | eval_fields
    return encode({"w": torch.zeros(3)}, meta)


def _validate(data: bytes, round_=3, kind="classification", classes=2):
    return validate_update(data, SCHEMA, max_bytes=1 << 20, task_cid="QmTask", round_=round_, base_cid="QmBase",
                           submitter=PEER, kind=kind, classes=classes)


def test_the_integer_form_round_trips_through_an_artifact():
    for ev, kind, classes in [
        (Evaluation(2, 57, correct=50, balanced_accuracy_ppm=871_234, roc_auc_ppm=999_999), "classification", 2),
        (Evaluation(0, 9, correct=0, balanced_accuracy_ppm=0), "classification", 10),
        (Evaluation(1, 4_294_967_295, mse_micro=10**18 - 1), "regression", 1),
    ]:
        data = encode({"w": torch.zeros(3)}, update_metadata("QmTask", 3, "QmBase", 10, PEER, ev))
        art, samples = _validate(data, kind=kind, classes=classes)
        assert samples == 10
        assert parse_evaluation(art.metadata, round_=3, kind=kind, classes=classes) == ev
    assert parse_evaluation(_validate(_update()).__getitem__(0).metadata, round_=3, kind="classification", classes=2) is None


GOOD = {"eval_round": "2", "eval_samples": "10", "eval_correct": "7", "eval_balanced_accuracy_ppm": "650000"}


@pytest.mark.parametrize("fields, why", [
    (GOOD | {"eval_correct": "11"}, "more correct than samples"),
    (GOOD | {"eval_correct": "-1"}, "negative"),
    (GOOD | {"eval_correct": "07"}, "leading zero"),
    (GOOD | {"eval_correct": "7.0"}, "not an integer"),
    (GOOD | {"eval_correct": " 7"}, "whitespace"),
    (GOOD | {"eval_correct": "1" + "0" * 30}, "too many digits"),
    (GOOD | {"eval_balanced_accuracy_ppm": "1000001"}, "over 10**6"),
    (GOOD | {"eval_samples": "0"}, "no samples"),
    (GOOD | {"eval_samples": str(2**32)}, "too many samples"),
    (GOOD | {"eval_round": "3"}, "evaluates the round's own model"),
    (GOOD | {"eval_round": "99"}, "a future round"),
    (GOOD | {"eval_note": "x"}, "unknown field"),
    ({k: v for k, v in GOOD.items() if k != "eval_correct"}, "incomplete"),
    (GOOD | {"eval_mse_micro": "5"}, "regression field in a classification task"),
    (GOOD | {"eval_roc_auc_ppm": "1000001"}, "AUC over 10**6"),
])
def test_malformed_evaluations_make_the_update_invalid(fields, why):
    with pytest.raises(ArtifactInvalid, match="metadata"):
        _validate(_update(**fields))


def test_auc_only_for_binary_tasks_and_fields_only_of_the_task_kind():
    _validate(_update(**GOOD, eval_roc_auc_ppm="700000"), classes=2)
    with pytest.raises(ArtifactInvalid):
        _validate(_update(**GOOD, eval_roc_auc_ppm="700000"), classes=10)
    with pytest.raises(ArtifactInvalid):
        _validate(_update(**GOOD), kind="regression", classes=1)
    with pytest.raises(ArtifactInvalid):
        _validate(_update(round_=1, **(GOOD | {"eval_round": "1"})), round_=1)


def test_weighting_is_pooled_accuracy_and_the_cap_bounds_a_liar():
    a, b = Evaluation(1, 30, correct=27, balanced_accuracy_ppm=900_000), Evaluation(1, 10, correct=5, balanced_accuracy_ppm=500_000)
    fed = federated_metric([a, b])
    assert fed["accuracy"] == Fraction(32, 40) and fed["samples"] == 40 and fed["peers"] == 2
    assert fed["balanced_accuracy"] == Fraction(30 * 900_000 + 10 * 500_000, 40 * 10**6)
    assert "roc_auc" not in fed
    liar = Evaluation(1, 10**9, correct=0, balanced_accuracy_ppm=0)
    capped = federated_metric([a, b, liar], cap=40)
    assert capped["accuracy"] == Fraction(27 + 5, 80)  # the liar weighs 40, not 10**9
    reg = federated_metric([Evaluation(1, 3, mse_micro=2_000_000), Evaluation(1, 1, mse_micro=6_000_000)])
    assert reg["mse"] == 3 and set(reg) == {"samples", "peers", "mse"}


def test_rounding_and_mse_encoding():
    assert to_ppm(1, 3) == 333_333 and to_ppm(2, 3) == 666_667 and to_ppm(1, 2_000_000) == 1  # half up
    assert mse_to_micro(0.25) == 250_000 and mse_to_micro(1e30) == 10**18 - 1
    with pytest.raises(ValueError):
        mse_to_micro(math.nan)


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    correct, bal = classification_counts(pred, y)
    assert correct == int((pred == y).sum())
    assert bal == round(balanced_accuracy_score(y, pred) * 10**6)
    yb = rng.integers(0, 2, 101)
    score = np.round(rng.random(101) + 0.3 * yb, 1)  # rounded: ties must count one half
    assert to_ppm(*roc_auc_twice_u(score, yb)) == round(roc_auc_score(yb, score) * 10**6)
    assert roc_auc_twice_u(score, np.zeros(101, dtype=np.int64)) is None


def test_evaluate_samples_publishes_the_right_fields():
    from fedchain.node.ml.models import build_model

    spec = ModelSpec(4, 2, (8,))
    state = build_model(spec).state_dict()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 4)).astype(np.float32), rng.integers(0, 2, 30)
    ev = evaluate_samples(spec, state, x, y, kind="classification", round_=2)
    assert ev.round == 2 and ev.samples == 30 and ev.roc_auc_ppm is not None and 0 <= ev.correct <= 30
    assert set(evaluation_metadata(ev)) == {"eval_round", "eval_samples", "eval_correct", "eval_balanced_accuracy_ppm",
                                            "eval_roc_auc_ppm"}


def _samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_federated_metric_gauge():
    from fedchain.node.peer.evaluation import HoldoutEvaluation
    from fedchain.node.peer.observability import Metrics, describe_peer_metrics

    metrics = Metrics()
    describe_peer_metrics(metrics)
    before = _samples(metrics.render())
    for name in ("accuracy", "balanced_accuracy", "roc_auc", "mse"):  # every label exposed from the start, unknown
        assert math.isnan(before[("fedchain_federated_metric", (("metric", name),))])
    assert before[("fedchain_federated_metric_round", ())] == -1
    assert before[("fedchain_holdout_evaluations_total", ())] == 0
    logged = []
    peer = SimpleNamespace(data=SimpleNamespace(x_holdout=None, y_holdout=None), metrics=metrics,
                           log=lambda *a, **k: logged.append(a[0]), task=SimpleNamespace(sample_cap=1000))
    ev = HoldoutEvaluation(peer)  # a stand-in peer: only what the evaluation reads
    assert logged == ["no_holdout"] and ev.of_base(2, "Qm", {}) is None
    inputs = RoundInputs(3, "QmBase", [
        Contribution(0, "a", {}, 10, 1000, evaluation=Evaluation(2, 30, correct=27, balanced_accuracy_ppm=900_000)),
        Contribution(1, "b", {}, 10, 1000, evaluation=Evaluation(2, 10, correct=5, balanced_accuracy_ppm=500_000)),
        Contribution(2, "c", {}, 10, 1000, evaluation=Evaluation(1, 10, correct=0, balanced_accuracy_ppm=0)),  # older model
        Contribution(3, "d", {}, 10, 1000),
    ])
    ev.observe(inputs)
    after = _samples(metrics.render())
    assert after[("fedchain_federated_metric", (("metric", "accuracy"),))] == pytest.approx(0.8)
    assert after[("fedchain_federated_metric", (("metric", "balanced_accuracy"),))] == pytest.approx(0.8)
    assert math.isnan(after[("fedchain_federated_metric", (("metric", "mse"),))])
    assert after[("fedchain_federated_metric_round", ())] == 2


def _options(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, (*path, name))


def test_every_option_of_every_command_has_help_and_shows_its_environment_variable():
    from click.testing import CliRunner

    from fedchain.cli.main import cli

    runner = CliRunner()
    commands = list(_options(cli))
    assert len(commands) > 20
    for path, command in commands:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"fedchain {' '.join(path)} {param.opts[0]} has no help text"
                if param.envvar:
                    assert param.envvar in result.output, f"fedchain {' '.join(path)} --help hides {param.envvar}"
                if isinstance(param.type, click.Choice):
                    assert all(c in result.output for c in param.type.choices), (path, param.opts)


def test_deploy_and_simulate_agree_on_training_defaults():
    from fedchain.cli.main import cli
    from fedchain.node.tools.operations import DeployOptions
    from fedchain.node.tools.simulate import SimulationConfig

    def defaults(cmd):
        return {p.name: p.default for p in cli.commands[cmd].params}

    dep, sim = defaults("deploy"), defaults("simulate")
    for name in ("epochs", "lr", "rounds", "rule", "optimizer", "seed", "model"):
        assert dep[name] == sim[name], name
    assert DeployOptions(rpc="", members="").epochs == dep["epochs"] == SimulationConfig().epochs
