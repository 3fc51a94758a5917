"""The peer's extension points, after Flower's client mods: an ordered list of plugins.

Each plugin may change what its peer does at four hooks, and passes through by default:

* ``prepare_data(data, rng)``: the local data the peer trains on;
* ``transform(delta, ctx)``: the local update before it is published (clip, add noise, mask...);
  plugins run in list order, each on the previous one's output;
* ``publish(delta, ctx)``: the artifact bytes to publish instead of the encoded update;
  the first plugin that returns bytes wins;
* ``vote(ctx, honest)``: the ballot to cast instead of the honest aggregate, or ``ABSTAIN``;
  the first plugin that returns a ballot wins.

Privacy steps and attack behaviours are ordinary plugins on these hooks. The runtime knows none
of them: whoever starts a peer passes the list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..ml.data import Dataset
from ..protocol.round import RoundInputs

__all__ = ["ABSTAIN", "Ballot", "UpdateContext", "VoteContext", "Plugin", "Pipeline", "ClipUpdate"]

Ballot = tuple[bytes, int]  # (model digest, included-member bitmap)
ABSTAIN: Ballot = (b"", -1)  # a vote hook's answer meaning: send no vote this round


@dataclass
class UpdateContext:
    """What the update hooks may read: the round, its base model, the artifact metadata, the peer."""

    round: int
    base_cid: str
    base: dict[str, torch.Tensor]
    metadata: dict
    peer: Any  # the Peer: its chain, store, task and public helpers


@dataclass
class VoteContext:
    """What the vote hook may read: the round, the inputs the honest aggregate came from, the peer."""

    round: int
    inputs: RoundInputs
    peer: Any
    honest_cid: str


class Plugin:
    """A step on the peer's hooks. Subclasses override the hooks they need."""

    name = "plugin"

    def prepare_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        return data

    def transform(self, delta: dict[str, torch.Tensor], ctx: UpdateContext) -> dict[str, torch.Tensor]:
        return delta

    def publish(self, delta: dict[str, torch.Tensor], ctx: UpdateContext) -> bytes | None:
        return None

    def vote(self, ctx: VoteContext, honest: Ballot) -> Ballot | None:
        return None

    def submitted(self, ctx: UpdateContext) -> None:
        """Called once this member's submission of ``ctx.round`` is on chain."""

    def publish_masked(self, data: bytes, ctx: UpdateContext) -> bytes | None:
        """Secure aggregation: other bytes to record as the masked update, or None to keep ``data``."""
        return None

    def unmasked(self, round_: int, peer) -> None:
        """Secure aggregation: called once this member's reveal of ``round_`` is on chain."""


class Pipeline:
    """Plugins composed in order; an empty pipeline is the honest peer."""

    def __init__(self, plugins: list[Plugin] | tuple[Plugin, ...] = ()):
        self.plugins = list(plugins)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.plugins]

    def prepare_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        for p in self.plugins:
            data = p.prepare_data(data, rng)
        return data

    def transform(self, delta: dict[str, torch.Tensor], ctx: UpdateContext) -> dict[str, torch.Tensor]:
        for p in self.plugins:
            delta = p.transform(delta, ctx)
        return delta

    def publish(self, delta: dict[str, torch.Tensor], ctx: UpdateContext) -> bytes | None:
        for p in self.plugins:
            data = p.publish(delta, ctx)
            if data is not None:
                return data
        return None

    def vote(self, ctx: VoteContext, honest: Ballot) -> Ballot | None:
        for p in self.plugins:
            chosen = p.vote(ctx, honest)
            if chosen is not None:
                return chosen
        return None

    def submitted(self, ctx: UpdateContext) -> None:
        for p in self.plugins:
            p.submitted(ctx)

    def publish_masked(self, data: bytes, ctx: UpdateContext) -> bytes:
        for p in self.plugins:
            data = p.publish_masked(data, ctx) or data
        return data

    def unmasked(self, round_: int, peer) -> None:
        for p in self.plugins:
            p.unmasked(round_, peer)


class ClipUpdate(Plugin):
    """Scale the update's floating-point tensors so that their joint L2 norm is at most ``max_norm``.

    Norm clipping bounds any one member's influence, and is the first step of differential
    privacy for updates (Abadi et al., "Deep Learning with Differential Privacy", CCS 2016;
    McMahan et al., ICLR 2018). It runs on the member's own update, before it is published.
    """

    name = "clip"

    def __init__(self, max_norm: float):
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise ConfigError(f"clip: max_norm must be a positive finite number, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def transform(self, delta, ctx):
        floats = [v for v in delta.values() if v.is_floating_point()]
        norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in floats))
        if norm <= self.max_norm:
            return delta
        factor = self.max_norm / norm
        return {k: (v * factor).to(v.dtype) if v.is_floating_point() else v for k, v in delta.items()}
