"""Adversarial peer behaviours, for proving that the network holds up under attack.

Each attack is an ordinary plugin on the peer's hooks (``fedchain.node.peer.pipeline``): the
data it trains on, the update it publishes, and the vote it casts. ``fedchain node run --attack
NAME`` makes a real adversarial process that joins a network like any other peer.
"""
from __future__ import annotations

import hashlib
import os
import statistics
import threading
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from ..aggregation import Aggregate, AggregationRule, aggregate_round
from ..errors import ConfigError
from ..ledger.updates import collect_updates
from ..peer.pipeline import ABSTAIN, Plugin
from ..protocol.artifact import decode, encode
from ..protocol.cid import cid_to_digest, digest_to_cid
from ..ledger.updates import public_updates
from ..protocol.fixedpoint import dequantize, quantize

__all__ = [
    "ATTACKS", "ADAPTIVE", "make_attack", "malicious_indices", "add_trigger", "BACKDOOR_TARGET",
    "alie_z", "alie_update", "ipm_update", "deviation", "search_gamma", "minmax_agnostic", "minmax_tailored",
    "colluder_perturbation", "visible_updates",
]

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


# ---------------------------------------------------------------------------- adaptive attacks
#
# The math of each attack is a pure function over NumPy arrays: ``benign`` holds one flattened
# benign update per row (float64). The plugins below gather those rows from what the protocol
# makes public and turn the crafted vector back into an update.


def alie_z(n: int, m: int) -> float:
    """The z of "A Little Is Enough" (Baruch et al., NeurIPS 2019) for ``n`` workers, ``m`` malicious.

    ``s = floor(n / 2 + 1) - m`` is the number of benign workers the attackers need on their side
    for a majority; ``z = Phi^-1((n - s) / n)``, so that about ``s`` benign values per coordinate
    lie farther from the mean than the crafted one. Clamped to [0, Phi^-1(1 - 1e-6)].
    """
    if n < 1 or not 0 <= m <= n:
        raise ValueError(f"ALIE needs 0 <= m <= n and n >= 1 (n={n}, m={m})")
    s = n // 2 + 1 - m
    p = min(max((n - s) / n, 0.5), 1 - 1e-6)
    return statistics.NormalDist().inv_cdf(p)


def alie_update(benign: np.ndarray, z: float) -> np.ndarray:
    """ALIE (Baruch et al., NeurIPS 2019): the coordinate-wise benign mean minus ``z`` standard deviations."""
    return benign.mean(axis=0) - z * benign.std(axis=0)


def ipm_update(benign: np.ndarray, epsilon: float = 0.5) -> np.ndarray:
    """Inner-product manipulation (Xie et al., "Fall of Empires", UAI 2020): ``-epsilon`` times the
    benign mean, so that the aggregate's inner product with the true gradient turns negative."""
    return -epsilon * benign.mean(axis=0)


def deviation(benign: np.ndarray, kind: str = "std") -> np.ndarray:
    """A perturbation direction of Shejwalkar and Houmansadr (NDSS 2021): ``std`` (the
    coordinate-wise standard deviation), ``unit`` (the benign mean's unit vector) or ``sign`` (its
    sign); the crafted update is ``mean - gamma * direction``."""
    mean = benign.mean(axis=0)
    if kind == "std":
        return benign.std(axis=0)
    if kind == "unit":
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else mean
    if kind == "sign":
        return np.sign(mean)
    raise ValueError(f"unknown perturbation {kind!r} (std, unit, sign)")


def search_gamma(feasible: Callable[[float], bool], *, gamma_init: float = 10.0, tol: float = 1e-5, max_steps: int = 64) -> float:
    """The largest scaling ``gamma`` found feasible by the halving search of Shejwalkar and
    Houmansadr, "Manipulating the Byzantine" (NDSS 2021), Algorithm 1: step up by half the last
    step while feasible, down while not; 0 when no tried value is feasible. Searches (0, 2 gamma_init)."""
    gamma, step, best = gamma_init, gamma_init / 2, 0.0
    for _ in range(max_steps):
        if abs(best - gamma) <= tol:
            break
        if feasible(gamma):
            best = gamma
            gamma += step
        else:
            gamma -= step
        step /= 2
    return best


