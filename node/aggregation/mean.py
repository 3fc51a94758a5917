"""Averaging rules: FedAvg with norm clipping (the default) and plain FedAvg (the baseline)."""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..protocol.fixedpoint import FRAC_BITS, LIMIT, WEIGHT_BITS, normalized_weights
from ._exact import ONE, Aggregate, check_rows, combine, exact_sq_norms, lower_median, scaled, weighted_sum
from .base import AggregationRule

__all__ = ["fedavg_clipped", "plain_fedavg", "FedAvg", "PlainFedAvg"]


def fedavg_clipped(rows: torch.Tensor, weights: list[int], *, clip_sq: int = 0) -> Aggregate:
    """Reputation-weighted FedAvg with L2 norm clipping.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS 2017), with per-update norm clipping as in McMahan et al., "Learning
    Differentially Private Recurrent Language Models" (ICLR 2018). ``clip_sq`` is the squared
    bound in fixed-point units; 0 clips to the lower median of the updates' norms.

    Bit-identical to clipping each row with ``fixedpoint.clip_to_norm`` and then taking the
    weighted mean, but done in one blocked pass.
    """
    check_rows(rows)
    n = rows.shape[0]
    norms = exact_sq_norms(rows)
    bound = clip_sq or lower_median(norms)
    # clip_to_norm's factor, floor(2**20 * sqrt(bound) / norm); 2**20 (identity) when unclipped.
    factors = [ONE if (q <= bound or q == 0) else math.isqrt((bound << (2 * WEIGHT_BITS)) // q) for q in norms]
    keep = list(range(n))
    w = normalized_weights(weights) if sum(weights) > 0 else normalized_weights([1] * n)
    return Aggregate(combine(rows, keep, w, scaled(factors)), tuple(keep))



def plain_fedavg(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Plain FedAvg: the weighted mean of every update, with no clipping and no exclusion.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS 2017). The undefended baseline: one scaled update can steer it.
    """
    check_rows(rows)
    keep = list(range(rows.shape[0]))
    return Aggregate(weighted_sum(rows, weights, keep), tuple(keep))



class FedAvg(AggregationRule):
    """Reputation-weighted FedAvg with L2 clipping (McMahan et al., AISTATS 2017 and ICLR 2018).

    ``clip_norm``: the L2 bound on each update; ``None`` (the default) clips to the lower median
    of the round's update norms, which adapts to the model and the round.
    """

    name = "fedavg"
    rule_id = 0
    works_on_sums = True

    def __init__(self, clip_norm: float | None = None):
        if clip_norm is not None and not (math.isfinite(clip_norm) and 0 < clip_norm < LIMIT >> FRAC_BITS):
            raise ConfigError(f"fedavg: clip_norm must be a positive finite number, got {clip_norm!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)

    def params(self):
        return {} if self.clip_norm is None else {"clip_norm": self.clip_norm}

    def combine(self, rows, weights):
        if self.clip_norm is None:
            return fedavg_clipped(rows, weights)
        q = round(self.clip_norm * (1 << FRAC_BITS))
        return fedavg_clipped(rows, weights, clip_sq=q * q)


class PlainFedAvg(AggregationRule):
    """Plain FedAvg, the undefended baseline (McMahan et al., AISTATS 2017)."""

    name = "fedavg-plain"
    rule_id = 5
    works_on_sums = True

    def combine(self, rows, weights):
        return plain_fedavg(rows, weights)
