"""Masking below 64 bits (Kairouz, Liu & Steinke, ICML 2021): the exact integer Walsh-Hadamard
rotation, the scale, the wrap-around, the masked artifact's narrow dtypes, and a bucket's sum
masked modulo 2^16 coming back within the rounding error. Pure functions, no chain."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from fedchain.node.errors import ArtifactInvalid, ConfigError
from fedchain.node.protocol.artifact import decode, encode
from fedchain.node.protocol.secure import masked_metadata, masked_schema, masked_tensors, masked_vector, validate_masked
from fedchain.node.protocol.task import SecureAggregation
from fedchain.node.secagg import keys, mask, mask_private, round_seeds, unmask_sum
from fedchain.node.secagg.accountant import round_rho
from fedchain.node.secagg.noise import RandomSource
from fedchain.node.secagg.quantize import bucket_noise_plan, centre, decode_sum, encode_update, plan_codec, wrap
from fedchain.node.secagg.rotation import hadamard, padded_length, rotate, rotation_seed, rotation_signs, unrotate

pytestmark = pytest.mark.timeout(60)

TASK = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
F = 1 << 28


def _clipped(rng: np.random.Generator, n: int, clip: float) -> np.ndarray:
    v = rng.standard_normal(n)
    return np.round(v / np.linalg.norm(v) * clip * F * rng.uniform(0.3, 1.0)).astype(np.int64)


def test_hadamard_matches_the_sylvester_matrix_and_is_its_own_inverse_up_to_p():
    h = np.array([[1]], dtype=np.int64)
    while h.shape[0] < 16:
        h = np.block([[h, h], [h, -h]])
    x = np.random.default_rng(0).integers(-1000, 1000, 16)
    assert (hadamard(x) == h @ x).all()
    assert (hadamard(hadamard(x)) == 16 * x).all()
    signs = rotation_signs(rotation_seed(TASK, 1), 16)
    assert (unrotate(rotate(x[:11], signs), signs)[:11] == 16 * x[:11]).all()
    with pytest.raises(ValueError):
        hadamard(np.zeros(12, dtype=np.int64))


def test_rotation_signs_are_public_per_round_and_balanced():
    a, b = rotation_signs(rotation_seed(TASK, 1), 4096), rotation_signs(rotation_seed(TASK, 2), 4096)
    assert set(np.unique(a)) == {-1, 1} and abs(int(a.sum())) < 300
    assert (a == rotation_signs(rotation_seed(TASK, 1), 4096)).all() and (a != b).any()
    assert padded_length(4810) == 8192 and padded_length(8192) == 8192 and padded_length(1) == 1


def test_the_rotation_flattens_a_spiky_vector():
    x = np.zeros(4810, dtype=np.int64)
    x[7] = 1 << 30  # all the norm in one coordinate
    r = rotate(x, rotation_signs(rotation_seed(TASK, 1), 8192))
    assert np.abs(r).max() == 1 << 30  # every coordinate is +- the norm / sqrt(P) times sqrt(P)
    assert float(np.linalg.norm(r.astype(float))) == pytest.approx(math.sqrt(8192) * (1 << 30))


def test_the_scale_makes_headroom_for_the_bucket_sum():
    c = plan_codec(bits=16, length=4810, members=10, clip=1.0)
    # 6 sigma of a coordinate of the sum of 10 aligned clipped updates fit in 15 bits, one step coarser would not
    assert 6 * 10 * F <= (1 << 15) << c.shift < 2 * 6 * 10 * F
    assert c.padded == 8192 and c.plan is None
    assert plan_codec(bits=32, length=4810, members=10, clip=1.0).shift == c.shift - 16
    with pytest.raises(ValueError):
        plan_codec(bits=64, length=10, members=2, clip=1.0)


@pytest.mark.parametrize("bits", [16, 32])
def test_a_bucket_masked_modulo_2_to_the_bits_unmasks_to_the_sum_within_the_rounding(bits):
    rng = np.random.default_rng(bits)
    n, members, clip = 1000, 5, 1.0
    codec = plan_codec(bits=bits, length=n, members=members, clip=clip)
    q = {i: _clipped(rng, n, clip) for i in range(members)}
    seeds = {i: round_seeds(bytes([i + 1]) * 32, CONTRACT, 4) for i in range(members)}
    publics = {i: keys.public_key(mask_private(seeds[i][0])) for i in range(members)}
    arts = {}
    for i in range(members):
        v = encode_update(q[i], codec, task=TASK, round_=4)
        y = mask(v, me=i, mask_private=mask_private(seeds[i][0]), self_seed=seeds[i][1],
                 peers={j: publics[j] for j in range(members) if j != i}, task=TASK, round_=4)
        tensors = masked_tensors(y, {"w": torch.zeros(n)}, bits)
        assert tensors["masked"].dtype == (torch.int16 if bits == 16 else torch.int32) and tensors["masked"].numel() == 1024
        arts[i] = decode(encode(tensors, masked_metadata(TASK, 4, "base", f"p{i}")), max_bytes=1 << 20)
    # member 4 drops out: its mask seed is revealed instead
    survivors = [0, 1, 2, 3]
    total = unmask_sum({i: masked_vector(arts[i]).numpy().view(np.uint64) for i in survivors},
                       self_seeds={i: seeds[i][1] for i in survivors}, dropped={4: seeds[4][0]}, mask_publics=publics,
                       task=TASK, round_=4)
    got = decode_sum(total, codec, task=TASK, round_=4)
    want = sum(q[i] for i in survivors)
    err = np.linalg.norm((got - want).astype(float))
    # deterministic rounding: at most sqrt(P)/2 per member in the scaled domain, times 2^s / sqrt(P) back
    assert err <= len(survivors) * (1 << codec.shift) / 2 + 1
    assert err / np.linalg.norm(want.astype(float)) < (1e-3 if bits == 16 else 1e-7)


def test_a_sum_beyond_the_range_wraps_modularly():
    assert (centre(np.array([0, 1, 32767, 32768, 65535, -1, 65536 + 5], dtype=np.int64), 16)
            == [0, 1, 32767, -32768, -1, -1, 5]).all()
    assert wrap(np.array([1 << 40 | 7], dtype=np.uint64), 16).dtype == np.int16
    codec = plan_codec(bits=16, length=8, members=1, clip=1.0)
    q = np.zeros(8, dtype=np.int64)
    q[0] = 1 << 40  # far beyond the clip: the scaled coordinates wrap
    v = encode_update(q, codec, task=TASK, round_=1)
    back = decode_sum(v, codec, task=TASK, round_=1)
    assert abs(int(back[0]) - (1 << 40)) > 1 << 30


def test_noise_lives_in_the_scaled_domain_and_the_accountant_charges_the_rotated_sensitivity():
    sa = SecureAggregation(threshold=3, clip=1.0, noise_multiplier=1.0, bits=16)
    plan, dim = bucket_noise_plan(sa, members=4, dim=4810)
    codec = plan_codec(bits=16, length=4810, members=4, clip=1.0, noise_multiplier=1.0)
    assert dim == 8192 and plan == codec.plan and plan.step == 1
    clip_term = math.sqrt(8192) * F / (1 << codec.shift)
    assert plan.sensitivity == pytest.approx(clip_term + math.sqrt(8192) / 2)
    assert plan.member_sigma_sq >= Fraction(clip_term**2 / 4) * (1 - 1e-12)  # sum of 4: std = z * clip term
    # the bucket's noise std fits HEADROOM times in the 16-bit range
    assert 6 * math.sqrt(4 * float(plan.member_sigma_sq)) <= 1 << 15
    rho16 = round_rho(plan, 4, dim)
    plan64, dim64 = bucket_noise_plan(SecureAggregation(threshold=3, clip=1.0, noise_multiplier=1.0), members=4, dim=4810)
    assert dim64 == 4810 and rho16 == pytest.approx(round_rho(plan64, 4, dim64), rel=0.1)  # same privacy, give or take rounding
    v = encode_update(np.zeros(4810, dtype=np.int64), codec, task=TASK, round_=1, rng=RandomSource.seeded(b"x"))
    assert float(np.std(v)) == pytest.approx(math.sqrt(float(plan.member_sigma_sq)), rel=0.05)


def test_the_bits_are_pinned_with_the_task_and_64_keeps_the_old_description():
    sa = SecureAggregation(threshold=3)
    assert "bits" not in sa.to_dict() and SecureAggregation.from_dict(sa.to_dict()) == sa
    sa16 = SecureAggregation(threshold=3, bits=16)
    assert sa16.to_dict()["bits"] == 16 and SecureAggregation.from_dict(sa16.to_dict()) == sa16
    for bad in (8, 48, True, "16"):
        with pytest.raises(ConfigError, match="bits must be 16, 32 or 64"):
            SecureAggregation(threshold=3, bits=bad)


def test_a_masked_update_must_have_the_tasks_width():
    schema = {"a.weight": ((3, 4), "F32"), "a.bias": ((3,), "F32")}
    assert masked_schema(schema, 16) == {"masked": ((16,), "I16")}
    assert masked_schema(schema, 64) == {"a.weight": ((3, 4), "I64"), "a.bias": ((3,), "I64")}
    meta = masked_metadata(TASK, 2, "base", "0xabc")
    narrow = encode({"masked": torch.zeros(16, dtype=torch.int16)}, meta)
    kw = dict(max_bytes=1 << 20, task_cid=TASK, round_=2, base_cid="base", submitter="0xabc")
    assert validate_masked(narrow, schema, bits=16, **kw).tensors["masked"].dtype == torch.int16
    for data, bits in ((narrow, 32), (narrow, 64), (encode({"masked": torch.zeros(16, dtype=torch.int32)}, meta), 16),
                       (encode({"masked": torch.zeros(32, dtype=torch.int16)}, meta), 16)):
        with pytest.raises(ArtifactInvalid):
            validate_masked(data, schema, bits=bits, **kw)


def test_deploy_refuses_bits_it_cannot_encode():
    from fedchain.node.aggregation import check_secure_bits

    sa = SecureAggregation(threshold=3, bits=16)
    check_secure_bits(sa, {"w": ((4810,), "F32")}, 4)
    with pytest.raises(ConfigError, match="only floating-point tensors; n is I64"):
        check_secure_bits(sa, {"w": ((4,), "F32"), "n": ((1,), "I64")}, 4)
    with pytest.raises(ConfigError, match="overflow 64-bit integers"):
        check_secure_bits(SecureAggregation(threshold=3, bits=32, clip=1000.0, noise_multiplier=1000.0), {"w": ((1 << 24,), "F32")}, 4)


def test_a_noisy_16_bit_bucket_sum_decodes_to_noise_of_z_times_the_clip_per_coordinate():
    """Distributed DP at 16 bits: 4 members' shares of the noise, summed modulo 2^16 and decoded,
    give each coordinate of the bucket sum noise of std z * clip (in fixed point), as at 64 bits."""
    codec = plan_codec(bits=16, length=3000, members=4, clip=1.0, noise_multiplier=0.5)
    total = sum(encode_update(np.zeros(3000, dtype=np.int64), codec, task=TASK, round_=2, rng=RandomSource.seeded(bytes([i])))
                for i in range(4))
    noise = decode_sum(wrap(total, 16).astype(np.int64), codec, task=TASK, round_=2)
    assert float(np.std(noise)) / F == pytest.approx(0.5, rel=0.05)
    assert abs(float(np.mean(noise))) / F < 0.05
