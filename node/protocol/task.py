"""A task: what the network trains and how. Pinned as canonical JSON; its digest is on-chain.

Pure data: which model architecture (by registry name, see ``fedchain.node.ml.models``), how a
peer trains, which aggregation rule with which parameters (see ``fedchain.node.aggregation``),
and the round timing. Nothing here imports torch, web3 or the store.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

__all__ = ["ModelSpec", "TrainConfig", "Task", "UINT32_MAX"]

UINT32_MAX = (1 << 32) - 1  # rounds and windows are uint32 in the contract


@dataclass(frozen=True)
class ModelSpec:
    """An architecture from the model registry, with its input and output sizes.

    ``params`` holds the architecture's own settings (for ``mlp``: ``hidden``, the widths of the
    hidden layers). The architecture name is checked against the registry when a model is built.
    """

    inputs: int
    classes: int
    hidden: tuple[int, ...] = (64,)
    arch: str = "mlp"
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not isinstance(self.arch, str) or not self.arch:
            raise ConfigError("model architecture must be a non-empty name")
        if self.inputs <= 0 or self.classes < 2 or any(h <= 0 for h in self.hidden):
            raise ConfigError("model sizes must be positive, with at least two classes")

    @property
    def options(self) -> dict[str, Any]:
        """Keyword arguments for the architecture's builder beyond inputs and classes."""
        out = dict(self.params)
        if self.arch == "mlp":
            out["hidden"] = self.hidden
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        extra = {k: v for k, v in d.items() if k not in ("arch", "inputs", "classes", "hidden")}
        return cls(
            inputs=int(d["inputs"]), classes=int(d["classes"]),
            hidden=tuple(int(h) for h in d.get("hidden", (64,))), arch=str(d.get("arch", "mlp")),
            params=tuple(sorted(extra.items())),
        )

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"arch": self.arch, "inputs": self.inputs, "classes": self.classes}
        if self.arch == "mlp":
            out["hidden"] = list(self.hidden)
        out.update(dict(self.params))
        return out


@dataclass(frozen=True)
class TrainConfig:
    """How each peer trains locally: SGD with momentum, ``epochs`` passes over its shard."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9

    def __post_init__(self):
        if not 1 <= self.epochs <= 10_000:
            raise ConfigError(f"epochs must be between 1 and 10000, got {self.epochs}")
        if not 1 <= self.batch_size <= 1 << 20:
            raise ConfigError(f"batch size must be between 1 and 1048576, got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate must be a positive finite number, got {self.lr}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "momentum": self.momentum}


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    rule: str = "fedavg"
    rule_params: tuple[tuple[str, Any], ...] = ()  # the rule's named parameters, pinned with the task
    sample_cap: int = 1_000
    max_update_bytes: int = 16 << 20
    rounds: int = 5
    submit_blocks: int = 60
    vote_blocks: int = 60
    quorum_bps: int = 6_667
    reveal_blocks: int = 0  # > 0: commit-reveal voting with a reveal window this long

    def __post_init__(self):
        if not 5_000 <= self.quorum_bps <= 10_000:
            raise ConfigError(f"quorum must be between 1/2 and 1 of the reputation (a minority must never finalize), got {self.quorum_bps / 10_000:g}")
        for what, value in (("rounds", self.rounds), ("submission window", self.submit_blocks),
                            ("voting window", self.vote_blocks)):
            if not 1 <= value <= UINT32_MAX:
                raise ConfigError(f"{what} must be between 1 and {UINT32_MAX}, got {value}")
        if not 0 <= self.reveal_blocks <= UINT32_MAX:
            raise ConfigError(f"reveal window must be between 0 and {UINT32_MAX}, got {self.reveal_blocks}")
        if self.sample_cap < 1:
            raise ConfigError("sample cap must be at least 1")
        if self.max_update_bytes < 1:
            raise ConfigError("the update size limit must be positive")

    @property
    def rule_options(self) -> dict[str, Any]:
        return dict(self.rule_params)

    def to_dict(self) -> dict:
        out = {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "rule": self.rule,
            "sample_cap": self.sample_cap,
            "max_update_bytes": self.max_update_bytes,
            "rounds": self.rounds,
            "submit_blocks": self.submit_blocks,
            "vote_blocks": self.vote_blocks,
            "quorum_bps": self.quorum_bps,
            "reveal_blocks": self.reveal_blocks,
        }
        if self.rule_params:
            out["rule_params"] = dict(self.rule_params)
        return out

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        try:
            params = d.get("rule_params", {})
            if not isinstance(params, dict):
                raise TypeError("rule_params must be an object")
            return cls(
                name=str(d["name"]),
                dataset=str(d["dataset"]),
                model=ModelSpec.from_dict(d["model"]),
                train=TrainConfig.from_dict(d.get("train", {})),
                rule=str(d.get("rule", "fedavg")),
                rule_params=tuple(sorted(params.items())),
                sample_cap=int(d.get("sample_cap", 1_000)),
                max_update_bytes=int(d.get("max_update_bytes", 16 << 20)),
                rounds=int(d.get("rounds", 5)),
                submit_blocks=int(d.get("submit_blocks", 60)),
                vote_blocks=int(d.get("vote_blocks", 60)),
                quorum_bps=int(d.get("quorum_bps", 6_667)),
                reveal_blocks=int(d.get("reveal_blocks", 0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed task description: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> "Task":
        try:
            return cls.from_dict(json.loads(data))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"task description is not JSON: {exc}") from None