def _max_distance_to(rows: np.ndarray, x: np.ndarray) -> float:
    return float(np.sqrt(((rows - x) ** 2).sum(axis=1)).max())


def _max_pairwise(rows: np.ndarray) -> float:
    sq = (rows * rows).sum(axis=1)
    d2 = sq[:, None] + sq[None, :] - 2 * rows @ rows.T
    return float(np.sqrt(max(float(d2.max()), 0.0)))


def minmax_agnostic(benign: np.ndarray, kind: str = "std", **search) -> np.ndarray:
    """AGR-agnostic Min-Max (Shejwalkar and Houmansadr, NDSS 2021): ``mean - gamma * p`` with the
    largest gamma whose distance to every benign update is at most the largest distance between
    two benign updates, so it hides inside the benign cloud while pulling as far as it can."""
    mean, p = benign.mean(axis=0), deviation(benign, kind)
    bound = _max_pairwise(benign)
    gamma = search_gamma(lambda g: _max_distance_to(benign, mean - g * p) <= bound, **search)
    return mean - gamma * p


def minmax_tailored(benign: np.ndarray, accepts: Callable[[np.ndarray], bool], kind: str = "std", **search) -> np.ndarray:
    """AGR-tailored Min-Max (Shejwalkar and Houmansadr, NDSS 2021): ``mean - gamma * p`` with the
    largest gamma the aggregation rule in use still ``accepts`` (for Krum: still selects; for
    median and trimmed mean: still moves the aggregate farther from the benign mean)."""
    mean, p = benign.mean(axis=0), deviation(benign, kind)
    gamma = search_gamma(lambda g: accepts(mean - g * p), **search)
    return mean - gamma * p


def colluder_perturbation(x: np.ndarray, key: str, round_: int, *, relative: float = 2.0**-8) -> np.ndarray:
    """A tiny, deterministic perturbation of ``x`` for colluder ``key`` in round ``round_``: a random
    direction of norm ``relative * |x|``. The free-rider test (``drop_copies``) drops an update
    within relative distance 2**-10 of an earlier one, so colluders sending exact copies would
    lose all but one; 2**-8 apart they all count, while still pulling the same way. Each
    colluder can compute every other colluder's perturbation (the key is its address)."""
    seed = int.from_bytes(hashlib.sha256(f"{key.lower()}:{round_}".encode()).digest()[:8], "big")
    g = np.random.default_rng(seed).standard_normal(x.shape)
    return x + g * (relative * float(np.linalg.norm(x)) / max(float(np.linalg.norm(g)), 1e-300))


def visible_updates(peer, round_: int):
    """The updates of ``round_`` that are public right now (validated, as every peer reads them).

    ``collect_updates`` reads them through ``public_updates``: in a plain task, every update whose
    digest is on chain; in a sealed task, only revealed ones, so none while submissions are open."""
    return collect_updates(peer.chain, peer.store, peer.task, peer.task_cid, round_, peer.base_of(round_),
                           schema=peer.schema, from_block=peer.round_start_block(round_), members=peer.members,
                           sealed=getattr(peer, "sealed", False))


# The colluders' default private channel: the benign update each colluder computed, per (task,
# round). It only joins colluders in one process (the experiment engine); across processes each
# colluder knows its own benign update only. It never waits: a colluder sees the colluders that
# trained before it. ``Collusion`` is the channel that waits for the whole team.
_BOARD: dict[tuple[str, int], dict[str, np.ndarray]] = {}
_CRAFTED: dict[tuple, np.ndarray] = {}
_CRAFT_LOCK = threading.Lock()


