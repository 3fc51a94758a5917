"""Distributed discrete-Gaussian noise (node/secagg/noise.py) and its zCDP accountant
(node/secagg/accountant.py): pure functions, fixed seeds, so nothing here can flake."""
from __future__ import annotations

import hashlib
import math
from fractions import Fraction

import numpy as np
import pytest

from fedchain.node.secagg import accountant as acc
from fedchain.node.secagg import noise as nz
from fedchain.node.secagg.accountant import ddg_tau, epsilon, round_rho, total_epsilon
from fedchain.node.secagg.noise import (
    NoisePlan, RandomSource, add_noise, discrete_gaussian, discrete_gaussian_scalar, plan_noise, round_to_lattice,
)

pytestmark = pytest.mark.timeout(60)

SEED = b"fedchain-test"


# --- the randomness source -------------------------------------------------------------------


def test_seeded_stream_is_shake256_of_seed_and_counter():
    prefix = b"fedchain/secagg/noise/v1\x00" + len(SEED).to_bytes(8, "big") + SEED
    first = hashlib.shake_256(prefix + (0).to_bytes(8, "big")).digest(16)
    rng = RandomSource.seeded(SEED)
    assert rng.randbits(64) == int.from_bytes(first[:8], "big") == 14401502447582068605
    assert rng.words(1)[0] == int.from_bytes(first[8:], "little")


def test_seeded_sources_agree_and_differ_by_seed():
    a, b, c = (RandomSource.seeded(s) for s in (SEED, SEED, b"other"))
    xa = [a.randbelow(1000) for _ in range(50)]
    assert xa == [b.randbelow(1000) for _ in range(50)] != [c.randbelow(1000) for _ in range(50)]
    assert all(0 <= x < 1000 for x in xa)
    assert RandomSource.secure().randbits(0) == 0 and 0 <= RandomSource.secure().randbelow(7) < 7
    with pytest.raises(ValueError):
        a.randbelow(0)


# --- the sampler -----------------------------------------------------------------------------


def test_known_answer_first_samples():
    assert discrete_gaussian(Fraction(1000), 8, RandomSource.seeded(SEED)).tolist() == [7, 8, 26, -10, -23, -61, 11, 33]
    rng = RandomSource.seeded(SEED)
    assert [discrete_gaussian_scalar(Fraction(1000), rng) for _ in range(8)] == [24, 57, 14, 1, 20, -9, -25, -13]


@pytest.mark.parametrize("sigma_sq", [1, 10, 1000, 2**20])
def test_mean_variance_and_symmetry(sigma_sq):
    n = 20000
    x = discrete_gaussian(Fraction(sigma_sq), n, RandomSource.seeded(SEED + bytes([sigma_sq % 251])))
    assert x.dtype == np.int64 and x.shape == (n,)
    sd = math.sqrt(sigma_sq)
    assert abs(x.mean()) < 5 * sd / math.sqrt(n)
    assert abs(x.var() / sigma_sq - 1) < 0.05  # relative sd of the sample variance is sqrt(2/n) = 1%
    pos, neg = int((x > 0).sum()), int((x < 0).sum())
    assert abs(pos - neg) < 5 * math.sqrt(n)


def _pmf(sigma_sq: float, support: range) -> dict[int, float]:
    w = {k: math.exp(-k * k / (2 * sigma_sq)) for k in range(-60, 61)}
    z = math.fsum(w.values())
    return {k: w[k] / z for k in support}


