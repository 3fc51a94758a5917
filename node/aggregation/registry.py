"""The one registry of aggregation rules. Adding a rule: one module, one line in ``RULES``.

Rule ids are recorded on chain by existing deployments: a new rule takes a new id, and no id is
ever reused or renumbered (a test pins them).
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import AggregationRule
from .coordinate import Median, TrimmedMean
from .krum import MultiKrum
from .mean import FedAvg, PlainFedAvg
from .trust import TrustCosine

__all__ = ["RULES", "RULE_IDS", "make_rule"]

RULES: dict[str, type[AggregationRule]] = {
    cls.name: cls for cls in (FedAvg, Median, TrimmedMean, MultiKrum, TrustCosine, PlainFedAvg)
}
RULE_IDS: dict[str, int] = {name: cls.rule_id for name, cls in RULES.items()}


def make_rule(name: str, params: dict[str, Any] | None = None) -> AggregationRule:
    """The rule ``name`` built with its named ``params``; ``ConfigError`` if either is unknown."""
    try:
        cls = RULES[name]
    except KeyError:
        raise ConfigError(f"unknown aggregation rule {name!r} (known: {', '.join(RULES)})") from None
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise ConfigError(f"{name}: bad rule parameters {sorted(params or {})}: {exc}") from None