class Collusion:
    """A colluding team's private channel inside one process (the experiment engine runs the
    whole team there, one thread per colluder): each colluder posts its benign update of a round,
    and ``gather`` waits (at most ``timeout`` seconds) until all ``size`` colluders have, so that
    every colluder crafts from the same rows: the team's full knowledge, as real colluders talking
    off-chain would have it."""

    def __init__(self, size: int, *, timeout: float = 300.0):
        self.size, self.timeout = size, timeout
        self._cond = threading.Condition()
        self._rows: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def post(self, task_cid: str, round_: int, address: str, row: np.ndarray) -> None:
        with self._cond:
            for key in [k for k in self._rows if k[0] == task_cid and k[1] < round_ - 1]:
                del self._rows[key]
            self._rows.setdefault((task_cid, round_), {})[address.lower()] = row
            self._cond.notify_all()

    def gather(self, task_cid: str, round_: int) -> list[np.ndarray]:
        """Every posted benign update of the round, in address order, once the team is complete
        (or the timeout passed)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._rows.get((task_cid, round_), {})) >= self.size, timeout=self.timeout)
            return [v for _, v in sorted(self._rows.get((task_cid, round_), {}).items())]


def _floats(delta: dict[str, torch.Tensor]) -> list[str]:
    return sorted(k for k, v in delta.items() if v.is_floating_point())


def _flatten(delta: dict[str, torch.Tensor], keys: list[str]) -> np.ndarray:
    return torch.cat([delta[k].detach().reshape(-1).to(torch.float64) for k in keys]).numpy()


class _Adaptive(Plugin):
    """An omniscient, colluding attacker: crafts its update from every benign update it can see,
    omniscient as far as the protocol allows.

    Plain task: it waits (until every non-colluding member's update of the round is public, the
    submission window is ``margin`` of its length from closing, or ``max_wait`` seconds pass) and
    crafts from the public honest updates. Sealed task (``peer.sealed``): nothing of the round is
    public before its submission window closes, so it does not wait; it crafts from everything
    public or its team's own: the colluders' benign updates of the round (all of them through a
    ``Collusion`` channel, else those on the in-process board) plus the previous round's revealed
    honest updates, computed from the public global model like every update. The same fallback
    applies to a plain task where fewer than two honest updates became visible. Every colluder
    sends the same crafted vector, with its own tiny perturbation (``colluder_perturbation``).
    """

    takes_colluders = True
    spread = 2.0**-8  # each colluder's perturbation, relative to the crafted vector's norm

    def __init__(self, colluders=(), *, channel: Collusion | None = None, max_wait: float = 120.0, margin: float = 0.2):
        self.colluders = {c.lower() for c in colluders}
        self.channel = channel
        self.max_wait, self.margin = max_wait, margin

    def craft(self, benign: np.ndarray, ctx, m: int) -> np.ndarray:
        raise NotImplementedError

    def _tune(self, benign: np.ndarray) -> None:
        """Adjust to the round's benign rows before crafting (the spread variants)."""

    def _team(self, peer) -> list[str]:
        """The colluders' addresses that are members, in member order (this peer included)."""
        team = self.colluders | {peer.address.lower()}
        return [a.lower() for a in peer.members if a.lower() in team]

    def _benign_rows(self, ctx, keys: list[str], own: np.ndarray) -> np.ndarray:
        peer, r = ctx.peer, ctx.round
        team = set(self._team(peer))
        wanted = sum(1 for a in peer.members if a.lower() not in team)
        closes = peer.round_start_block(r) + peer.task.submit_blocks
        stop_block = closes - max(1, int(self.margin * peer.task.submit_blocks))
        give_up = time.monotonic() + self.max_wait
        honest = []
        while not getattr(peer, "sealed", False):  # sealed: nothing of this round is public before it closes
            try:
                inputs = visible_updates(peer, r)
                honest = [c for c in inputs.contributions if peer.members[c.member].lower() not in team]
            except Exception:  # noqa: BLE001 - nothing visible yet is not an error for the attacker
                honest = []
            if len(honest) >= wanted or peer.chain.block_number() >= stop_block or time.monotonic() >= give_up:
                break
            time.sleep(getattr(peer, "poll", 0.5))
        rows = [_flatten(c.delta, keys) for c in honest]
        if len(rows) >= 2:
            return np.stack(rows)
        # Sealed updates: the colluders' own benign updates, and last round's public ones.
        if self.channel is not None:
            rows += self.channel.gather(peer.task_cid, r) or [own]
        else:
            board = _BOARD.get((peer.task_cid, r), {})
            rows += [v for a, v in sorted(board.items())] or [own]
        if r > 1:
            try:
                rows += [_flatten(c.delta, keys) for c in visible_updates(peer, r - 1).contributions
                         if peer.members[c.member].lower() not in team]
            except Exception:  # noqa: BLE001
                pass
        return np.stack(rows)

    def transform(self, delta, ctx):
        peer = ctx.peer
        keys = _floats(delta)
        own = _flatten(delta, keys)
        if self.channel is not None:
            self.channel.post(peer.task_cid, ctx.round, peer.address, own)
        else:
            for key in [k for k in _BOARD if k[0] == peer.task_cid and k[1] < ctx.round - 1]:
                del _BOARD[key]
            _BOARD.setdefault((peer.task_cid, ctx.round), {})[peer.address.lower()] = own
        benign = self._benign_rows(ctx, keys, own)
        self._tune(benign)
        # Colluders in one process craft once per round from the same rows and share the result.
        key = (peer.task_cid, ctx.round, self.name, hashlib.sha256(benign.tobytes()).hexdigest())
        with _CRAFT_LOCK:
            if key not in _CRAFTED:
                _CRAFTED.clear()
                _CRAFTED[key] = self.craft(benign, ctx, len(self._team(peer)))
            crafted = _CRAFTED[key]
        crafted = colluder_perturbation(crafted, peer.address, ctx.round, relative=self.spread)
        out, pos = dict(delta), 0
        for k in keys:
            size = delta[k].numel()
            out[k] = torch.from_numpy(crafted[pos : pos + size].copy()).reshape(delta[k].shape).to(delta[k].dtype)
            pos += size
        return out