@pytest.mark.parametrize("sigma_sq, sampler", [(Fraction(1), "vector"), (Fraction(7, 3), "vector"), (Fraction(2), "scalar")])
def test_empirical_pmf_matches_the_discrete_gaussian(sigma_sq, sampler):
    n = 20000 if sampler == "vector" else 6000
    rng = RandomSource.seeded(b"pmf" + str(sigma_sq).encode())
    if sampler == "vector":
        x = discrete_gaussian(sigma_sq, n, rng)
    else:
        x = np.array([discrete_gaussian_scalar(sigma_sq, rng) for _ in range(n)])
    for k, p in _pmf(float(sigma_sq), range(-5, 6)).items():
        emp = float((x == k).mean())
        assert abs(emp - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-4, (k, emp, p)


def test_bernoulli_exp_lanes_match_exp():
    rng = RandomSource.seeded(b"bern")
    n = 20000
    for num, den in [(0, 1), (1, 3), (1, 1), (5, 2), (7, 3)]:
        hits = nz._bernoulli_exp_vec(np.full(n, num, dtype=np.int64), den, rng)
        p = math.exp(-num / den)
        assert abs(hits.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1e-9, (num, den)


def test_uniform_below_rejects_the_biased_words():
    # 2**64 mod m = 2**62 for m = 3 * 2**61: a quarter of the words are redrawn
    u = nz._uniform_below(3 << 61, 40000, RandomSource.seeded(b"uniform"))
    assert u.min() >= 0 and u.max() < 3 << 61
    thirds = np.bincount(u // (1 << 61), minlength=3)  # each third of [0, m) equally likely
    assert all(abs(c - 40000 / 3) < 5 * math.sqrt(40000 * 2 / 9) for c in thirds)
    small = nz._uniform_below(3, 30000, RandomSource.seeded(b"uniform"))
    assert all(abs(c - 10000) < 5 * math.sqrt(30000 * 2 / 9) for c in np.bincount(small))


def test_wide_parameters_take_the_exact_scalar_path():
    sigma_sq = Fraction(10**9 + 7, 3)  # 2 a b t^2 is far beyond the 64-bit lanes
    x = discrete_gaussian(sigma_sq, 300, RandomSource.seeded(SEED))
    assert x.shape == (300,) and abs(x.var() / float(sigma_sq) - 1) < 0.3
    with pytest.raises(ValueError):
        discrete_gaussian(Fraction(0), 3, RandomSource.seeded(SEED))
    assert discrete_gaussian(Fraction(5), 0, RandomSource.seeded(SEED)).shape == (0,)


# --- the lattice and the plan ----------------------------------------------------------------


def test_round_to_lattice_is_nearest_with_ties_up():
    q = np.array([-6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6], dtype=np.int64)
    assert round_to_lattice(q, 4).tolist() == [-4, -4, -4, 0, 0, 0, 0, 4, 4, 4, 8]
    assert round_to_lattice(q, 1).tolist() == q.tolist()
    with pytest.raises(ValueError):
        round_to_lattice(q, 3)


def test_plan_noise_is_deterministic_and_on_a_power_of_two_lattice():
    plan = plan_noise(clip=1.0, noise_multiplier=1.0, members=4, dim=4810)
    assert plan == plan_noise(clip=1.0, noise_multiplier=1.0, members=4, dim=4810)
    # per-member std = 2**28 / 2 = 2**27 fixed-point units -> step 2**17, sigma 2**10 lattice units
    assert plan == NoisePlan(step=2**17, member_sigma_sq=Fraction(2**20), sensitivity=2**11 + math.sqrt(4810) / 2, members=4)
    for clip, nm, members in [(0.3, 0.7, 3), (2.5, 1.3, 10), (1e-3, 0.5, 7), (1.0, 1.0, 1)]:
        p = plan_noise(clip=clip, noise_multiplier=nm, members=members, dim=100)
        assert p.step >= 1 and p.step & (p.step - 1) == 0
        assert p.member_sigma_sq.denominator == 1
        member_sd = nm * clip * 2**28 / math.sqrt(members) / p.step
        assert p.member_sigma_sq >= member_sd**2 > (p.member_sigma_sq - 1)  # rounded up, never down
        assert 2**10 <= math.sqrt(p.member_sigma_sq) < 2**11 + 1
    tiny = plan_noise(clip=1e-6, noise_multiplier=1.0, members=4, dim=10)
    assert tiny.step == 1 and tiny.member_sigma_sq < 2**20
    for bad in [dict(clip=0.0), dict(noise_multiplier=float("nan")), dict(members=0)]:
        with pytest.raises(ValueError):
            plan_noise(**{**dict(clip=1.0, noise_multiplier=1.0, members=4, dim=10), **bad})


def test_add_noise_is_on_the_lattice_and_centred_on_the_rounded_update():
    plan = plan_noise(clip=1.0, noise_multiplier=1.0, members=4, dim=4810)
    q = np.arange(-2405, 2405, dtype=np.int64) * 98765
    noisy = add_noise(q, plan, RandomSource.seeded(SEED))
    assert noisy.dtype == np.int64 and noisy.shape == q.shape
    assert np.all(noisy % plan.step == 0)
    assert np.array_equal(noisy, add_noise(q, plan, RandomSource.seeded(SEED)))
    k = (noisy - round_to_lattice(q, plan.step)) // plan.step
    assert abs(k.var() / float(plan.member_sigma_sq) - 1) < 0.1 and abs(k.mean()) < 5 * 2**10 / math.sqrt(k.size)
    assert add_noise(q.reshape(10, -1), plan, RandomSource.seeded(SEED)).shape == (10, 481)


# --- the accountant --------------------------------------------------------------------------


def test_rho_decreases_with_more_survivors_and_more_noise():
    dim = 4810
    plan = plan_noise(clip=1.0, noise_multiplier=1.0, members=4, dim=dim)
    rhos = [round_rho(plan, s, dim) for s in (1, 2, 3, 4, 5)]
    assert all(a > b for a, b in zip(rhos, rhos[1:]))
    by_noise = [round_rho(plan_noise(clip=1.0, noise_multiplier=z, members=4, dim=dim), 4, dim) for z in (0.5, 1, 2)]
    assert by_noise[0] > by_noise[1] > by_noise[2]
    with pytest.raises(ValueError):
        round_rho(plan, 0, dim)


def test_round_rho_approaches_the_continuous_gaussian_for_large_sigma():
    plan = NoisePlan(step=1, member_sigma_sq=Fraction(2**20), sensitivity=3000.0, members=4)
    for n in (1, 2, 4):
        assert round_rho(plan, n, 4810) == pytest.approx(3000.0**2 / (2 * n * 2**20), rel=1e-12)
    # a single discrete Gaussian: exactly Delta^2 / (2 sigma^2) (tau = 0)
    small = NoisePlan(step=1, member_sigma_sq=Fraction(1), sensitivity=2.0, members=3)
    assert ddg_tau(1.0, 1) == 0 and round_rho(small, 1, 100) == 2.0
    # small sigma, several members: the sum is not a discrete Gaussian; tau makes rho larger
    tau = ddg_tau(1.0, 3)
    assert tau == pytest.approx(10 * (math.exp(-math.pi**2) + math.exp(-4 * math.pi**2 / 3)), rel=1e-12)
    a2 = 4.0 / 3
    expected = min(a2 / 2 + tau * 100, (a2 + 2 * math.sqrt(100 * a2) * tau + tau**2 * 100) / 2,
                   (math.sqrt(a2) + 10 * tau) ** 2 / 2)
    assert round_rho(small, 3, 100) == pytest.approx(expected, rel=1e-12) and expected > a2 / 2


def test_epsilon_matches_hand_computed_values():
    # min over alpha of alpha rho + (log(1/delta) + (alpha-1) log(1-1/alpha) - log alpha)/(alpha-1),
    # computed on a fine grid of alpha offline
    assert epsilon(0.5, 1e-5) == pytest.approx(4.7283870, abs=1e-6)
    assert epsilon(1.0, 1e-6) == pytest.approx(7.7662166, abs=1e-6)
    assert epsilon(0.01, 1e-5) == pytest.approx(0.5457255, abs=1e-6)
    for rho in (1e-4, 0.1, 1.0, 30.0):
        classic = rho + 2 * math.sqrt(rho * math.log(1e5))
        assert 0 < epsilon(rho, 1e-5) < classic
        grid = min(acc._epsilon_at(rho, math.log(1e5), 1 + math.exp(u)) for u in np.linspace(-12, 15, 20001))
        assert epsilon(rho, 1e-5) <= grid + 1e-9
    assert epsilon(0.0, 1e-5) == 0.0 and epsilon(math.inf, 1e-5) == math.inf
    with pytest.raises(ValueError):
        epsilon(1.0, 0.0)


def test_total_epsilon_composes_by_adding_rho():
    assert total_epsilon([0.1, 0.2, 0.2], 1e-5) == epsilon(0.5, 1e-5)
    assert total_epsilon([], 1e-5) == 0.0
    plan = plan_noise(clip=1.0, noise_multiplier=1.0, members=4, dim=4810)
    five = total_epsilon([round_rho(plan, 4, 4810)] * 5, 1e-5)
    assert epsilon(5 * 0.5, 1e-5) < five < epsilon(5 * 0.5 * 1.04, 1e-5)  # the rounding term costs < 4% rho


def test_rare_lanes_finish_exactly_on_python_integers(monkeypatch):
    # lanes whose alternating series runs past _MAX_K, and proposals whose exponent would leave
    # 62 bits, are astronomically rare at the real limits; lower the limits to exercise them
    monkeypatch.setattr(nz, "_MAX_K", 3)
    n = 20000
    hits = nz._bernoulli_exp_vec(np.full(n, 9, dtype=np.int64), 10, RandomSource.seeded(b"maxk"))
    p = math.exp(-0.9)
    assert abs(hits.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n)
    monkeypatch.setattr(nz, "_WIDE", 1 << 20)  # |y| > 63 (2 sigma) takes the scalar acceptance test
    y = nz._discrete_gaussian_vec(1000, 1, 32, 40000, RandomSource.seeded(b"wide"))
    assert (np.abs(y) > 63).sum() > 500 and abs(y.var() / 1000 - 1) < 0.05
