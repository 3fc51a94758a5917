"""Wall time of every aggregation rule over N updates of D parameters (default 50 x 1,000,000).

Times the pure rule functions on int64 fixed-point rows (quantization of the updates is not
included), median of REPEATS runs after one warm-up run, and prints a table and one JSON line.
``--wide`` uses updates near the fixed-point limit (|x| ~ 2**42), the worst case for the exact
inner products; ``--baseline`` adds a plain float64 NumPy Multi-Krum (not exact) for comparison.

    python benchmarks/aggregation.py
    python benchmarks/aggregation.py --updates 50 --params 1000000 --repeats 3 --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

from fedchain.node.aggregation import RULES, make_rule
from fedchain.node.protocol.fixedpoint import LIMIT, quantize


def make_rows(n: int, d: int, *, wide: bool, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if wide:
        return torch.randint(-LIMIT, LIMIT + 1, (n, d), generator=gen)
    rows = torch.empty((n, d), dtype=torch.int64)
    direction = torch.randn(d, generator=gen) * 0.01
    for i in range(n):  # honest-looking updates: a shared direction plus noise, about 0.01 in size
        rows[i] = quantize(direction + torch.randn(d, generator=gen) * 0.01)
    return rows


def numpy_multi_krum(rows: np.ndarray, f: int, m: int) -> np.ndarray:
    """Float64 Multi-Krum as published NumPy implementations do it (not exact, for comparison)."""
    sq = np.einsum("ij,ij->i", rows, rows)
    dist = sq[:, None] + sq[None, :] - 2 * rows @ rows.T
    np.fill_diagonal(dist, np.inf)
    scores = np.sort(dist, axis=1)[:, : len(rows) - f - 2].sum(1)
    return rows[np.argsort(scores, kind="stable")[:m]].mean(0)


def timed(fn, repeats: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--wide", action="store_true", help="values near the fixed-point limit (worst case)")
    ap.add_argument("--baseline", action="store_true", help="also time a float64 NumPy Multi-Krum")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    n, d = args.updates, args.params
    rows = make_rows(n, d, wide=args.wide)
    weights = [100 + 3 * i for i in range(n)]
    load_before = os.getloadavg()
    results = {}
    for name in args.rules:
        times, out = timed(lambda: make_rule(name).combine(rows, weights), args.repeats)
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                         "included": len(out.included)}
    if args.baseline:
        f = max((n - 3) // 2, 0)
        as_float = rows.numpy().astype(np.float64)
        times, _ = timed(lambda: numpy_multi_krum(as_float, f, n - f), args.repeats)
        results["numpy-float64-multi-krum (not exact)"] = {"median_s": statistics.median(times), "min_s": min(times),
                                                            "max_s": max(times), "included": n - f}

    info = {
        "updates": n, "params": d, "repeats": args.repeats, "wide": args.wide,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "machine": platform.machine(), "python": platform.python_version(),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"torch.get_num_threads() = {torch.get_num_threads()}, os.cpu_count() = {os.cpu_count()}, "
          f"{n} updates x {d:,} parameters{' (wide values)' if args.wide else ''}, median of {args.repeats} runs")
    print(f"{'rule':40s} {'median s':>9s} {'min s':>8s} {'max s':>8s} {'included':>9s}")
    for name, r in results.items():
        print(f"{name:40s} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['max_s']:8.3f} {r['included']:9d}")
    print(json.dumps({**info, "rules": {k: {m: round(v, 4) if isinstance(v, float) else v for m, v in r.items()}
                                        for k, r in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