class ALittleIsEnough(_Adaptive):
    """ALIE (Baruch et al., NeurIPS 2019): every colluder sends mean - z * std of the benign
    updates, with z from the paper's formula for n members and m colluders."""

    name = "alie"

    def craft(self, benign, ctx, m):
        return alie_update(benign, alie_z(len(ctx.peer.members), m))


class InnerProductManipulation(_Adaptive):
    """IPM (Xie et al., UAI 2020): every colluder sends -epsilon times the benign mean."""

    name = "ipm"

    def __init__(self, colluders=(), *, epsilon: float = 0.5, **kw):
        super().__init__(colluders, **kw)
        self.epsilon = epsilon

    def craft(self, benign, ctx, m):
        return ipm_update(benign, self.epsilon)


class MinMax(_Adaptive):
    """Min-Max (Shejwalkar and Houmansadr, NDSS 2021), tailored to the task's rule, which the
    attacker reads from the task like everyone else.

    * ``multi-krum``: the largest gamma for which the rule still keeps every crafted update
      (the paper's Krum / Multi-Krum attack);
    * ``median``, ``trimmed-mean``: the largest gamma while the rule's output keeps moving away
      from the benign mean (the paper's tailored median and trimmed-mean attacks);
    * any other rule that can exclude (``fedavg``, ``trust-cosine``): AGR-agnostic Min-Max, its
      gamma further lowered until the rule keeps every crafted update (dodging the exclusion);
    * ``fedavg-plain``: AGR-agnostic Min-Max.

    The rule is run exactly as peers run it (``combine`` on the fixed-point rows, equal weights,
    the crafted rows with the colluders' perturbations)."""

    name = "minmax"

    def __init__(self, colluders=(), *, perturbation: str = "std", **kw):
        super().__init__(colluders, **kw)
        self.perturbation = perturbation

    def craft(self, benign, ctx, m):
        peer = ctx.peer
        rule = peer.rule
        if rule.name == "fedavg-plain":
            return minmax_agnostic(benign, self.perturbation)
        team = self._team(peer)
        mean = benign.mean(axis=0)
        best = [-1.0]

        def copies(mal: np.ndarray) -> list[np.ndarray]:
            return [colluder_perturbation(mal, a, ctx.round, relative=self.spread) for a in team]

        def run(mal: np.ndarray) -> tuple[bool, float]:
            rows = quantize(torch.from_numpy(np.vstack([benign, *copies(mal)])))
            agg = rule.combine(rows, [1] * rows.shape[0])
            kept = all(i in agg.included for i in range(len(benign), rows.shape[0]))
            return kept, float(np.linalg.norm(dequantize(agg.delta).numpy().astype(np.float64) - mean))

        if rule.name in ("median", "trimmed-mean"):
            def accepts(mal):
                _, dev = run(mal)
                if dev >= best[0]:
                    best[0] = dev
                    return True
                return False
            return minmax_tailored(benign, accepts, self.perturbation)
        if rule.name == "multi-krum":
            return minmax_tailored(benign, lambda mal: run(mal)[0], self.perturbation)
        bound = _max_pairwise(benign)
        return minmax_tailored(
            benign, lambda mal: max(_max_distance_to(benign, c) for c in self._bounded(mal, copies)) <= bound and run(mal)[0],
            self.perturbation)

    @staticmethod
    def _bounded(mal: np.ndarray, copies) -> list[np.ndarray]:
        # What must stay within the benign distance bound: the crafted vector (its copies are 2**-8 off).
        return [mal]


