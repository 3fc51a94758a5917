"""Throughput of the exact discrete-Gaussian sampler (node/secagg/noise.py), not a timed test.

For sigma = 2**4 .. 2**12 (integer sigma^2 = 4**k, the plans' fast path) it draws ``--n``
samples with the OS CSPRNG and with the seeded SHAKE-256 stream, best of ``--repeat`` runs, and
the scalar Python-integer reference path on ``--n-scalar`` samples; prints samples/second and the
empirical variance / sigma^2 as a sanity check, one JSON object per line.

    OMP_NUM_THREADS=1 python benchmarks/ddg_sampler.py --n 1000000
"""
from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction

import numpy as np

from fedchain.node.secagg.noise import RandomSource, discrete_gaussian, discrete_gaussian_scalar


def _rate(fn, n: int, repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return n / best, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--n-scalar", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for bits in range(4, 13, 2):
        sigma_sq = Fraction(4**bits)
        row = {"sigma": f"2^{bits}"}
        for name, make in (("secure", RandomSource.secure), ("seeded", lambda: RandomSource.seeded(b"bench"))):
            rate, x = _rate(lambda: discrete_gaussian(sigma_sq, args.n, make()), args.n, args.repeat)
            row[f"{name}_per_s"] = round(rate)
            row[f"{name}_var_ratio"] = round(float(x.var()) / float(sigma_sq), 4)
        rng = RandomSource.secure()
        rate, _ = _rate(lambda: [discrete_gaussian_scalar(sigma_sq, rng) for _ in range(args.n_scalar)], args.n_scalar, 1)
        row["scalar_per_s"] = round(rate)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
