"""Update inversion (issue #11, part 3(i)): the analytic first-layer attack and its metrics.

Fast unit tests only: the metrics on hand-made cases, the attack where it must succeed (one
example, one local step: the reconstruction is the input) and where it must fail (random int64
tensors, as a masked update looks: nearest-neighbour matches at chance). The attack on a real
network's update runs in ``fedchain experiment privacy``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedchain.node.errors import ArtifactInvalid, ConfigError
from fedchain.node.ml.data import Dataset
from fedchain.node.ml.models import init_state
from fedchain.node.ml.training import train_local
from fedchain.node.protocol.artifact import encode
from fedchain.node.protocol.fixedpoint import quantize
from fedchain.node.protocol.task import ModelSpec, TrainConfig
from fedchain.node.tools.inversion import (analytic_inversion, balanced, first_layer, gradient_matching, invert_artifact, nearest,
                                           nn_match_rate, psnr, reconstruction_metrics, update_tensors)

SPEC = ModelSpec(16, 3, (32,))


# ---------------------------------------------------------------------------- metrics
def test_psnr_matches_its_definition():
    ref = np.zeros((2, 4))
    x = np.array([[0.1, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]])
    out = psnr(x, ref, 1.0)
    assert out[0] == pytest.approx(20.0) and out[1] == math.inf  # MSE 0.01 at range 1: 20 dB
    assert psnr(x[:1], ref[:1], 2.0)[0] == pytest.approx(20.0 + 20 * math.log10(2))
    with pytest.raises(ValueError):
        psnr(x, ref[:1], 1.0)
    with pytest.raises(ValueError):
        psnr(x, ref, 0.0)


def test_nearest_and_the_match_rate():
    members, nonmembers = np.array([[0.0, 0.0], [10.0, 0.0]]), np.array([[0.0, 10.0], [10.0, 10.0]])
    x = np.array([[1.0, 1.0], [9.0, 2.0], [1.0, 9.0], [4.0, 4.0]])
    assert nearest(x, np.concatenate([members, nonmembers])).tolist() == [0, 1, 2, 0]
    assert nn_match_rate(x, members, nonmembers) == 0.75
    assert nn_match_rate(members, members, nonmembers) == 1.0 and nn_match_rate(nonmembers, members, nonmembers) == 0.0
    assert math.isnan(nn_match_rate(np.zeros((0, 2)), members, nonmembers))


def test_balanced_sets_have_one_size_and_keep_their_rows():
    a, b = np.arange(20).reshape(10, 2), np.arange(100, 106).reshape(3, 2)
    m, n = balanced(a, b, seed=1)
    assert len(m) == len(n) == 3 and n is b and all(any((row == r).all() for r in a) for row in m)


def test_reconstruction_metrics_count_distinct_recovered_members():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.uniform(0, 1, (50, 16)), rng.uniform(0, 1, (50, 16))
    # Three exact copies of member 4, a close one of member 7, one blend of everything, one non-member.
    x = np.stack([members[4], members[4], members[4], members[7] + 0.01, members.mean(0), nonmembers[0]])
    got = reconstruction_metrics(x, members, nonmembers, data_range=1.0)
    assert 4 / 6 <= got["nn_match"] <= 5 / 6  # the blend's nearest neighbour may be either
    assert got["distinct"] == 2 and got["distinct_nonmembers"] == 1  # members 4 and 7 (copies count once), non-member 0
    assert got["reconstructions"] == 6 and got["members"] == 50
    assert got["psnr_mean"] > 50  # exact copies count as 100 dB
    empty = reconstruction_metrics(np.zeros((0, 16)), members, nonmembers)
    assert empty["distinct"] == 0 and math.isnan(empty["nn_match"])


# ---------------------------------------------------------------------------- the attack
def test_the_ratio_skips_neurons_whose_bias_did_not_move():
    dw = np.array([[2.0, 4.0], [1.0, 1.0], [3.0, 3.0], [5.0, 5.0]])
    db = np.array([2.0, 0.0, 1e-12, -0.5])
    inv = analytic_inversion(dw, db, k=10)
    assert inv.neurons.tolist() == [0, 3]  # by |Δb|, the zero and the negligible one skipped
    assert np.allclose(inv.x, [[1.0, 2.0], [-10.0, -10.0]])
    assert analytic_inversion(dw, db, k=1).neurons.tolist() == [0]
    assert len(analytic_inversion(dw, np.zeros(4)).x) == 0
    with pytest.raises(ValueError):
        analytic_inversion(dw, db[:2])


def test_the_first_layer_must_be_fully_connected():
    assert first_layer(SPEC) == ("0.weight", "0.bias", 16)
    assert first_layer(ModelSpec((1, 4, 4), 3, (8,))) == ("1.weight", "1.bias", 16)  # images are flattened first
    with pytest.raises(ConfigError, match="fully connected first layer"):
        first_layer(ModelSpec((1, 8, 8), 3, arch="cnn"))


def test_one_example_one_step_is_recovered_exactly_float_and_fixed_point():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (1, 16)).astype(np.float32)
    base = init_state(SPEC, seed=0)
    delta, _ = train_local(SPEC, base, Dataset("one", x, np.array([1]), 3), TrainConfig(epochs=1, batch_size=1, lr=0.05), seed=0)
    inv = invert_artifact(encode(delta, {"kind": "update"}), SPEC, k=64)
    assert 0 < len(inv.x) <= 32  # every active ReLU neuron
    assert np.max(np.abs(inv.x - x)) < 1e-4
    nonmembers = rng.uniform(0, 1, (1, 16))
    got = reconstruction_metrics(inv.x, x, nonmembers, data_range=1.0)
    assert got["nn_match"] == 1.0 and got["distinct"] == 1 and got["psnr_mean"] > 60
    # The same update in fixed point (int64, q * 2**-28) still gives the input away.
    fixed = invert_artifact(encode({k: quantize(v) for k, v in delta.items()}, {"kind": "update"}), SPEC, k=64)
    big = np.abs(fixed.bias) > 1e-3  # rows whose bias is far above the 2**-28 resolution
    assert big.any() and np.max(np.abs(fixed.x[big] - x)) < 1e-3


def test_gradient_matching_recovers_one_example_from_one_step():
    x = np.random.default_rng(5).uniform(0, 1, (1, 16)).astype(np.float32)
    base = init_state(SPEC, seed=0)
    delta, _ = train_local(SPEC, base, Dataset("one", x, np.array([2]), 3), TrainConfig(epochs=1, batch_size=1, lr=0.05), seed=0)
    got = gradient_matching(SPEC, base, {k: v.numpy() for k, v in delta.items()}, batch=1, iterations=100, clip=(0.0, 1.0))
    assert got.shape == (1, 16) and psnr(got, x, 1.0)[0] > 30
    with pytest.raises(ValueError, match="zero"):
        gradient_matching(SPEC, base, {k: np.zeros(tuple(v.shape)) for k, v in delta.items()}, batch=1, iterations=1)


def test_random_int64_masked_updates_match_at_chance():
    rng = np.random.default_rng(4)
    shapes = {k: tuple(v.shape) for k, v in init_state(SPEC, seed=0).items()}
    masked = encode({k: torch.from_numpy(rng.integers(-(2**62), 2**62, size=s)) for k, s in shapes.items()}, {"kind": "update"})
    members, nonmembers = rng.uniform(0, 1, (200, 16)), rng.uniform(0, 1, (200, 16))
    inv = invert_artifact(masked, SPEC, k=32, clip=(0.0, 1.0))
    got = reconstruction_metrics(inv.x, members, nonmembers, data_range=1.0)
    assert got["reconstructions"] == 32
    assert 0.25 <= got["nn_match"] <= 0.75 and got["distinct"] == 0 == got["distinct_nonmembers"] and got["psnr_mean"] < 15


def test_hostile_bytes_are_refused_without_unpickling():
    with pytest.raises(ArtifactInvalid):
        update_tensors(b"\x80\x04K\x01." + b"\0" * 16, max_bytes=1 << 20)  # a pickle, not safetensors
    with pytest.raises(ArtifactInvalid, match="over the"):
        update_tensors(encode({"w": torch.zeros(4)}, {}), max_bytes=16)
    with pytest.raises(ArtifactInvalid, match="no first layer"):
        invert_artifact(encode({"w": torch.zeros(4)}, {}), SPEC)
