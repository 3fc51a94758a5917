"""Trust-weighted averaging against a robust reference, after FLTrust (Cao et al., NDSS 2021)."""
from __future__ import annotations

import math

import torch

from ..protocol.fixedpoint import WEIGHT_BITS, normalized_weights
from ._exact import ONE, Aggregate, check_rows, combine, exact_products, exact_sq_norms, median_rows, rescaled
from .base import AggregationRule

__all__ = ["trust_scores", "trust_cosine", "TrustCosine"]


def trust_scores(rows: torch.Tensor, reference: torch.Tensor) -> tuple[list[int], list[int], list[int], int]:
    """Fixed-point ReLU(cosine) of each row with ``reference``, exactly.

    Returns ``(scores, dots, sq_norms, ref_sq_norm)``, all Python ints. The score is
    ``floor(2**20 * max(0, cos))`` where ``cos = <x, r> / (|x| |r|)``: for ``<x, r> > 0`` it is
    ``isqrt(floor(2**40 <x, r>**2 / (|x|**2 |r|**2)))`` (``isqrt(floor(y)) == floor(sqrt(y))``),
    at most 2**20 by Cauchy-Schwarz; 0 when ``<x, r> <= 0`` or either norm is 0.
    """
    dots = [row[0] for row in exact_products(rows, reference.reshape(1, -1))]
    norms = exact_sq_norms(rows)
    ref = exact_sq_norms(reference.reshape(1, -1))[0]
    scores = []
    for dot, q in zip(dots, norms):
        if dot <= 0 or q == 0 or ref == 0:
            scores.append(0)
        else:
            scores.append(min(math.isqrt(((dot * dot) << (2 * WEIGHT_BITS)) // (q * ref)), ONE))
    return scores, dots, norms, ref



def trust_cosine(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Trust-weighted mean with the coordinate-wise median as the trust reference.

    After FLTrust: Cao et al., "FLTrust: Byzantine-robust Federated Learning via Trust
    Bootstrapping" (NDSS 2021). Each update gets the trust score ``ReLU(cos(update, reference))``,
    is rescaled to the reference's norm, and the aggregate is the trust-weighted mean of the
    rescaled updates; updates with zero trust are excluded.

    Deviations from FLTrust:

    * No server root dataset: FLTrust's reference is an update the server computes on a small
      clean dataset. A decentralized task has no trusted party, so the reference here is the
      coordinate-wise (lower) median of the received updates themselves (Yin et al., ICML 2018).
      The robustness therefore rests on an honest majority per coordinate, not on a clean root
      dataset, and FLTrust's tolerance of a malicious majority does not carry over.
    * Weights: a row's weight is its fixed-point trust score times its ``weights`` entry (sample
      count times reputation), instead of the trust score alone. If the trusted rows' weights
      sum to zero, the trust scores alone are used.
    * Exact integer arithmetic: trust scores are ``floor(2**20 * cos)`` computed from exact inner
      products with integer square roots; rescaling is ``floor(x * F / 2**20)`` with
      ``F = floor(2**20 * |r| / |x|)`` (also upward, unlike ``clip_to_norm``), clamped to
      +-LIMIT per coordinate; the mean rounds down.
    * If no update has positive trust (e.g. the reference is zero), the delta is zero and no
      update is included.
    """
    check_rows(rows)
    n, d = rows.shape
    reference = median_rows(rows)
    scores, _, norms, ref = trust_scores(rows, reference)
    keep = [i for i in range(n) if scores[i] > 0]
    if not keep:
        return Aggregate(torch.zeros(d, dtype=torch.int64), ())
    base = weights if sum(weights[i] for i in keep) > 0 else [1] * n
    w = normalized_weights([scores[i] * base[i] for i in keep])
    factors = [math.isqrt((ref << (2 * WEIGHT_BITS)) // norms[i]) for i in keep]  # floor(2**20 |r| / |x|)
    return Aggregate(combine(rows, keep, w, rescaled(factors)), tuple(keep))



class TrustCosine(AggregationRule):
    """Trust-cosine weighting against the coordinate-wise median (after FLTrust, NDSS 2021)."""

    name = "trust-cosine"
    rule_id = 4

    def combine(self, rows, weights):
        return trust_cosine(rows, weights)
