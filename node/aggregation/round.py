"""A round's aggregate artifact, as every honest peer and any auditor computes it."""
from __future__ import annotations

from dataclasses import replace

import torch

from ..protocol.artifact import encode
from ..protocol.round import Contribution, RoundInputs, model_metadata
from ..protocol.task import Task
from .base import AggregationRule
from .registry import make_rule

__all__ = ["rule_of", "pin_rule", "aggregate_round"]


def rule_of(task: Task) -> AggregationRule:
    """The aggregation rule a task pins, with its parameters."""
    return make_rule(task.rule, task.rule_options)


def pin_rule(task: Task) -> Task:
    """``task`` with its rule's parameters as resolved (defaults included), so that a later change
    of a default can never change what an existing task means. Raises ``ConfigError`` for an
    unknown rule or bad parameters."""
    return replace(task, rule_params=tuple(sorted(rule_of(task).params().items())))


def aggregate_round(
    base: dict[str, torch.Tensor], task: Task, task_cid: str, inputs: RoundInputs, *, rule: AggregationRule | None = None
) -> tuple[bytes, int, list[Contribution]]:
    """The aggregate artifact bytes, its included-member bitmap, and the included contributions."""
    rule = rule or rule_of(task)
    new_state, included = rule.aggregate(base, inputs.contributions, sample_cap=task.sample_cap)
    bitmap = 0
    for c in included:
        bitmap |= 1 << c.member
    meta = model_metadata(
        task_cid, inputs.round, inputs.base_cid, rule=task.rule, included=hex(bitmap),
        updates=",".join(c.cid for c in included),
    )
    return encode(new_state, meta), bitmap, included
