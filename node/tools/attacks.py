"""Adversarial peer behaviours, for proving that the network holds up under attack.

Each attack is an ordinary plugin on the peer's hooks (``fedchain.node.peer.pipeline``): the
data it trains on, the update it publishes, and the vote it casts. ``fedchain node run --attack
NAME`` makes a real adversarial process that joins a network like any other peer.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from ..aggregation import Aggregate, AggregationRule, aggregate_round
from ..errors import ConfigError
from ..peer.pipeline import ABSTAIN, Plugin
from ..protocol.artifact import decode, encode
from ..protocol.cid import cid_to_digest, digest_to_cid
from ..ledger.updates import public_updates

__all__ = ["ATTACKS", "make_attack", "malicious_indices", "add_trigger", "BACKDOOR_TARGET"]

BACKDOOR_TARGET = 0


def add_trigger(x: np.ndarray) -> np.ndarray:
    """Stamp the backdoor trigger: the last 4 features (a corner patch of an image) at maximum."""
    out = x.copy()
    out[:, -4:] = out.max()
    return out


class SignFlip(Plugin):
    name = "signflip"

    def __init__(self, scale: float = 4.0):
        self.scale = scale

    def transform(self, delta, ctx):
        return {k: -self.scale * v for k, v in delta.items()}


class Scaling(Plugin):
    """Model replacement: boost the update so it dominates a plain average."""

    name = "scaling"

    def __init__(self, scale: float = 20.0):
        self.scale = scale

    def transform(self, delta, ctx):
        return {k: self.scale * v for k, v in delta.items()}


class GaussianNoise(Plugin):
    name = "noise"

    def __init__(self, sigma: float = 1.0):
        self.sigma = sigma

    def transform(self, delta, ctx):
        gen = torch.Generator().manual_seed(ctx.round)
        return {k: torch.randn(v.shape, generator=gen) * self.sigma for k, v in delta.items()}


class LabelFlip(Plugin):
    """Data poisoning: train on labels mapped c -> (classes - 1 - c)."""

    name = "labelflip"

    def prepare_data(self, data, rng):
        return replace(data, y=(data.classes - 1 - data.y).astype(np.int64))


class Backdoor(Plugin):
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


class FreeRider(Plugin):
    """Contributes nothing: resubmits the global model (a zero update), or a slightly perturbed
    copy of another peer's update of this round when one is already public (never, when updates
    are sealed: they are revealed only after the submission window)."""

    name = "freeride"

    def transform(self, delta, ctx):
        peer = ctx.peer
        for u in public_updates(peer.chain, ctx.round, from_block=peer.round_start_block(ctx.round), sealed=peer.sealed):
            if u.peer.lower() == peer.address.lower():
                continue
            try:
                other = decode(peer.store.get(u.cid), max_bytes=peer.task.max_update_bytes)
                return {k: v + 1e-6 * torch.randn_like(v) for k, v in other.tensors.items()}
            except Exception:
                continue
        return {k: torch.zeros_like(v) for k, v in delta.items()}


class Malformed(Plugin):
    """Submits artifacts no honest peer may use; cycles through the kinds, one per round."""

    name = "malformed"
    KINDS = ("nan", "inf", "shape", "dtype", "oversized", "not-safetensors")

    def publish(self, delta, ctx):
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


class LazyVoter(Plugin):
    """Votes without computing: copies the first vote another peer cast in this round, and
    abstains when there is none to copy (always, under commit-reveal)."""

    name = "lazyvote"

    def vote(self, ctx, honest):
        peer, round_ = ctx.peer, ctx.round
        for ev in peer.chain.events("VoteCast", from_block=peer.round_start_block(round_), round=round_):
            if ev.args.peer.lower() != peer.address.lower():
                return bytes(ev.args.model), int(ev.args.included)
        return ABSTAIN


class Colluder(SignFlip):
    """Submits a sign-flipped update and votes for the plain mean of every update (including the
    poisoned ones) instead of the robust aggregate."""

    name = "collude"

    def vote(self, ctx, honest):
        peer = ctx.peer
        _, base = peer.global_model(ctx.round)
        data, bitmap, _ = aggregate_round(base, peer.task, peer.task_cid, ctx.inputs, rule=_PlainMean())
        return cid_to_digest(peer.store.add(data, pin=True)), bitmap


class _PlainMean(AggregationRule):
    """The unweighted mean of every update, poisoned ones included: what colluders vote for."""

    name = "mean"
    rule_id = -1

    def combine(self, rows, weights):
        return Aggregate(torch.div(rows.sum(0), rows.shape[0], rounding_mode="floor"), tuple(range(rows.shape[0])))


class DagBomb(Plugin):
    """Publishes a content graph of a few hundred kilobytes that assembles to tens of gigabytes:
    one zero-filled chunk, a node linking to it 174 times, a node linking to that 174 times, and
    a root linking to that ``fanout`` times (3: 22 GiB from 278 KB of blocks). Odd rounds declare
    the true sizes; even rounds declare 1 KiB everywhere (a size lie), so both checks are met.

    ``add`` never builds such a graph, so the blocks are written raw (``put_block``: an embedded
    store only) and the peer's store is wrapped so that its ``add`` of this plugin's placeholder
    returns the bomb's root, which the peer then submits like any update.
    """

    name = "dagbomb"
    KINDS = ("true-sizes", "lying-sizes")
    _PLACEHOLDER = b"fedchain dagbomb placeholder"

    def __init__(self, fanout: int = 3):
        self.fanout = fanout

    def publish(self, delta, ctx):
        store = ctx.peer.store
        inner = store.inner if isinstance(store, _BombRoot) else store
        if not hasattr(inner, "put_block"):
            raise ConfigError("the dagbomb attack writes raw blocks and needs an embedded store")
        root = plant_dag_bomb(inner, ctx.round, fanout=self.fanout, lie=self.KINDS[(ctx.round - 1) % 2] == "lying-sizes")
        ctx.peer.store = _BombRoot(inner, self._PLACEHOLDER, root)
        return self._PLACEHOLDER


def plant_dag_bomb(store, salt: int, *, fanout: int = 3, lie: bool = False) -> str:
    """Write the blocks of a DAG bomb with ``put_block`` and return its root CID. The chunk
    starts with ``salt`` so that bombs of different rounds are different artifacts."""
    from ..protocol.cid import CHUNK_SIZE, MAX_LINKS, encode_file_node

    chunk = salt.to_bytes(8, "big") + bytes(CHUNK_SIZE - 8)
    leaf = encode_file_node([], 1024 if lie else CHUNK_SIZE, [], chunk)
    cid, tsize, size = store.put_block(leaf), len(leaf), CHUNK_SIZE
    for n in (MAX_LINKS, MAX_LINKS, fanout):
        sizes = [1024 // n] * (n - 1) + [1024 - (1024 // n) * (n - 1)] if lie else [size] * n
        node = encode_file_node([(cid, tsize)] * n, sum(sizes), sizes)
        cid, tsize, size = store.put_block(node), len(node) + n * tsize, n * size
    return cid


class _BombRoot:
    """The attacker's store, except that adding the placeholder yields the bomb's root."""

    def __init__(self, inner, placeholder: bytes, root: str):
        self.inner, self.placeholder, self.root = inner, placeholder, root

    def add(self, data, *, pin: bool = True) -> str:
        if data == self.placeholder:
            if pin:
                self.inner.pin(self.root)  # reads each distinct block once: cheap, however it expands
            return self.root
        return self.inner.add(data, pin=pin)

    def cid_of(self, data) -> str:
        return self.root if data == self.placeholder else self.inner.cid_of(data)

    def __getattr__(self, name):
        return getattr(self.inner, name)


ATTACKS: dict[str, type[Plugin]] = {
    cls.name: cls
    for cls in (SignFlip, Scaling, GaussianNoise, LabelFlip, Backdoor, FreeRider, Malformed, LazyVoter, Colluder, DagBomb)
}


def make_attack(name: str | None) -> list[Plugin]:
    """The plugin list of attack ``name``: empty (an honest peer) for None or ""."""
    if not name:
        return []
    try:
        return [ATTACKS[name]()]
    except KeyError:
        raise ConfigError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})") from None


def malicious_indices(peers: int, attack: str | None, fraction: float) -> list[int]:
    """The highest-indexed round(fraction * peers) members run ``attack``."""
    if not attack or fraction <= 0:
        return []
    k = min(peers, round(fraction * peers))
    return list(range(peers - k, peers))


class FrontRunner(Plugin):
    """Steals updates: reads another member's pending ``submit`` from the transaction pool and
    sends the same digest first, with a tip ``tip`` times the usual one. Falls back to a digest
    already recorded this round, and to its own update when there is nothing to copy.

    The copy is bound to its sender: the artifact names its author as ``peer``, honest validators
    exclude it, and the author's own submission still lands."""

    name = "frontrun"

    def __init__(self, tip: int = 20):
        self.tip = tip

    def publish(self, delta, ctx):
        peer = ctx.peer
        peer.chain.tip_multiplier = self.tip
        for digest in self._pending_digests(peer, ctx.round) + self._recorded_digests(peer, ctx.round):
            try:
                return peer.store.get(digest_to_cid(digest))
            except Exception:
                continue
        return None

    @staticmethod
    def _pending_digests(peer, round_: int) -> list[bytes]:
        try:
            pool = peer.chain.w3.provider.make_request("txpool_content", []).get("result") or {}
        except Exception:  # a node without the txpool namespace: nothing to read
            return []
        found = []
        for sender, txs in (pool.get("pending") or {}).items():
            if sender.lower() == peer.address.lower():
                continue
            for tx in txs.values():
                if (tx.get("to") or "").lower() != peer.chain.contract.address.lower():
                    continue
                try:
                    fn, args = peer.chain.contract.decode_function_input(tx.get("input") or tx.get("data"))
                except Exception:
                    continue
                if fn.fn_name == "submit" and int(args["round"]) == round_:
                    found.append(bytes(args["update"]))
        return found

    @staticmethod
    def _recorded_digests(peer, round_: int) -> list[bytes]:
        ups = public_updates(peer.chain, round_, from_block=peer.round_start_block(round_), sealed=peer.sealed)
        return [cid_to_digest(u.cid) for u in ups if u.peer.lower() != peer.address.lower()]


class Absent(Plugin):
    """A member that never takes part: it publishes nothing and never votes. (Stopping the
    process does the same; this lets an in-process trial keep the member on the list.)"""

    name = "absent"

    def publish(self, delta, ctx):
        from ..errors import ContractError

        raise ContractError("absent: this member takes no part")

    def vote(self, ctx, honest):
        return ABSTAIN


ATTACKS.update({cls.name: cls for cls in (FrontRunner, Absent)})
