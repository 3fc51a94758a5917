"""A round's aggregate artifact, as every honest peer and any auditor computes it."""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..protocol.artifact import encode
from ..protocol.fixedpoint import dequantize
from ..protocol.round import Bucket, Contribution, RoundInputs, model_metadata
from ..protocol.task import Task
from .base import AggregationRule
from .registry import make_rule

__all__ = ["rule_of", "pin_rule", "aggregate_round", "bucket_delta", "check_secure_rule", "check_secure_bits"]


def rule_of(task: Task) -> AggregationRule:
    """The aggregation rule a task pins, with its parameters."""
    return make_rule(task.rule, task.rule_options)


def pin_rule(task: Task) -> Task:
    """``task`` with its rule's parameters as resolved (defaults included), so that a later change
    of a default can never change what an existing task means. Raises ``ConfigError`` for an
    unknown rule or bad parameters."""
    return replace(task, rule_params=tuple(sorted(rule_of(task).params().items())))


def check_secure_rule(task: Task, members: int) -> None:
    """Refuse (``ConfigError``) a secure-aggregation task its rule cannot run: with one bucket the
    rule sees a single sum, so it must be one that works on sums; with several it runs over the
    bucket means. Also refuses buckets and a threshold the members cannot fill."""
    from ..errors import ConfigError

    sa = task.secure_aggregation
    if sa is None:
        return
    sa.check_members(members)
    rule = rule_of(task)
    if sa.buckets == 1 and not rule.works_on_sums:
        raise ConfigError(f"rule {task.rule} needs individual updates, and secure aggregation with one bucket shows only "
                          "their sum: use --buckets B (B >= 2: the rule runs over the bucket means), or a rule that works "
                          "on sums (fedavg with exclude_opposed=false, fedavg-plain)")


def check_secure_bits(sa, schema: dict, members: int) -> None:
    """Refuse (``ConfigError``) masking below 64 bits for a model (``schema``: name -> (shape,
    dtype)) with integer tensors (the rotation and scaling are for floating updates), or a clip,
    noise and model size whose codec would not fit 64-bit integers (``secagg/quantize.py``)."""
    from ..errors import ConfigError
    from ..secagg.quantize import codec_for

    if sa is None or sa.bits == 64:
        return
    if ints := sorted(name for name, (_, dtype) in schema.items() if dtype != "F32"):
        raise ConfigError(f"--sa-bits {sa.bits} needs a model with only floating-point tensors; {ints[0]} is {schema[ints[0]][1]}")
    length = sum(math.prod(shape) for shape, _ in schema.values())
    try:
        codec_for(sa, members=members, length=length)
    except ValueError as exc:
        raise ConfigError(f"--sa-bits {sa.bits}: {exc}") from None


def bucket_delta(bucket: Bucket, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A bucket's mean update as a state delta: its exact integer sum divided (floor) by its size;
    floating tensors back from fixed point, integer buffers kept integer."""
    mean = torch.div(bucket.total, len(bucket.members), rounding_mode="floor")
    out, pos = {}, 0
    for name in sorted(like):
        n = like[name].numel()
        part = mean[pos:pos + n].reshape(like[name].shape)
        out[name] = dequantize(part) if like[name].is_floating_point() else part.to(like[name].dtype)
        pos += n
    return out


def _aggregate_buckets(base, task, task_cid, inputs, rule) -> tuple[bytes, int, list[Contribution]]:
    """Secure aggregation: the rule over the bucket means, each weighted by its member count (every
    member's update counts once: sample counts and reputations are not applied under masking)."""
    buckets = {min(b.members): b for b in inputs.buckets}
    pseudo = [Contribution(key, b.cids, bucket_delta(b, base), len(b.members), 1, key) for key, b in sorted(buckets.items())]
    new_state, kept = rule.aggregate(base, pseudo, sample_cap=1 << 16)
    included = [m for c in kept for m in buckets[c.member].members]
    bitmap = 0
    for m in included:
        bitmap |= 1 << m
    meta = model_metadata(task_cid, inputs.round, inputs.base_cid, rule=task.rule, included=hex(bitmap),
                          updates=",".join(c.cid for c in kept), secure_buckets=len(pseudo))
    chosen = set(included)
    return encode(new_state, meta), bitmap, [c for c in inputs.contributions if c.member in chosen]


def aggregate_round(
    base: dict[str, torch.Tensor], task: Task, task_cid: str, inputs: RoundInputs, *, rule: AggregationRule | None = None
) -> tuple[bytes, int, list[Contribution]]:
    """The aggregate artifact bytes, its included-member bitmap, and the included contributions."""
    rule = rule or rule_of(task)
    if inputs.buckets is not None:
        return _aggregate_buckets(base, task, task_cid, inputs, rule)
    new_state, included = rule.aggregate(base, inputs.contributions, sample_cap=task.sample_cap)
    bitmap = 0
    for c in included:
        bitmap |= 1 << c.member
    meta = model_metadata(
        task_cid, inputs.round, inputs.base_cid, rule=task.rule, included=hex(bitmap),
        updates=",".join(c.cid for c in included),
    )
    return encode(new_state, meta), bitmap, included
