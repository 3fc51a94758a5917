"""The template every aggregation rule follows, after Flower's ``Strategy``.

``AggregationRule.aggregate`` owns the round's loop: canonical member order, fixed-point
quantization, dropping free-riders, the weights, and applying the result to the global model.
A concrete rule fills in one step, ``combine``, which calls a pure function over exact int64
rows. A rule is a class with named parameters; its name, stable id and parameters are part of
the task description, pinned by the task's digest on chain.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from ..errors import ConfigError
from ..protocol.fixedpoint import dequantize, quantize, state_to_vector, vector_to_state
from ..protocol.round import Contribution
from ._exact import Aggregate, exact_products, median_rows

__all__ = ["AggregationRule", "drop_copies", "weights_of"]


def weights_of(contributions: list[Contribution], sample_cap: int) -> list[int]:
    """``min(samples, sample_cap) * reputation`` for each contribution, as exact integers."""
    return [min(max(c.samples, 0), sample_cap) * c.reputation for c in contributions]


def drop_copies(rows: torch.Tensor, positions: list[int], *, tolerance_bits: int = 10) -> list[int]:
    """Rows to keep, dropping free-riders: zero updates (the global model resubmitted) and any
    update within a relative L2 distance of 2**-tolerance_bits of one submitted earlier (a
    stale or slightly perturbed copy). Exact integer arithmetic, so every peer drops the same.

    The threat is described by Lin et al., "Free-riders in Federated Learning: Attacks and
    Defenses" (arXiv:1911.12560, 2019); this test is our own, simpler one.
    """
    n = rows.shape[0]
    if n == 0:
        return []
    gram = exact_products(rows)
    keep: list[int] = []
    for i in sorted(range(n), key=lambda k: (positions[k], k)):
        if gram[i][i] == 0:
            continue
        near = any((gram[i][i] + gram[j][j] - 2 * gram[i][j]) << (2 * tolerance_bits) <= gram[j][j] for j in keep)
        if not near:
            keep.append(i)
    return sorted(keep)



class AggregationRule(ABC):
    """Template: canonical order, copies, weights and fixed point here; the math in ``combine``."""

    name: ClassVar[str]
    rule_id: ClassVar[int]  # recorded on chain; never reuse or renumber
    works_on_sums: ClassVar[bool] = False  # usable when only sums of updates are visible

    def params(self) -> dict[str, Any]:
        """The rule's named parameters, canonical and JSON-ready (pinned with the task)."""
        return {}

    @abstractmethod
    def combine(self, rows: torch.Tensor, weights: list[int]) -> Aggregate:
        """The aggregated delta of int64 ``rows`` (one per update, member order) and the rows kept."""

    def aggregate(
        self, base: dict[str, torch.Tensor], contributions: list[Contribution], *, sample_cap: int
    ) -> tuple[dict[str, torch.Tensor], list[Contribution]]:
        """New global state and the contributions included, from updates in any order.

        Floating-point tensors go through ``combine``. Integer tensors (buffers such as
        BatchNorm's ``num_batches_tracked``) take the coordinate-wise lower median of the
        included updates' integer deltas, which is exact and needs no fixed point.
        """
        if sample_cap <= 0:
            raise ConfigError("sample_cap must be positive")
        ordered = sorted(contributions, key=lambda c: c.member)
        if not ordered:
            return {k: v.clone() for k, v in base.items()}, []
        floats = {k: v for k, v in base.items() if v.is_floating_point()}
        rows = torch.stack([quantize(state_to_vector({k: c.delta[k] for k in floats})) for c in ordered])
        originals = drop_copies(rows, [c.position for c in ordered])
        if not originals:
            return {k: v.clone() for k, v in base.items()}, []
        if len(originals) < len(ordered):
            rows, ordered = rows[originals], [ordered[i] for i in originals]
        result = self.combine(rows, weights_of(ordered, sample_cap))
        included = [ordered[i] for i in result.included]
        new = vector_to_state(dequantize(quantize(state_to_vector(floats)) + result.delta), floats)
        for name, value in base.items():
            if name in floats:
                continue
            if included:
                deltas = torch.stack([c.delta[name].reshape(-1).to(torch.int64) for c in included])
                step = median_rows(deltas).reshape(value.shape).to(value.dtype)
            else:
                step = torch.zeros_like(value)
            new[name] = value + step
        return new, included

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({shown})"