# Spread copies: how far apart rule-aware colluders send their one vector, at least. Independent
# directions of norm 0.3 |x| put two copies at a cosine of about 1 / (1 + 0.3**2) = 0.917, below the
# 15/16 at which the default rule counts near-copies once (``aggregation.mean.PARALLEL_COS``).
SPREAD = 0.3


class _Spread:
    """The rule-aware variant of an adaptive attack: the colluders send their crafted vector as
    copies spread apart, each with its own independent direction added, so that no rule sees them
    as alike. The spread is tuned each round (``_tune``) so that two copies are as alike as a
    typical benign update is to its closest other: at least ``SPREAD`` (below the default rule's
    near-copy cosine), at most 2 (label-skewed benign updates, nearly orthogonal). The noise
    cancels in the mean of the copies, so their sum still carries the crafted vector, while each
    copy alone looks less like it: a longer update (clipped to the median norm), at a smaller angle
    to anything. Min-Max keeps every spread copy inside its benign distance bound."""

    spread = SPREAD

    def _tune(self, benign: np.ndarray) -> None:
        # As alike to each other as a typical benign update is to its closest other: copies at
        # cosine c = 1 - u (u the median of 1 - max cosine over the benign rows) are counted in full
        # by a rule that discounts updates more alike than typical; at least SPREAD, at most 2.
        x = benign / np.maximum(np.linalg.norm(benign, axis=1, keepdims=True), 1e-300)
        cos = x @ x.T
        np.fill_diagonal(cos, -np.inf)
        u = float(np.median(1.0 - np.clip(cos.max(axis=1), 0.0, 1.0))) if len(benign) > 1 else 0.0
        c = 1.0 - u
        self.spread = float(np.clip(np.sqrt(1.0 / c - 1.0) * 1.05 if c > 0.2 else 2.0, SPREAD, 2.0))

    @staticmethod
    def _bounded(mal: np.ndarray, copies) -> list[np.ndarray]:
        return copies(mal)  # every spread copy within Min-Max's distance bound


class ALittleIsEnoughSpread(_Spread, ALittleIsEnough):
    """ALIE with its copies spread apart (``_Spread``)."""

    name = "alie-spread"


