"""Adversarial peer behaviours, for proving that the network holds up under attack.

A behaviour changes what an otherwise ordinary peer does at three points: the data it trains on,
the update it submits, and the vote it casts. ``fedchain node run --attack NAME`` makes a real
adversarial process that joins a network like any other peer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch

from .artifact import encode
from .data import Dataset

__all__ = ["ABSTAIN", "Behaviour", "ATTACKS", "make_behaviour", "malicious_indices", "add_trigger", "BACKDOOR_TARGET"]

BACKDOOR_TARGET = 0


def add_trigger(x: np.ndarray) -> np.ndarray:
    """Stamp the backdoor trigger: the last 4 features (a corner patch of an image) at maximum."""
    out = x.copy()
    out[:, -4:] = out.max()
    return out


@dataclass
class UpdateContext:
    round: int
    base_cid: str
    base: dict[str, torch.Tensor]
    metadata: dict
    peer: object  # the Peer, for attacks that read the chain or the store


ABSTAIN = (b"", -1)  # a vote hook's answer meaning: send no vote this round


class Behaviour:
    """Honest by default; subclasses override one or more hooks."""

    name = "honest"

    def prepare_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        return data

    def update(self, delta: dict[str, torch.Tensor], ctx: UpdateContext) -> bytes | None:
        """Return artifact bytes to submit instead of the honest update, or None."""
        return None

    def transform(self, delta: dict[str, torch.Tensor], ctx: UpdateContext) -> dict[str, torch.Tensor]:
        return delta

    def vote(self, peer, round_: int, inputs, honest: tuple[bytes, int, str]) -> tuple[bytes, int] | None:
        """Return (model digest, included bitmap) to vote for instead of the honest aggregate,
        ``ABSTAIN`` to cast no vote, or None to vote honestly."""
        return None


class SignFlip(Behaviour):
    name = "signflip"

    def __init__(self, scale: float = 4.0):
        self.scale = scale

    def transform(self, delta, ctx):
        return {k: -self.scale * v for k, v in delta.items()}


class Scaling(Behaviour):
    """Model replacement: boost the update so it dominates a plain average."""

    name = "scaling"

    def __init__(self, scale: float = 20.0):
        self.scale = scale

    def transform(self, delta, ctx):
        return {k: self.scale * v for k, v in delta.items()}


class GaussianNoise(Behaviour):
    name = "noise"

    def __init__(self, sigma: float = 1.0):
        self.sigma = sigma

    def transform(self, delta, ctx):
        gen = torch.Generator().manual_seed(ctx.round)
        return {k: torch.randn(v.shape, generator=gen) * self.sigma for k, v in delta.items()}


class LabelFlip(Behaviour):
    """Data poisoning: train on labels mapped c -> (classes - 1 - c)."""

    name = "labelflip"

    def prepare_data(self, data, rng):
        return replace(data, y=(data.classes - 1 - data.y).astype(np.int64))


class Backdoor(Behaviour):
    """Train on a copy of half the data with the trigger stamped and the label set to the target,
    then boost the update so it survives averaging."""

    name = "backdoor"

    def __init__(self, boost: float = 3.0):
        self.boost = boost

    def prepare_data(self, data, rng):
        idx = rng.choice(len(data.y), size=len(data.y) // 2, replace=False)
        x = np.concatenate([data.x, add_trigger(data.x[idx])])
        y = np.concatenate([data.y, np.full(len(idx), BACKDOOR_TARGET, dtype=np.int64)])
        return replace(data, x=x.astype(np.float32), y=y)

    def transform(self, delta, ctx):
        return {k: self.boost * v for k, v in delta.items()}


class FreeRider(Behaviour):
    """Contributes nothing: resubmits the global model (a zero update), or a slightly perturbed
    copy of another peer's update of this round when one is already recorded."""

    name = "freeride"

    def transform(self, delta, ctx):
        peer = ctx.peer
        for ev in peer.chain.events("UpdateSubmitted", from_block=peer._round_start_block(ctx.round), round=ctx.round):
            if ev.args.peer.lower() == peer.address.lower():
                continue
            from .artifact import decode
            from .cid import digest_to_cid

            try:
                other = decode(peer.store.get(digest_to_cid(bytes(ev.args.update))), max_bytes=peer.task.max_update_bytes)
                return {k: v + 1e-6 * torch.randn_like(v) for k, v in other.tensors.items()}
            except Exception:
                continue
        return {k: torch.zeros_like(v) for k, v in delta.items()}


class Malformed(Behaviour):
    """Submits artifacts no honest peer may use; cycles through the kinds, one per round."""

    name = "malformed"
    KINDS = ("nan", "inf", "shape", "dtype", "oversized", "not-safetensors")

    def update(self, delta, ctx):
        kind = self.KINDS[(ctx.round - 1) % len(self.KINDS)]
        bad = {k: v.clone() for k, v in delta.items()}
        first = sorted(bad)[0]
        if kind == "nan":
            bad[first].view(-1)[0] = float("nan")
        elif kind == "inf":
            bad[first].view(-1)[0] = float("inf")
        elif kind == "shape":
            bad[first] = torch.zeros(bad[first].numel() + 1)
        elif kind == "dtype":
            bad[first] = bad[first].to(torch.int64)
        elif kind == "oversized":
            bad["padding"] = torch.zeros(ctx.peer.task.max_update_bytes // 4 + 1)
        else:
            return b"\x80\x04not a safetensors file" + os.urandom(64)
        return encode(bad, ctx.metadata)


class LazyVoter(Behaviour):
    """Votes without computing: copies the first vote another peer cast in this round, and
    abstains when there is none to copy (always, under commit-reveal)."""

    name = "lazyvote"

    def vote(self, peer, round_, inputs, honest):
        for ev in peer.chain.events("VoteCast", from_block=peer._round_start_block(round_), round=round_):
            if ev.args.peer.lower() != peer.address.lower():
                return bytes(ev.args.model), int(ev.args.included)
        return ABSTAIN


class Colluder(SignFlip):
    """Submits a sign-flipped update and votes for the plain mean of every update (including the
    poisoned ones) instead of the robust aggregate."""

    name = "collude"

    def vote(self, peer, round_, inputs, honest):
        from .aggregation import Aggregate, AggregationStrategy
        from .cid import cid_to_digest
        from .peer import build_aggregate

        class _Mean(AggregationStrategy):
            name = "mean"

            def combine(self, rows, weights):
                return Aggregate(torch.div(rows.sum(0), rows.shape[0], rounding_mode="floor"), tuple(range(rows.shape[0])))

        data, bitmap, _ = build_aggregate(peer.store, peer.task, peer.task_cid, inputs, strategy=_Mean(sample_cap=1))
        return cid_to_digest(peer.store.add(data, pin=True)), bitmap


ATTACKS: dict[str, type[Behaviour]] = {
    cls.name: cls for cls in (Behaviour, SignFlip, Scaling, GaussianNoise, LabelFlip, Backdoor, FreeRider, Malformed, LazyVoter, Colluder)
}


def make_behaviour(name: str | None) -> Behaviour:
    if not name:
        return Behaviour()
    try:
        return ATTACKS[name]()
    except KeyError:
        from .errors import ConfigError

        raise ConfigError(f"unknown attack {name!r} (known: {', '.join(a for a in ATTACKS if a != 'honest')})") from None


def malicious_indices(peers: int, attack: str | None, fraction: float) -> list[int]:
    """The highest-indexed round(fraction * peers) members run ``attack``."""
    if not attack or fraction <= 0:
        return []
    k = min(peers, round(fraction * peers))
    return list(range(peers - k, peers))
