"""Every peer must compute the same aggregate bytes: independent of thread counts, and equal to a
plain-Python, float-free statement of each rule."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedchain.node import aggregation as agg
from fedchain.node.aggregation import RULES
from fedchain.node.protocol.fixedpoint import LIMIT, WEIGHT_BITS

from _support import ROOT, clean_env

# Runs in a fresh interpreter: builds seeded updates, aggregates them with every rule through the
# strategy (as a peer does), and prints the SHA-256 of the canonical model artifact, of the raw
# delta bytes of the pure rule function, and which exact-arithmetic plan the data needed.
SCRIPT = r"""
import hashlib, json, sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[1]))
from fedchain.node import aggregation as agg
from fedchain.node.protocol.artifact import encode
from fedchain.node.protocol.fixedpoint import quantize
from fedchain.node.protocol.fixedpoint import state_to_vector

def dataset(n, d, scale, seed):
    # NumPy's generator gives the same numbers on every CPU; torch's samplers need not.
    rng = np.random.default_rng(seed)
    shapes = {"layer.bias": (d // 10,), "layer.weight": (9, d // 10)}  # d parameters in all
    normal = lambda shape, s=1.0: torch.from_numpy((rng.standard_normal(shape) * s).astype(np.float32))
    base = {k: normal(s) for k, s in shapes.items()}
    direction = {k: normal(s, scale) for k, s in shapes.items()}
    out = []
    for member in range(n):
        delta = {k: v + normal(v.shape, scale * 0.5) for k, v in direction.items()}
        if member == 1:
            delta = {k: -3 * v for k, v in delta.items()}  # sign-flipped and scaled
        if member == 4:
            delta = {k: torch.full(v.shape, 50 * scale) for k, v in delta.items()}  # far outlier
        out.append(agg.Contribution(member, f"cid{member}", delta, 20 + 7 * member, 1 + member % 3))
    return base, out[::-1]  # arrival order differs from member order

result = {"threads": torch.get_num_threads(), "rules": {}, "plans": {}}
for name, (n, d, scale, seed) in {"direct": (7, 50_000, 1e-4, 1), "one-sided": (7, 50_000, 0.01, 2),
                                  "two-sided": (7, 50_000, 3000.0, 3)}.items():
    base, contributions = dataset(n, d, scale, seed)
    rows = torch.stack([quantize(state_to_vector(c.delta)) for c in sorted(contributions, key=lambda c: c.member)])
    amax = agg._exact._max_abs(rows)
    plan = agg._exact._Plan.of(amax, amax)
    result["plans"][name] = [len(plan.left), len(plan.right)]
    for rule in agg.RULES:
        strategy = agg.make_rule(rule)
        new, included = strategy.aggregate(base, contributions, sample_cap=50)
        members = [c.member for c in included]
        artifact = encode(new, {"kind": "model", "rule": rule, "included": members})
        raw = strategy.combine(rows, agg.weights_of(sorted(contributions, key=lambda c: c.member), 50))
        result["rules"][f"{name}/{rule}"] = {
            "artifact": hashlib.sha256(artifact).hexdigest(),
            "delta": hashlib.sha256(raw.delta.numpy().tobytes()).hexdigest(),
            "included": members,
        }
print(json.dumps(result))
"""


def _run(threads: int) -> dict:
    env = clean_env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def runs():
    return _run(1), _run(2)


def test_aggregate_bytes_are_identical_across_thread_counts(runs):
    one, two = runs
    assert one["threads"] == 1 and two["threads"] == 2
    assert set(one["rules"]) == {f"{d}/{r}" for d in ("direct", "one-sided", "two-sided") for r in RULES}
    for key in one["rules"]:
        assert one["rules"][key] == two["rules"][key], key


def test_the_datasets_cover_every_exact_arithmetic_plan(runs):
    one, _ = runs
    assert one["plans"] == {"direct": [1, 1], "one-sided": [1, 2], "two-sided": [2, 2]}


def test_robust_rules_drop_the_attackers(runs):
    one, _ = runs
    for data in ("direct", "one-sided", "two-sided"):
        assert one["rules"][f"{data}/multi-krum"]["included"] == [0, 2, 3, 5, 6]
        assert 1 not in one["rules"][f"{data}/trust-cosine"]["included"]


# --------------------------------------------------------------------------- plain-Python reference
# The rules restated over lists of Python ints: no torch, no floats, no blocking.


def _wmean(rows, weights):
    if sum(weights) <= 0:
        weights = [1] * len(rows)
    w = [(x << WEIGHT_BITS) // sum(weights) for x in weights]
    return [sum(wi * r[j] for wi, r in zip(w, rows)) >> WEIGHT_BITS for j in range(len(rows[0]))]


def _sq(v):
    return sum(x * x for x in v)


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def _columns(rows):
    return [sorted(col) for col in zip(*rows)]


def _ref_clipped_mean(rows, weights, idx, counts=None):
    # counts: each row's count in the median clip bound (1 each when None)
    norms = [_sq(rows[i]) for i in idx]
    if counts is None:
        bound = sorted(norms)[(len(idx) - 1) // 2]
    else:
        expanded = sorted(q for q, i in zip(norms, idx) for _ in range(counts[i]))
        bound = expanded[(len(expanded) - 1) // 2]
    clipped = []
    for i, q in zip(idx, norms):
        r = rows[i]
        if q > bound:
            factor = math.isqrt((bound << 40) // q)
            r = [(x * factor) >> 20 for x in r]
        clipped.append(r)
    return _wmean(clipped, [weights[i] for i in idx])


def ref_fedavg(rows, weights):
    # The default: clipped FedAvg without the rows opposed to the clipped mean of every row with
    # evidence: a non-positive inner product d and a cosine of at most -1/2 (4 d^2 >= |row|^2 |ref|^2)
    # or a pull back of at least half the reference (2 f d <= -|ref|^2 2^20, f the row's clip
    # factor), or, for one of a set of near-copies, a non-positive d alone; every row opposed means
    # no evidence. The reference weighs every row 1 and the result its weight, each divided by the
    # number of rows, of those it is averaged with, at a cosine >= 15/16 to it, itself included.
    every = list(range(len(rows)))
    if len(rows) <= 2:
        return _ref_clipped_mean(rows, weights, every), every
    g = [[_dot(a, b) for b in rows] for a in rows]

    def alike(i, j):
        return i == j or (g[i][j] > 0 and g[i][j] ** 2 * 16**2 >= 15**2 * g[i][i] * g[j][j])

    def shared(idx):
        # each row of idx counts lcm / (rows of idx near-parallel to it), in weight and in the bound
        m = {i: sum(1 for j in idx if alike(i, j)) for i in idx}
        scale = math.lcm(*m.values())
        return {i: scale // m[i] for i in idx}

    def shared_mean(idx, weights=weights):
        base = [weights[i] for i in idx]
        if sum(base) <= 0:
            base = [1] * len(idx)
        share = shared(idx)
        w = [0] * len(rows)
        for i, b in zip(idx, base):
            w[i] = b * share[i]
        return _ref_clipped_mean(rows, w, idx, share)

    counts = [sum(1 for j in every if alike(i, j)) for i in every]
    ref = shared_mean(every, [1] * len(rows))  # the reference: one member, one vote
    share = shared(every)
    expanded = sorted(g[i][i] for i in every for _ in range(share[i]))
    bound = expanded[(len(expanded) - 1) // 2]
    factor = [1 << 20 if g[i][i] <= bound else math.isqrt((bound << 40) // g[i][i]) for i in every]
    rr = _sq(ref)

    def opposed(i):
        d = _dot(rows[i], ref)
        return d <= 0 and (counts[i] > 1 or 4 * d * d >= g[i][i] * rr or 2 * factor[i] * d <= -rr * (1 << 20))

    keep = [i for i in every if not opposed(i)] if any(ref) else every
    if not keep:
        keep = every
    return shared_mean(keep), keep


def ref_median(rows, weights):
    return [c[(len(rows) - 1) // 2] for c in _columns(rows)], list(range(len(rows)))


def ref_trimmed_mean(rows, weights):
    n = len(rows)
    k = min(int(n * 0.2), (n - 1) // 2)
    return [sum(c[k : n - k]) // (n - 2 * k) for c in _columns(rows)], list(range(n))


def ref_multi_krum(rows, weights):
    n = len(rows)
    keep = list(range(n))
    if n > 2:
        f = max((n - 3) // 2, 0)
        scores = []
        for i in range(n):
            dist = sorted(_sq([x - y for x, y in zip(rows[i], rows[j])]) for j in range(n) if j != i)
            scores.append(sum(dist[: n - f - 2]))
        keep = sorted(sorted(range(n), key=lambda i: (scores[i], i))[: n - f])
    return _wmean([rows[i] for i in keep], [weights[i] for i in keep]), keep


def ref_trust_cosine(rows, weights):
    n = len(rows)
    r = ref_median(rows, weights)[0]
    nr = _sq(r)
    keep, trust = [], []
    for x in rows:
        dot, nx = _dot(x, r), _sq(x)
        trust.append(math.isqrt((dot * dot << 40) // (nx * nr)) if dot > 0 and nx and nr else 0)
    keep = [i for i in range(n) if trust[i] > 0]
    if not keep:
        return [0] * len(r), []
    base = weights if sum(weights[i] for i in keep) > 0 else [1] * n
    scaled = []
    for i in keep:
        factor = math.isqrt((nr << 40) // _sq(rows[i]))
        scaled.append([max(-LIMIT, min(LIMIT, (x * factor) >> 20)) for x in rows[i]])
    return _wmean(scaled, [trust[i] * base[i] for i in keep]), keep


def ref_fedavg_plain(rows, weights):
    return _wmean(rows, weights), list(range(len(rows)))


REFERENCE = {"fedavg": ref_fedavg, "median": ref_median, "trimmed-mean": ref_trimmed_mean,
             "multi-krum": ref_multi_krum, "trust-cosine": ref_trust_cosine, "fedavg-plain": ref_fedavg_plain}


def _tiny_case(seed: int, magnitude: int, n: int = 7, d: int = 40) -> tuple[list[list[int]], list[int]]:
    rng = np.random.default_rng(seed)
    g = rng.integers(magnitude // 4, magnitude // 2, d)
    rows = [g + rng.integers(-magnitude // 8, magnitude // 8 + 1, d) for _ in range(n)]
    rows[1] = -rows[1]  # sign-flipped
    rows[3] = np.full(d, magnitude)  # outlier
    rows[5] = rows[5] // 1000  # a small update, rescaled up by trust-cosine
    weights = [int(w) for w in rng.integers(0, 100, n)]
    return [np.clip(r, -LIMIT, LIMIT).tolist() for r in rows], weights


def test_reference_covers_every_rule():
    assert set(REFERENCE) == set(RULES)


@pytest.mark.parametrize("magnitude", [1 << 10, 1 << 27, 1 << 35, LIMIT])
@pytest.mark.parametrize("rule", list(RULES))
def test_rules_equal_the_plain_python_reference(rule, magnitude, monkeypatch):
    monkeypatch.setattr(agg._exact, "_BLOCK", 8)  # cross many block boundaries even in a tiny case
    monkeypatch.setattr(agg._exact, "_SELECT_BLOCK", 8)
    for seed in range(3):
        rows, weights = _tiny_case(seed, magnitude)
        for w in (weights, [0] * len(weights)):
            got = RULES[rule]().combine(torch.tensor(rows, dtype=torch.int64), w)
            delta, included = REFERENCE[rule](rows, w)
            assert got.delta.tolist() == delta
            assert list(got.included) == included