class InnerProductManipulationSpread(_Spread, InnerProductManipulation):
    """IPM with its copies spread apart (``_Spread``)."""

    name = "ipm-spread"


class MinMaxSpread(_Spread, MinMax):
    """Min-Max with its copies spread apart (``_Spread``)."""

    name = "minmax-spread"


class InnerProductManipulationSpreadCap(InnerProductManipulationSpread):
    """Spread IPM whose colluders also claim the task's sample cap as their sample count: sample
    counts are self-reported, so every colluder weighs as much as the largest honest shard may."""

    name = "ipm-spread-cap"

    def transform(self, delta, ctx):
        ctx.metadata["samples"] = ctx.peer.task.sample_cap
        return super().transform(delta, ctx)


ATTACKS: dict[str, type[Plugin]] = {
    cls.name: cls
    for cls in (SignFlip, Scaling, GaussianNoise, LabelFlip, Backdoor, FreeRider, Malformed, LazyVoter, Colluder, DagBomb,
                ALittleIsEnough, InnerProductManipulation, MinMax, ALittleIsEnoughSpread, InnerProductManipulationSpread,
                MinMaxSpread, InnerProductManipulationSpreadCap)
}
ADAPTIVE = ("alie", "ipm", "minmax", "alie-spread", "ipm-spread", "minmax-spread", "ipm-spread-cap")


def make_attack(name: str | None, *, colluders=(), channel: Collusion | None = None) -> list[Plugin]:
    """The plugin list of attack ``name``: empty (an honest peer) for None or "". ``colluders``:
    the addresses of the members running the attack together, and ``channel`` their shared
    in-process channel (used by the adaptive attacks)."""
    if not name:
        return []
    try:
        cls = ATTACKS[name]
    except KeyError:
        raise ConfigError(f"unknown attack {name!r} (known: {', '.join(ATTACKS)})") from None
    plugin = cls(colluders, channel=channel) if getattr(cls, "takes_colluders", False) else cls()
    plugin.clips_under_masking = False  # under secure aggregation an attacker does not clip what nobody can check
    return [plugin]


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


class Dropout(Plugin):
    """A member that fails mid-round: its process ends right after its first submission is on
    chain (under secure aggregation: after dealing its shares, before masking), as a crashed
    machine would. The other members must still finalize the round without it."""

    name = "dropout"

    def submitted(self, ctx):
        ctx.peer.log("dropping_out", ctx.round, reason="attack dropout: the process ends now")
        os._exit(3)


class DropoutAhead(Plugin):
    """Secure aggregation: a member that fails between rounds. Its process ends right after its
    first reveal is on chain, which deals its shares of the next round ahead; that round counts it
    as a dealer, it never submits, and the holders must reveal its mask seed instead."""

    name = "dropout-ahead"

    def unmasked(self, round_, peer):
        peer.log("dropping_out", round_, reason="attack dropout-ahead: the process ends now, its next round's shares dealt")
        os._exit(3)


class BadMask(Plugin):
    """Secure aggregation: records a masked update that is not one (float tensors of the wrong
    shape), hoping to make the bucket sum unrecoverable. Validators treat it like a dropout: the
    holders reveal its mask seed instead of its self seed, and the others' sum is unmasked."""

    name = "badmask"

    def publish_masked(self, data, ctx):
        from ..protocol.artifact import encode
        from ..protocol.secure import masked_metadata

        return encode({"garbage": torch.ones(3)}, masked_metadata(ctx.peer.task_cid, ctx.round, ctx.base_cid, ctx.peer.address))


class Withhold(Plugin):
    """Secure aggregation: records the digest of its masked update but never puts the update in
    the store, so nobody can fetch it. The holders cannot fetch it either, so they reveal its mask
    seed; the others' sum is unmasked without it."""

    name = "withhold"
    pins_masked = False


ATTACKS.update({cls.name: cls for cls in (FrontRunner, Absent, Dropout, DropoutAhead, BadMask, Withhold)})
