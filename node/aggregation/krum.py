"""Krum and Multi-Krum (Blanchard et al., NeurIPS 2017)."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from ._exact import Aggregate, check_rows, exact_products, weighted_sum
from .base import AggregationRule

__all__ = ["krum_scores", "multi_krum", "MultiKrum"]


def krum_scores(rows: torch.Tensor, f: int) -> list[int]:
    """Krum scores: each row's sum of exact squared distances to its ``n - f - 2`` nearest others.

    Squared distances ``|x_i|**2 + |x_j|**2 - 2 <x_i, x_j>`` are exact integers (Python ints)
    from an exact Gram matrix, so scores and their ranking are the same on every peer.
    """
    n = rows.shape[0]
    k = n - f - 2
    if f < 0 or k < 1:
        raise ValueError(f"Krum needs 0 <= f <= n - 3 (n={n}, f={f})")
    g = exact_products(rows)
    scores = []
    for i in range(n):
        dist = sorted(g[i][i] + g[j][j] - 2 * g[i][j] for j in range(n) if j != i)
        scores.append(sum(dist[:k]))
    return scores



def multi_krum(rows: torch.Tensor, weights: list[int], *, f: int | None = None, m: int | None = None) -> Aggregate:
    """Multi-Krum: average the ``m`` updates with the lowest Krum scores.

    Krum from Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
    Descent" (NeurIPS 2017): an update's score is the sum of its squared distances to its
    ``n - f - 2`` nearest neighbours, where ``f`` is the number of Byzantine updates tolerated
    (the guarantee needs ``n > 2f + 2``). Multi-Krum, introduced in the same paper and studied by
    El Mhamdi et al., "The Hidden Vulnerability of Distributed Learning in Byzantium" (ICML 2018),
    selects the ``m`` best-scored updates (scores computed once) and averages them.

    Defaults: ``f = max(0, floor((n - 3) / 2))``, the most the guarantee allows, and
    ``m = n - f``. With ``n <= 2`` there are no neighbours to score and every update is kept.
    Scores are exact integers; ties are broken by member order. The selected rows are averaged
    with the integer ``weights`` (equal weights if the selected weights sum to zero).
    """
    check_rows(rows)
    n = rows.shape[0]
    if n <= 2:
        keep = list(range(n))
    else:
        f = max((n - 3) // 2, 0) if f is None else f
        m = n - f if m is None else m
        if not 1 <= m <= n:
            raise ValueError(f"Multi-Krum needs 1 <= m <= n (n={n}, m={m})")
        scores = krum_scores(rows, f)
        keep = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
    return Aggregate(weighted_sum(rows, weights, keep), tuple(keep))



class MultiKrum(AggregationRule):
    """Multi-Krum (Blanchard et al., NeurIPS 2017), as Flower's ``Krum``.

    ``num_malicious_clients`` is Krum's f (default: the most the guarantee allows,
    ``floor((n - 3) / 2)``); ``num_clients_to_keep`` is m (default ``n - f``).
    """

    name = "multi-krum"
    rule_id = 3

    def __init__(self, num_malicious_clients: int | None = None, num_clients_to_keep: int | None = None):
        for what, v, least in (("num_malicious_clients", num_malicious_clients, 0),
                               ("num_clients_to_keep", num_clients_to_keep, 1)):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < least):
                raise ConfigError(f"multi-krum: {what} must be an integer of at least {least}, got {v!r}")
        self.num_malicious_clients = num_malicious_clients
        self.num_clients_to_keep = num_clients_to_keep

    def params(self):
        out = {}
        if self.num_malicious_clients is not None:
            out["num_malicious_clients"] = self.num_malicious_clients
        if self.num_clients_to_keep is not None:
            out["num_clients_to_keep"] = self.num_clients_to_keep
        return out

    def combine(self, rows, weights):
        n = rows.shape[0]
        f = self.num_malicious_clients
        m = self.num_clients_to_keep
        if n > 2:  # fewer updates than the task assumed: clamp to what Krum can score
            f = None if f is None else min(f, n - 3)
            m = None if m is None else min(m, n)
        return multi_krum(rows, weights, f=f, m=m)
