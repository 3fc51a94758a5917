"""Fixed point: the one place floats become the integers every peer must agree on, and back."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from fedchain.node.protocol.fixedpoint import (
    FRAC_BITS, LIMIT, WEIGHT_BITS, clip_to_norm, dequantize, exact_sq_norm, normalized_weights, quantize,
    state_to_vector, vector_to_state,
)

pytestmark = pytest.mark.timeout(60)

ULP = 2.0**-FRAC_BITS  # the fixed-point resolution


def _q(*values: float) -> list[int]:
    return quantize(torch.tensor(values, dtype=torch.float64)).tolist()


def test_quantize_rounds_halves_to_even():
    halves = [(k + 0.5) * ULP for k in range(-4, 4)]  # exact in float64
    assert _q(*halves) == [-4, -2, -2, 0, 0, 2, 2, 4]


def test_quantize_rounds_to_nearest_off_the_halves():
    assert _q(0.49 * ULP, 0.51 * ULP, -0.51 * ULP, 2.75 * ULP) == [0, 1, -1, 3]


def test_quantize_clamps_at_plus_minus_limit():
    edge = LIMIT * ULP  # 2**14, the largest magnitude that is representable
    assert _q(edge, -edge, edge * 2, -edge * 2, 1e30, float("inf"), float("-inf")) == [LIMIT, -LIMIT, LIMIT, -LIMIT, LIMIT, LIMIT, -LIMIT]
    assert _q(edge - ULP) == [LIMIT - 1]


def test_quantize_returns_int64_and_leaves_its_input_alone():
    t = torch.tensor([0.25, -1.5, 3.0], dtype=torch.float64)
    before = t.clone()
    q = quantize(t)
    assert q.dtype == torch.int64 and q.tolist() == [1 << (FRAC_BITS - 2), -3 << (FRAC_BITS - 1), 3 << FRAC_BITS]
    assert torch.equal(t, before)


def test_quantize_error_is_at_most_half_a_step():
    x = np.random.default_rng(7).normal(0, 0.1, 10_000).astype(np.float32)
    q = quantize(torch.from_numpy(x)).numpy()
    exact = x.astype(np.float64) * (1 << FRAC_BITS)  # exact: a float32 times a power of two
    assert np.abs(q - exact).max() <= 0.5


def test_float32_values_on_the_grid_round_trip_exactly():
    # float32 values with |x| >= 2**-5 have a spacing of at least 2**-28: they all lie on the grid.
    rng = np.random.default_rng(1)
    x = (rng.uniform(2.0**-5, 2.0**14, 5_000) * rng.choice([-1, 1], 5_000)).astype(np.float32)
    t = torch.from_numpy(x)
    assert torch.equal(dequantize(quantize(t)), t)


def test_integers_that_float32_holds_round_trip_exactly():
    q = torch.tensor([0, 1, -1, 12345, -(1 << 24), 1 << 24, LIMIT, -LIMIT], dtype=torch.int64)
    back = dequantize(q)
    assert back.dtype == torch.float32
    assert torch.equal(quantize(back), q)


def test_dequantize_rounds_once_half_to_even():
    # 2**24 + 1 needs 25 significant bits: it lies halfway between two float32 values, and the even
    # one (2**24) wins; 2**24 + 3 goes up to 2**24 + 4 for the same reason.
    q = torch.tensor([(1 << 24) + 1, (1 << 24) + 3, -((1 << 24) + 1)], dtype=torch.int64)
    expected = [float(Fraction(v, 1 << FRAC_BITS)) for v in (1 << 24, (1 << 24) + 4, -(1 << 24))]
    assert dequantize(q).tolist() == expected


def test_exact_sq_norm_equals_python_integers_at_the_limit():
    rng = np.random.default_rng(3)
    values = rng.integers(-LIMIT, LIMIT, 300_000, endpoint=True)  # crosses a chunk boundary
    values[:3] = [LIMIT, -LIMIT, LIMIT]
    q = torch.from_numpy(values)
    assert exact_sq_norm(q) == sum(int(v) * int(v) for v in values.tolist())


def test_normalized_weights_are_floored_fractions_that_sum_to_at_most_one():
    w = normalized_weights([1, 1, 1])
    assert w.tolist() == [(1 << WEIGHT_BITS) // 3] * 3
    assert int(w.sum()) <= 1 << WEIGHT_BITS
    assert normalized_weights([0, 5]).tolist() == [0, 1 << WEIGHT_BITS]
    with pytest.raises(ValueError):
        normalized_weights([0, 0])


def test_clip_to_norm_never_exceeds_the_bound_and_keeps_short_vectors():
    q = torch.tensor([3 << 20, 4 << 20], dtype=torch.int64)  # norm 5 * 2**20
    sq = exact_sq_norm(q)
    assert torch.equal(clip_to_norm(q, sq, sq), q)
    bound_sq = (1 << 20) ** 2  # norm 2**20: a fifth of q's
    clipped = clip_to_norm(q, sq, bound_sq)
    assert exact_sq_norm(clipped) <= bound_sq
    assert clipped.tolist() == [(3 << 20) // 5, (4 << 20) // 5]


def test_state_vector_round_trip_uses_sorted_names():
    state = {"b": torch.tensor([1.0, 2.0]), "a": torch.tensor([[3.0], [4.0]])}
    vec = state_to_vector(state)
    assert vec.tolist() == [3.0, 4.0, 1.0, 2.0]
    back = vector_to_state(vec, state)
    assert all(torch.equal(back[k], state[k]) for k in state)
