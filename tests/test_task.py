"""A task is pinned on chain by its digest: what it accepts, what it rejects, and that its bytes
read back to the same task."""
from __future__ import annotations

import json
import math

import pytest

from fedchain.node.errors import ConfigError
from fedchain.node.protocol.task import UINT32_MAX, ModelSpec, Task, TrainConfig

pytestmark = pytest.mark.timeout(60)

SPEC = ModelSpec(64, 10, (32,))


def _task(**overrides) -> Task:
    return Task(name="t", dataset="digits", model=SPEC, **overrides)


def _dict(**overrides) -> dict:
    d = _task().to_dict()
    d.update(overrides)
    return d


@pytest.mark.parametrize("field", ["rounds", "submit_blocks", "vote_blocks"])
@pytest.mark.parametrize("value", [1, 2, UINT32_MAX])
def test_rounds_and_windows_accept_1_to_uint32_max(field, value):
    assert getattr(_task(**{field: value}), field) == value


@pytest.mark.parametrize("field", ["rounds", "submit_blocks", "vote_blocks"])
@pytest.mark.parametrize("value", [0, -1, UINT32_MAX + 1, 1 << 64])
def test_rounds_and_windows_outside_uint32_are_rejected(field, value):
    with pytest.raises(ConfigError, match=f"between 1 and {UINT32_MAX}"):
        _task(**{field: value})


@pytest.mark.parametrize("value", [0, UINT32_MAX])
def test_reveal_window_may_be_zero_or_up_to_uint32_max(value):
    assert _task(reveal_blocks=value).reveal_blocks == value


@pytest.mark.parametrize("value", [-1, UINT32_MAX + 1])
def test_reveal_window_outside_uint32_is_rejected(value):
    with pytest.raises(ConfigError, match="reveal window"):
        _task(reveal_blocks=value)


@pytest.mark.parametrize("quorum", [5_000, 6_667, 10_000])
def test_quorum_in_basis_points_from_a_half_up_to_all(quorum):
    assert _task(quorum_bps=quorum).quorum_bps == quorum


@pytest.mark.parametrize("quorum", [0, -1, 1, 4_999, 10_001])
def test_quorum_below_a_half_or_above_all_is_rejected(quorum):
    with pytest.raises(ConfigError, match="quorum"):
        _task(quorum_bps=quorum)


@pytest.mark.parametrize("overrides", [{"sample_cap": 0}, {"max_update_bytes": 0}, {"max_update_bytes": -5}])
def test_sample_cap_and_update_limit_must_be_positive(overrides):
    with pytest.raises(ConfigError):
        _task(**overrides)


@pytest.mark.parametrize("epochs", [0, -1, 10_001])
def test_train_config_rejects_epochs_out_of_range(epochs):
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=epochs)


@pytest.mark.parametrize("lr", [0.0, -0.1, math.inf, math.nan])
def test_train_config_rejects_a_learning_rate_that_is_not_positive_and_finite(lr):
    with pytest.raises(ConfigError, match="learning rate"):
        TrainConfig(lr=lr)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, math.nan])
def test_train_config_rejects_momentum_outside_zero_to_one(momentum):
    with pytest.raises(ConfigError, match="momentum"):
        TrainConfig(momentum=momentum)


@pytest.mark.parametrize("batch", [0, (1 << 20) + 1])
def test_train_config_rejects_batch_sizes_out_of_range(batch):
    with pytest.raises(ConfigError, match="batch size"):
        TrainConfig(batch_size=batch)


def test_train_config_accepts_its_edges():
    cfg = TrainConfig(epochs=10_000, batch_size=1, lr=1e-9, momentum=0.0)
    assert (cfg.epochs, cfg.batch_size, cfg.momentum) == (10_000, 1, 0.0)


def test_model_spec_rejects_degenerate_sizes():
    # classes=1 is a regression head (one output); zero outputs is degenerate
    for bad in (dict(inputs=0, classes=10), dict(inputs=4, classes=0), dict(inputs=4, classes=3, hidden=(8, 0))):
        with pytest.raises(ConfigError):
            ModelSpec(**bad)
    with pytest.raises(ConfigError, match="architecture"):
        ModelSpec(4, 3, arch="")


def test_task_round_trips_through_its_canonical_bytes():
    task = Task(name="round trip", dataset="wine", model=ModelSpec(13, 3, (16, 8)),
                train=TrainConfig(epochs=3, batch_size=16, lr=0.01, momentum=0.5), rule="trimmed-mean",
                rule_params=(("beta", 0.1),), sample_cap=500, max_update_bytes=1 << 20, rounds=7, submit_blocks=30,
                vote_blocks=40, quorum_bps=5_001, reveal_blocks=9)
    data = task.to_bytes()
    assert Task.from_bytes(data) == task
    assert Task.from_bytes(data).to_bytes() == data


def test_task_bytes_are_canonical_json():
    data = _task().to_bytes()
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()


def test_model_spec_with_architecture_params_round_trips():
    spec = ModelSpec(8, 2, arch="cnn", params=(("channels", 4), ("kernel", 3)))
    task = Task(name="t", dataset="d", model=spec)
    back = Task.from_bytes(task.to_bytes())
    assert back.model == spec and back.model.options == {"channels": 4, "kernel": 3}


def test_missing_optional_fields_take_their_defaults():
    back = Task.from_dict({"name": "t", "dataset": "digits", "model": {"inputs": 64, "classes": 10}})
    assert back == Task(name="t", dataset="digits", model=ModelSpec(64, 10))


@pytest.mark.parametrize("data", [
    b"", b"not json", b"\xff\xfe", b"[1, 2]", b"null", b"42", b'"task"',
    b'{"dataset": "digits", "model": {"inputs": 4, "classes": 2}}',  # no name
    b'{"name": "t", "dataset": "digits"}',  # no model
    b'{"name": "t", "dataset": "digits", "model": "mlp"}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4}}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": "four", "classes": 2}}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2, "hidden": 8}}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "rounds": "many"}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "rounds": null}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "rounds": 0}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "train": {"epochs": "x"}}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "train": {"lr": -1}}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "train": [1]}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "rule_params": [1]}',
    b'{"name": "t", "dataset": "digits", "model": {"inputs": 4, "classes": 2}, "quorum_bps": 20000}',
])
def test_malformed_task_bytes_raise_config_error(data):
    with pytest.raises(ConfigError):
        Task.from_bytes(data)


def test_from_dict_rejects_out_of_range_values_with_config_error():
    with pytest.raises(ConfigError, match="between 1 and"):
        Task.from_dict(_dict(submit_blocks=UINT32_MAX + 1))


@pytest.mark.parametrize("field, value", [("rounds", 2.9), ("submit_blocks", True), ("quorum_bps", "6667"), ("sample_cap", 10.0)])
def test_task_description_numbers_must_be_integers_not_silently_truncated(field, value):
    d = _task().to_dict()
    d[field] = value
    with pytest.raises(ConfigError, match=field):
        Task.from_dict(d)
