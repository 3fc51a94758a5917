"""A task: what the network trains and how. Pinned as canonical JSON; its digest is on-chain."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from .aggregation import RULE_IDS
from .errors import ConfigError
from .models import ModelSpec
from .training import TrainConfig

__all__ = ["Task"]


@dataclass(frozen=True)
class Task:
    name: str
    dataset: str
    model: ModelSpec
    train: TrainConfig = field(default_factory=TrainConfig)
    rule: str = "fedavg"
    sample_cap: int = 1_000
    max_update_bytes: int = 16 << 20
    rounds: int = 5
    submit_blocks: int = 60
    vote_blocks: int = 60
    quorum_bps: int = 6_667
    reveal_blocks: int = 0  # > 0: commit-reveal voting with a reveal window this long

    def __post_init__(self):
        if self.rule not in RULE_IDS:
            raise ConfigError(f"unknown aggregation rule {self.rule!r} (known: {', '.join(RULE_IDS)})")
        if not 0 < self.quorum_bps <= 10_000:
            raise ConfigError("quorum must be in (0, 1]")
        if self.rounds < 1 or self.submit_blocks < 1 or self.vote_blocks < 1:
            raise ConfigError("rounds and window lengths must be at least 1")
        if self.reveal_blocks < 0:
            raise ConfigError("reveal window must not be negative")
        if self.sample_cap < 1:
            raise ConfigError("sample cap must be at least 1")

    @property
    def rule_id(self) -> int:
        return RULE_IDS[self.rule]

    def to_dict(self) -> dict:
        return {
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

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        try:
            return cls(
                name=str(d["name"]),
                dataset=str(d["dataset"]),
                model=ModelSpec.from_dict(d["model"]),
                train=TrainConfig.from_dict(d.get("train", {})),
                rule=str(d.get("rule", "fedavg")),
                sample_cap=int(d.get("sample_cap", 1_000)),
                max_update_bytes=int(d.get("max_update_bytes", 16 << 20)),
                rounds=int(d.get("rounds", 5)),
                submit_blocks=int(d.get("submit_blocks", 60)),
                vote_blocks=int(d.get("vote_blocks", 60)),
                quorum_bps=int(d.get("quorum_bps", 6_667)),
                reveal_blocks=int(d.get("reveal_blocks", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed task description: {exc}") from None

    @classmethod
    def from_bytes(cls, data: bytes) -> "Task":
        try:
            return cls.from_dict(json.loads(data))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"task description is not JSON: {exc}") from None
