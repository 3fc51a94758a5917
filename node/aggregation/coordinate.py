"""Coordinate-wise rules: the median and the trimmed mean (Yin et al., ICML 2018)."""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ._exact import Aggregate, check_rows, median_rows, select_sum
from .base import AggregationRule

__all__ = ["coordinate_median", "trimmed_mean", "Median", "TrimmedMean"]


def coordinate_median(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Coordinate-wise median (lower median for an even count).

    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    (ICML 2018). Weights are not used: the median is the robust statistic itself.
    """
    check_rows(rows)
    return Aggregate(median_rows(rows), tuple(range(rows.shape[0])))



def trimmed_mean(rows: torch.Tensor, weights: list[int], *, trim: float = 0.2) -> Aggregate:
    """Coordinate-wise trimmed mean: drop the ``trim`` fraction of largest and smallest values.

    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    (ICML 2018). The mean of the kept values is rounded down (floor division).
    """
    check_rows(rows)
    n = rows.shape[0]
    k = min(int(n * trim), (n - 1) // 2)
    return Aggregate(torch.div(select_sum(rows, k, n - k), n - 2 * k, rounding_mode="floor"), tuple(range(n)))



class Median(AggregationRule):
    """Coordinate-wise (lower) median (Yin et al., ICML 2018)."""

    name = "median"
    rule_id = 1

    def combine(self, rows, weights):
        return coordinate_median(rows, weights)


class TrimmedMean(AggregationRule):
    """Coordinate-wise trimmed mean (Yin et al., ICML 2018), as Flower's ``FedTrimmedAvg(beta)``.

    ``beta``: the fraction of the largest and of the smallest values dropped per coordinate.
    """

    name = "trimmed-mean"
    rule_id = 2

    def __init__(self, beta: float = 0.2):
        if not (isinstance(beta, (int, float)) and math.isfinite(beta) and 0 <= beta < 0.5):
            raise ConfigError(f"trimmed-mean: beta must be in [0, 0.5), got {beta!r}")
        self.beta = float(beta)

    def params(self):
        return {"beta": self.beta}

    def combine(self, rows, weights):
        return trimmed_mean(rows, weights, trim=self.beta)
