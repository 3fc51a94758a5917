"""A rule and its named parameters are part of the task: pinned (defaults resolved) in the task
description whose digest goes on chain, and used by every peer that reads the task back."""
from __future__ import annotations

import pytest
import torch

from fedchain.node.aggregation import Contribution, make_rule, pin_rule, rule_of
from fedchain.node.errors import ConfigError
from fedchain.node.protocol.task import ModelSpec, Task
from fedchain.node.tools.operations import DeployOptions, build_task

MEMBER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def _task(rule: str, **params) -> Task:
    return Task(name="t", dataset="digits", model=ModelSpec(4, 2, (3,)), rule=rule, rule_params=tuple(sorted(params.items())))


def test_deploy_pins_the_resolved_parameters_in_the_task_bytes():
    task, _ = build_task(DeployOptions(rpc="http://127.0.0.1:8545", members=MEMBER, rule="trimmed-mean"))
    assert task.to_dict()["rule_params"] == {"beta": 0.2}
    again = Task.from_bytes(task.to_bytes())
    assert again == task and rule_of(again).beta == 0.2


def test_the_default_rule_keeps_the_task_bytes_of_earlier_versions():
    task, _ = build_task(DeployOptions(rpc="http://127.0.0.1:8545", members=MEMBER))
    assert "rule_params" not in task.to_dict()  # fedavg with the median clip has no parameters to pin


def test_parameters_change_the_aggregate():
    base = {"w": torch.zeros(7)}
    contributions = [Contribution(i, f"c{i}", {"w": torch.full((7,), float(i + 1))}, 10, 1000) for i in range(5)]
    light, _ = make_rule("trimmed-mean", {"beta": 0.0}).aggregate(base, contributions, sample_cap=10)
    heavy, _ = make_rule("trimmed-mean", {"beta": 0.4}).aggregate(base, contributions, sample_cap=10)
    assert light["w"][0].item() == pytest.approx(3.0) and heavy["w"][0].item() == pytest.approx(3.0)
    skewed = contributions[:4] + [Contribution(4, "c4", {"w": torch.full((7,), 100.0)}, 10, 1000)]
    light, _ = make_rule("trimmed-mean", {"beta": 0.0}).aggregate(base, skewed, sample_cap=10)
    heavy, _ = make_rule("trimmed-mean", {"beta": 0.4}).aggregate(base, skewed, sample_cap=10)
    assert light["w"][0].item() > 20 and heavy["w"][0].item() == pytest.approx(3.0)


def test_multi_krum_takes_flowers_parameter_names():
    rule = pin_rule(_task("multi-krum", num_malicious_clients=1, num_clients_to_keep=2))
    assert dict(rule.rule_params) == {"num_malicious_clients": 1, "num_clients_to_keep": 2}
    assert repr(rule_of(rule)) == "MultiKrum(num_malicious_clients=1, num_clients_to_keep=2)"


@pytest.mark.parametrize("rule, params, needle", [
    ("median", {"beta": 0.1}, "bad rule parameters"),
    ("trimmed-mean", {"beta": 0.5}, "beta"),
    ("multi-krum", {"num_malicious_clients": -1}, "num_malicious_clients"),
    ("fedavg", {"clip_norm": float("nan")}, "clip_norm"),
    ("nope", {}, "unknown aggregation rule"),
])
def test_bad_parameters_are_refused_at_deploy(rule, params, needle):
    with pytest.raises(ConfigError, match=needle):
        pin_rule(_task(rule, **params))
