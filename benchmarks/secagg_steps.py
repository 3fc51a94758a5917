"""What one reader's secure-aggregation steps cost, on the pure functions (no chain, no store).

For N members (all holders and dealers, one bucket), threshold T and d values per update, times:
dealing one share bundle, decoding N bundles, one holder's reveal (N pair keys, the next round's
bundle inline), decoding N reveals, recombining N self seeds (ours, and pycryptodome's
``Shamir.combine`` for comparison), masking one update, unmasking the sum, and decoding N masked
artifacts. Each figure is the best of ``--repeat`` runs, in milliseconds.

    python benchmarks/secagg_steps.py --members 16 --threshold 9 --dim 4810
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from Crypto.Protocol.SecretSharing import Shamir

from fedchain.node.protocol.artifact import decode, encode
from fedchain.node.secagg import (deal, decode_bundle, decode_unmask, encode_unmask, identity_private, mask, mask_private,
                                  pair_keys, public_key, reconstruct, round_seeds, unmask_sum)
from fedchain.node.secagg.bundles import open_share

TASK = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ROUND = 3


def _account(i: int) -> bytes:
    return (i + 1).to_bytes(32, "big")


def _peer(i: int) -> str:
    return "0x" + f"{i + 1:040x}"


def best_ms(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return round(best * 1000, 2), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--threshold", type=int, default=9)
    ap.add_argument("--dim", type=int, default=4810)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, t, d, rep = args.members, args.threshold, args.dim, args.repeat
    idp = {i: identity_private(_account(i), CONTRACT) for i in range(n)}
    idpub = {i: public_key(k) for i, k in idp.items()}
    res = {"members": n, "threshold": t, "dim": d}

    def deal_one(i: int, round_: int = ROUND) -> bytes:
        return deal(account_key=_account(i), contract=CONTRACT, task=TASK, round_=round_, dealer=i, peer=_peer(i),
                    threshold=t, holders=idpub)

    res["deal_one_bundle_ms"], raw0 = best_ms(lambda: deal_one(0), rep)
    res["bundle_bytes"] = len(raw0)
    raws = {i: deal_one(i) for i in range(n)}
    res["decode_bundles_ms"], bundles = best_ms(lambda: {i: decode_bundle(
        raws[i], max_bytes=1 << 20, task=TASK, round_=ROUND, peer=_peer(i), dealer=i, holders=set(range(n)),
        threshold=t) for i in range(n)}, rep)

    def reveal(h: int) -> bytes:
        keys = {(dd, "self"): pair_keys(idp[h], idpub[dd], task=TASK, round_=ROUND, dealer=dd, holder=h)[1] for dd in range(n)}
        return encode_unmask(task=TASK, round_=ROUND, peer=_peer(h), holder=h, keys=keys, next_bundle=deal_one(h, ROUND + 1))

    res["one_reveal_with_next_bundle_ms"], rv0 = best_ms(lambda: reveal(0), rep)
    res["reveal_bytes"] = len(rv0)
    rvs = [reveal(h) for h in range(n)]
    res["decode_reveals_ms"], unmasks = best_ms(lambda: [decode_unmask(
        rvs[h], max_bytes=1 << 20, task=TASK, round_=ROUND, peer=_peer(h), holder=h, members=n) for h in range(n)], rep)
    res["recombine_self_seeds_ms"], selfs = best_ms(lambda: reconstruct(bundles, unmasks, {x: "self" for x in range(n)}), rep)
    assert all(v is not None for v in selfs.values())

    def pycryptodome() -> None:  # the same shares, recombined by Shamir.combine
        for dealer, b in bundles.items():
            shares = []
            for u in unmasks[:t]:
                shares.append((u.holder + 1, open_share(b, u.holder, u.keys[(dealer, "self")], "self")))
            assert Shamir.combine(shares) == selfs[dealer]

    res["recombine_self_seeds_pycryptodome_ms"], _ = best_ms(pycryptodome, rep)
    rng = np.random.default_rng(0)
    q = {i: rng.integers(-1000, 1000, d).astype(np.int64) for i in range(n)}
    seeds = {i: round_seeds(_account(i), CONTRACT, ROUND) for i in range(n)}

    def mask_of(i: int) -> np.ndarray:
        return np.asarray(mask(q[i], me=i, mask_private=mask_private(seeds[i][0]), self_seed=seeds[i][1],
                               peers={j: bundles[j].mask_public for j in range(n) if j != i}, task=TASK, round_=ROUND),
                          dtype=np.uint64)

    res["mask_one_update_ms"], _ = best_ms(lambda: mask_of(0), rep)
    masked = {i: mask_of(i) for i in range(n)}
    res["unmask_sum_ms"], total = best_ms(lambda: unmask_sum(masked, self_seeds=selfs, dropped={}, mask_publics={
        m: bundles[m].mask_public for m in range(n)}, task=TASK, round_=ROUND), rep)
    assert np.array_equal(np.asarray(total, dtype=np.int64), sum(q.values()))
    arts = {i: encode({"w": torch.from_numpy(masked[i].view(np.int64).copy())}, {"kind": "masked-update"}) for i in range(n)}
    res["decode_masked_artifacts_ms"], _ = best_ms(lambda: [decode(arts[i], max_bytes=1 << 26) for i in range(n)], rep)
    for k, v in res.items():
        print(f"{k:>40}: {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
