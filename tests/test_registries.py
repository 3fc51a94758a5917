"""The two registries a task names things from: aggregation rules (by name, with a stable on-chain
id) and model architectures (by name, with the artifact schema taken from the real state_dict)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedchain.node.aggregation import RULE_IDS, RULES, Contribution, make_rule
from fedchain.node.errors import ConfigError
from fedchain.node.ml import models
from fedchain.node.ml.models import MODELS, build_model, init_state, register_model, schema_of
from fedchain.node.protocol.artifact import decode, encode, validate
from fedchain.node.protocol.task import ModelSpec

pytestmark = pytest.mark.timeout(60)

# Deployed contracts record these ids: a rule may be added with a new id, never renumbered.
PINNED_IDS = {"fedavg": 0, "median": 1, "trimmed-mean": 2, "multi-krum": 3, "trust-cosine": 4, "fedavg-plain": 5}


# --------------------------------------------------------------------------- aggregation rules


def test_rule_ids_are_pinned():
    assert {name: RULE_IDS[name] for name in PINNED_IDS} == PINNED_IDS


def test_rule_ids_are_unique_and_every_rule_is_registered_under_its_own_name():
    assert len(set(RULE_IDS.values())) == len(RULE_IDS)
    for name, cls in RULES.items():
        assert cls.name == name and RULE_IDS[name] == cls.rule_id


@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_builds_with_defaults_and_its_params_rebuild_it(name):
    rule = make_rule(name)
    again = make_rule(name, rule.params())
    assert type(again) is RULES[name] and again.params() == rule.params()


@pytest.mark.parametrize("name, params, expected", [
    ("fedavg", {"clip_norm": 2.5}, {"clip_norm": 2.5}),
    ("fedavg", {"clip_norm": None}, {}),
    ("trimmed-mean", {"beta": 0.1}, {"beta": 0.1}),
    ("trimmed-mean", {"beta": 0}, {"beta": 0.0}),
    ("multi-krum", {"num_malicious_clients": 1, "num_clients_to_keep": 3}, {"num_malicious_clients": 1, "num_clients_to_keep": 3}),
    ("multi-krum", {"num_malicious_clients": 0}, {"num_malicious_clients": 0, "outlier_ratio": 8.0}),
    ("multi-krum", {}, {"outlier_ratio": 8.0}),
    ("multi-krum", {"outlier_ratio": 3}, {"outlier_ratio": 3.0}),
    ("fedavg", {"exclude_opposed": False}, {"exclude_opposed": False}),
])
def test_make_rule_passes_named_params(name, params, expected):
    rule = make_rule(name, params)
    assert rule.params() == expected
    assert repr(rule).startswith(type(rule).__name__ + "(")


def test_make_rule_rejects_an_unknown_rule_and_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown aggregation rule 'krum'.*fedavg"):
        make_rule("krum")


@pytest.mark.parametrize("name, params", [
    ("fedavg", {"clip": 1.0}),  # not a parameter of the rule
    ("median", {"beta": 0.1}),  # median takes none
    ("fedavg", {"clip_norm": 0.0}),
    ("fedavg", {"clip_norm": -1.0}),
    ("fedavg", {"clip_norm": float("inf")}),
    ("fedavg", {"clip_norm": float("nan")}),
    ("fedavg", {"clip_norm": 1e9}),  # beyond the fixed-point range
    ("trimmed-mean", {"beta": 0.5}),
    ("trimmed-mean", {"beta": -0.1}),
    ("trimmed-mean", {"beta": "0.1"}),
    ("multi-krum", {"num_malicious_clients": -1}),
    ("multi-krum", {"num_clients_to_keep": 0}),
    ("multi-krum", {"num_clients_to_keep": 2.0}),
    ("multi-krum", {"num_malicious_clients": True}),
])
def test_make_rule_rejects_bad_params_with_config_error(name, params):
    with pytest.raises(ConfigError, match=name):
        make_rule(name, params)


# --------------------------------------------------------------------------- model registry


class _NormNet(nn.Module):
    """Linear -> BatchNorm1d -> Linear: the BatchNorm layer carries an int64 num_batches_tracked."""

    def __init__(self, inputs: int, classes: int, *, width: int = 6):
        super().__init__()
        self.fc = nn.Linear(inputs, width)
        self.bn = nn.BatchNorm1d(width)
        self.out = nn.Linear(width, classes)

    def forward(self, x):
        return self.out(torch.relu(self.bn(self.fc(x))))


@pytest.fixture
def normnet():
    """Registers "normnet" for one test only; the registry is global state."""
    register_model("normnet", _NormNet)
    yield ModelSpec(5, 3, arch="normnet", params=(("width", 6),))
    MODELS.pop("normnet", None)


def test_mlp_is_registered_and_its_schema_is_all_float32():
    assert "mlp" in MODELS
    schema = schema_of(ModelSpec(4, 3, (8,)))
    assert schema == {"0.weight": ((8, 4), "F32"), "0.bias": ((8,), "F32"), "2.weight": ((3, 8), "F32"), "2.bias": ((3,), "F32")}


def test_schema_of_a_batchnorm_model_includes_its_int64_buffer(normnet):
    schema = schema_of(normnet)
    assert schema["bn.num_batches_tracked"] == ((), "I64")
    assert schema["bn.running_mean"] == ((6,), "F32") and schema["bn.running_var"] == ((6,), "F32")
    assert schema["fc.weight"] == ((6, 5), "F32")
    assert set(schema) == set(build_model(normnet).state_dict())


def test_init_state_is_reproducible_and_keeps_dtypes(normnet):
    a, b = init_state(normnet, seed=1), init_state(normnet, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fc.weight"], init_state(normnet, seed=2)["fc.weight"])
    assert a["bn.num_batches_tracked"].dtype == torch.int64


def test_register_model_rejects_an_unknown_initialization():
    with pytest.raises(ConfigError, match="initialization"):
        register_model("never", _NormNet, init="xavier")
    assert "never" not in MODELS


def test_an_unknown_architecture_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model architecture 'transformer'"):
        schema_of(ModelSpec(4, 3, arch="transformer"))


def test_builder_errors_become_config_errors(normnet):
    bad = ModelSpec(5, 3, arch="normnet", params=(("depth", 3),))  # _NormNet takes no depth
    with pytest.raises(ConfigError, match="cannot build model 'normnet'"):
        schema_of(bad)


def test_a_model_with_an_unsupported_dtype_is_rejected(monkeypatch):
    class Half(nn.Module):
        def __init__(self, inputs, classes):
            super().__init__()
            self.fc = nn.Linear(inputs, classes).to(torch.float16)

    monkeypatch.setitem(MODELS, "half", models.ModelEntry(Half))
    with pytest.raises(ConfigError, match="float32 and int64"):
        schema_of(ModelSpec(4, 3, arch="half"))


def _contributions(base: dict[str, torch.Tensor], steps: list[int]) -> list[Contribution]:
    rng = np.random.default_rng(5)
    out = []
    for member, step in enumerate(steps):
        delta = {k: torch.from_numpy(rng.normal(0, 0.01, tuple(v.shape)).astype(np.float32)) for k, v in base.items()
                 if v.is_floating_point()}
        delta["bn.num_batches_tracked"] = torch.tensor(step, dtype=torch.int64)
        out.append(Contribution(member, f"cid{member}", delta, samples=40 + member, reputation=1000))
    return out


@pytest.mark.parametrize("rule", ["fedavg", "median", "fedavg-plain"])
def test_aggregating_batchnorm_updates_keeps_the_int64_buffer_int64(normnet, rule):
    base = init_state(normnet, seed=0)
    base["bn.num_batches_tracked"] = torch.tensor(10, dtype=torch.int64)
    new, included = make_rule(rule).aggregate(base, _contributions(base, [3, 7, 5, 4]), sample_cap=100)
    assert len(included) == 4
    assert new["bn.num_batches_tracked"].dtype == torch.int64
    assert int(new["bn.num_batches_tracked"]) == 10 + 4  # base + lower median of the steps 3, 4, 5, 7
    assert all(new[k].dtype == torch.float32 for k in new if k != "bn.num_batches_tracked")
    # and the result is a valid model artifact for the schema
    art = validate(decode(encode(new, {"kind": "model"}), max_bytes=1 << 20), schema_of(normnet), expect={"kind": "model"})
    assert art.tensors["bn.num_batches_tracked"].dtype == torch.int64
