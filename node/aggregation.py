"""Aggregation rules: how every peer turns the round's valid updates into one global model.

Each rule is a pure function over exact int64 fixed-point updates (rows in canonical member
order) and integer weights, returning the aggregated delta and which rows it kept. Because
only integer arithmetic is used, every honest peer gets the same bits on any hardware.

Weighting (all rules that weight): ``w_i = min(samples_i, sample_cap) * reputation_i``, the
sample count the peer reports in its artifact, capped so no single peer dominates, times its
on-chain reputation at submission.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from .fixedpoint import (
    WEIGHT_BITS,
    clip_to_norm,
    dequantize,
    exact_sq_norm,
    normalized_weights,
    quantize,
)
from .models import state_to_vector, vector_to_state

__all__ = [
    "Contribution",
    "Aggregate",
    "RULES",
    "RULE_IDS",
    "fedavg_clipped",
    "coordinate_median",
    "trimmed_mean",
    "AggregationStrategy",
    "strategy_for",
]


@dataclass(frozen=True)
class Aggregate:
    """A rule's output: the aggregated delta (int64 fixed point) and the rows it included."""

    delta: torch.Tensor
    included: tuple[int, ...]


def _lower_median(values: list[int]) -> int:
    return sorted(values)[(len(values) - 1) // 2]


def _weighted_sum(rows: torch.Tensor, weights: list[int], keep: list[int]) -> torch.Tensor:
    w = normalized_weights([weights[i] for i in keep]) if sum(weights[i] for i in keep) > 0 else normalized_weights([1] * len(keep))
    acc = torch.zeros(rows.shape[1], dtype=torch.int64)
    for wi, i in zip(w.tolist(), keep):
        acc += rows[i] * wi
    return torch.div(acc, 1 << WEIGHT_BITS, rounding_mode="floor")


def fedavg_clipped(rows: torch.Tensor, weights: list[int], *, clip_sq: int = 0) -> Aggregate:
    """Reputation-weighted FedAvg with L2 norm clipping.

    McMahan et al., "Communication-Efficient Learning of Deep Networks from Decentralized
    Data" (AISTATS 2017), with per-update norm clipping as in McMahan et al., "Learning
    Differentially Private Recurrent Language Models" (ICLR 2018). ``clip_sq`` is the squared
    bound in fixed-point units; 0 clips to the lower median of the updates' norms.
    """
    n = rows.shape[0]
    norms = [exact_sq_norm(r) for r in rows]
    bound = clip_sq or _lower_median(norms)
    clipped = torch.stack([clip_to_norm(rows[i], norms[i], bound) for i in range(n)])
    keep = list(range(n))
    return Aggregate(_weighted_sum(clipped, weights, keep), tuple(keep))


def coordinate_median(rows: torch.Tensor, weights: list[int]) -> Aggregate:
    """Coordinate-wise median (lower median for an even count).

    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    (ICML 2018). Weights are not used: the median is the robust statistic itself.
    """
    values = torch.sort(rows, dim=0).values
    return Aggregate(values[(rows.shape[0] - 1) // 2].clone(), tuple(range(rows.shape[0])))


def trimmed_mean(rows: torch.Tensor, weights: list[int], *, trim: float = 0.2) -> Aggregate:
    """Coordinate-wise trimmed mean: drop the ``trim`` fraction of largest and smallest values.

    Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates"
    (ICML 2018).
    """
    n = rows.shape[0]
    k = min(int(n * trim), (n - 1) // 2)
    values = torch.sort(rows, dim=0).values[k : n - k]
    return Aggregate(torch.div(values.sum(0), n - 2 * k, rounding_mode="floor"), tuple(range(n)))


RULES = {"fedavg": fedavg_clipped, "median": coordinate_median, "trimmed-mean": trimmed_mean}
RULE_IDS = {name: i for i, name in enumerate(RULES)}


@dataclass(frozen=True)
class Contribution:
    """One valid update as the aggregation sees it."""

    member: int  # index on the contract's member list
    cid: str
    delta: dict[str, torch.Tensor]
    samples: int
    reputation: int


class AggregationStrategy(ABC):
    """Template: weights and canonical order here, the rule's math in a pure function."""

    name: str

    def __init__(self, *, sample_cap: int):
        if sample_cap <= 0:
            raise ValueError("sample_cap must be positive")
        self.sample_cap = sample_cap

    def weights(self, contributions: list[Contribution]) -> list[int]:
        return [min(max(c.samples, 0), self.sample_cap) * c.reputation for c in contributions]

    @abstractmethod
    def combine(self, rows: torch.Tensor, weights: list[int]) -> Aggregate: ...

    def aggregate(
        self, base: dict[str, torch.Tensor], contributions: list[Contribution]
    ) -> tuple[dict[str, torch.Tensor], list[Contribution]]:
        """New global state and the contributions included, from updates in any order."""
        ordered = sorted(contributions, key=lambda c: c.member)
        if not ordered:
            return {k: v.clone() for k, v in base.items()}, []
        rows = torch.stack([quantize(state_to_vector(c.delta)) for c in ordered])
        result = self.combine(rows, self.weights(ordered))
        new = quantize(state_to_vector(base)) + result.delta
        return vector_to_state(dequantize(new), base), [ordered[i] for i in result.included]


class _FedAvg(AggregationStrategy):
    name = "fedavg"

    def combine(self, rows, weights):
        return fedavg_clipped(rows, weights)


class _Median(AggregationStrategy):
    name = "median"

    def combine(self, rows, weights):
        return coordinate_median(rows, weights)


class _TrimmedMean(AggregationStrategy):
    name = "trimmed-mean"

    def combine(self, rows, weights):
        return trimmed_mean(rows, weights)


_STRATEGIES = {cls.name: cls for cls in (_FedAvg, _Median, _TrimmedMean)}


def strategy_for(name: str, *, sample_cap: int) -> AggregationStrategy:
    try:
        return _STRATEGIES[name](sample_cap=sample_cap)
    except KeyError:
        raise ValueError(f"unknown aggregation rule {name!r} (known: {', '.join(_STRATEGIES)})") from None
