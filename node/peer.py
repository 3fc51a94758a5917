"""The peer's round loop: train, pin, submit; fetch, validate, aggregate, vote; repeat.

A peer keeps no state that matters: every decision is re-derived from the chain (what round is
open, whether this peer already submitted or voted) and the store (the artifacts themselves).
Killed and restarted, it carries on where the chain says it is.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import errors as E
from .aggregation import Contribution, strategy_for
from .artifact import decode, encode, validate
from .attacks import ABSTAIN, Behaviour, UpdateContext
from .chain import ChainClient, Outcome, Phase, RoundState
from .cid import cid_to_digest, digest_to_cid
from .data import Dataset
from .deployment import model_metadata
from .models import schema_of
from .observability import Metrics, describe_peer_metrics
from .store import ArtifactStore
from .task import Task
from .training import train_local

__all__ = ["Peer", "RoundInputs", "Exclusion", "collect_updates", "build_aggregate", "load_model", "EventLog"]


class EventLog:
    """Structured log lines (JSON or plain) that always carry the peer and the round."""

    def __init__(self, peer: str, *, json_lines: bool = False, stream=None):
        self.peer = peer
        self.json_lines = json_lines
        self.stream = stream or sys.stdout

    def __call__(self, event: str, round_: int | None = None, **fields) -> None:
        record = {"ts": round(time.time(), 3), "peer": self.peer, "round": round_, "event": event, **fields}
        if self.json_lines:
            line = json.dumps(record, default=str)
        else:
            extra = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"[{self.peer[:10]}] round {round_} {event} {extra}".rstrip()
        print(line, file=self.stream, flush=True)


@dataclass(frozen=True)
class Exclusion:
    member: int
    cid: str
    reason: str


@dataclass
class RoundInputs:
    """What an aggregate of one round is computed from, as any observer can rebuild it."""

    round: int
    base_cid: str
    contributions: list[Contribution] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)


def load_model(store: ArtifactStore, cid: str, task: Task) -> dict[str, torch.Tensor]:
    art = decode(store.get(cid), max_bytes=task.max_update_bytes)
    validate(art, schema_of(task.model), expect={"kind": "model"})
    return {k: v.clone() for k, v in art.tensors.items()}


def collect_updates(
    chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, round_: int, base_cid: str,
    *, from_block: int, members: list[str], fetch_retry_until: float = 0.0,
) -> RoundInputs:
    """Fetch and validate every update recorded for ``round_``; invalid ones are excluded."""
    schema = schema_of(task.model)
    index = {m.lower(): i for i, m in enumerate(members)}
    inputs = RoundInputs(round_, base_cid)
    for position, ev in enumerate(chain.events("UpdateSubmitted", from_block=from_block, round=round_)):
        member = index[ev.args.peer.lower()]
        cid = digest_to_cid(bytes(ev.args.update))
        try:
            data = _fetch(store, cid, fetch_retry_until)
            art = validate(
                decode(data, max_bytes=task.max_update_bytes),
                schema,
                expect={"kind": "update", "task": task_cid, "round": str(round_), "base": base_cid},
            )
            samples = int(art.metadata.get("samples", "x"))
            if samples < 0:
                raise E.ArtifactInvalid("negative sample count")
        except (E.ArtifactInvalid, E.StoreError, ValueError) as exc:
            inputs.excluded.append(Exclusion(member, cid, str(exc)))
            continue
        inputs.contributions.append(Contribution(member, cid, art.tensors, samples, int(ev.args.reputation), position))
    inputs.contributions.sort(key=lambda c: c.member)
    inputs.excluded.sort(key=lambda x: x.member)
    return inputs


def _fetch(store: ArtifactStore, cid: str, retry_until: float) -> bytes:
    delay = 0.2
    while True:
        try:
            return store.get(cid)
        except (E.ArtifactNotFound, E.StoreUnavailable):
            if time.monotonic() + delay > retry_until:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def build_aggregate(
    store: ArtifactStore, task: Task, task_cid: str, inputs: RoundInputs, *, strategy=None
) -> tuple[bytes, int, list[Contribution]]:
    """The aggregate artifact bytes, its included-member bitmap, and the included contributions."""
    base = load_model(store, inputs.base_cid, task)
    strategy = strategy or strategy_for(task.rule, sample_cap=task.sample_cap)
    new_state, included = strategy.aggregate(base, inputs.contributions)
    bitmap = 0
    for c in included:
        bitmap |= 1 << c.member
    meta = model_metadata(
        task_cid, inputs.round, inputs.base_cid, rule=task.rule, included=hex(bitmap),
        updates=",".join(c.cid for c in included),
    )
    return encode(new_state, meta), bitmap, included


class Peer:
    """One member of a task. ``run`` loops until the task completes or ``stop`` says so."""

    def __init__(
        self,
        chain: ChainClient,
        store: ArtifactStore,
        task: Task,
        task_cid: str,
        data: Dataset,
        *,
        seed: int = 0,
        poll: float = 0.5,
        log: EventLog | None = None,
        fetch_timeout: float = 10.0,
        metrics: Metrics | None = None,
        behaviour=None,
    ):
        self.chain = chain
        self.store = store
        self.task = task
        self.task_cid = task_cid
        self.behaviour = behaviour or Behaviour()
        self.data = self.behaviour.prepare_data(data, np.random.default_rng(seed))
        self.seed = seed
        self.poll = poll
        self.fetch_timeout = fetch_timeout
        self.address = chain.address
        self.log = log or EventLog(self.address)
        self.metrics = metrics or Metrics()
        describe_peer_metrics(self.metrics)
        self.last_poll = 0.0
        self.last_error = ""
        cfg = chain.config()
        if cfg["task"] != cid_to_digest(task_cid):
            raise E.ConfigError("the deployment's task does not match the contract's task digest")
        self.deploy_block = cfg["deploy_block"]
        self.members = chain.members()
        if self.address.lower() not in [m.lower() for m in self.members]:
            raise E.NotMember(f"{self.address} is not a member of this task", name="FedChainNotMember")
        self.timings: dict[int, dict[str, float]] = {}
        self._round_start: dict[int, int] = {}
        self._choices: dict[int, tuple[bytes, int]] = {}  # commit-reveal: what we committed to
        self._abstained: set[int] = set()
        self.commit_reveal = cfg["reveal_blocks"] > 0
        self._round_base: dict[int, str] = {}

    # ---------------------------------------------------------------- the loop
    def run(self, stop=None) -> None:
        self.log("started", None, task=self.task.name, members=len(self.members))
        failures = 0
        while not (stop and stop()):
            try:
                state = self.chain.round_state()
                self.last_poll = time.time()
                self.metrics.set("last_poll_timestamp", self.last_poll)
                self.metrics.set("rounds_seen", state.round)
                if state.phase is Phase.COMPLETE:
                    self._settle_last()
                    self.log("task_complete", state.round - 1)
                    return
                acted = self.step(state)
                failures = 0
            except (E.ChainUnavailable, E.StoreError, E.ContractError) as exc:
                # Nothing a peer does is lost by retrying: the chain says what is still owed.
                failures += 1
                self.last_error = str(exc)
                self.metrics.inc("errors_total", kind=type(exc).__name__)
                self.log("retrying", None, error=str(exc), attempt=failures)
                time.sleep(min(self.poll * 2**failures, 10.0))
                continue
            if not acted:
                time.sleep(self.poll)

    def step(self, state: RoundState) -> bool:
        """Do whatever this peer owes the chain in ``state``; True if it sent something."""
        try:
            if state.phase is Phase.EXPIRED:
                self.chain.advance()
                self.log("advanced", state.round, reason="windows ran out without quorum")
                return True
            me = self.chain.member_info(self.address)
            self.metrics.set("reputation", me.reputation)
            if state.phase is Phase.SUBMISSION and me.submitted_round != state.round:
                self.submit(state, me)
                return True
            if state.phase is Phase.VOTING and me.voted_round != state.round and state.round not in self._abstained:
                self.vote(state, me)
                return True
            if self.commit_reveal:
                # Reveal what we committed: in the reveal window, or late if the round was
                # finalized by others' reveals first (it still counts for reputation).
                for r in (state.round, state.round - 1):
                    if r >= 1 and me.voted_round == r and not self._revealed(r) and \
                            (r == state.round and state.phase is Phase.REVEAL or r == state.round - 1):
                        self.reveal(r)
                        return True
            elif state.phase is Phase.SUBMISSION and state.round > 1 and me.voted_round < state.round - 1 \
                    and me.submitted_round == state.round - 1 and state.round - 1 not in self._abstained:
                # Finalized before our vote got in: a late vote still counts for reputation.
                self.vote(RoundState(state.round - 1, Phase.VOTING, 0, 0, 0, 0, 0), me)
                return True
        except (E.RoundClosed, E.RoundStillOpen, E.WindowClosed, E.VotingNotOpen, E.TaskComplete) as exc:
            self.log("skipped", state.round, reason=str(exc))  # the chain moved on under us
        except (E.AlreadySubmitted, E.AlreadyVoted):
            pass  # a previous life of this peer got there first
        return False

    # ---------------------------------------------------------------- phases
    def _timing(self, round_: int, phase: str, seconds: float) -> None:
        t = self.timings.setdefault(round_, {"train": 0.0, "store": 0.0, "chain": 0.0, "aggregate": 0.0})
        t[phase] += seconds
        self.metrics.inc("phase_seconds_total", seconds, phase=phase)

    def _previous(self, me) -> Outcome:
        last = max(me.submitted_round, me.voted_round)
        if last <= me.settled_round:
            return Outcome.none()
        return self.chain.outcome(last, from_block=self.deploy_block) or Outcome.none()

    def _global(self, round_: int) -> tuple[str, dict[str, torch.Tensor]]:
        """The model round ``round_`` trains on: its RoundStarted base."""
        self._round_start_block(round_)
        cid = self._round_base[round_]
        return cid, load_model(self.store, cid, self.task)

    def submit(self, state: RoundState, me) -> None:
        r = state.round
        t0 = time.perf_counter()
        base_cid, base = self._global(r)
        t1 = time.perf_counter()
        delta, loss = train_local(self.task.model, base, self.data, self.task.train, seed=self.seed * 100_003 + r)
        t2 = time.perf_counter()
        meta = {"kind": "update", "task": self.task_cid, "round": r, "base": base_cid, "samples": len(self.data.y), "peer": self.address}
        ctx = UpdateContext(r, base_cid, base, meta, self)
        artifact = self.behaviour.update(delta, ctx) or encode(self.behaviour.transform(delta, ctx), meta)
        cid = self.store.add(artifact, pin=True)
        t3 = time.perf_counter()
        receipt = self.chain.submit(r, cid_to_digest(cid), self._previous(me))
        t4 = time.perf_counter()
        self._timing(r, "store", (t1 - t0) + (t3 - t2))
        self._timing(r, "train", t2 - t1)
        self._timing(r, "chain", t4 - t3)
        self.metrics.inc("submissions_total")
        self.metrics.set("training_loss", loss)
        self.metrics.inc("gas_spent_total", receipt["gasUsed"])
        self.log("submitted", r, cid=cid, loss=round(loss, 4), samples=len(self.data.y), gas=receipt["gasUsed"])

    def vote(self, state: RoundState, me) -> None:
        r = state.round
        t0 = time.perf_counter()
        start = self._round_start_block(r)
        base_cid = self._round_base[r]
        inputs = collect_updates(
            self.chain, self.store, self.task, self.task_cid, r, base_cid,
            from_block=start, members=self.members, fetch_retry_until=time.monotonic() + self.fetch_timeout,
        )
        for ex in inputs.excluded:
            self.metrics.inc("exclusions_total", reason=ex.reason.split(":")[0][:40])
            self.log("excluded", r, member=ex.member, cid=ex.cid, reason=ex.reason)
        t1 = time.perf_counter()
        data, bitmap, included = build_aggregate(self.store, self.task, self.task_cid, inputs)
        t2 = time.perf_counter()
        cid = self.store.add(data, pin=True)
        digest = cid_to_digest(cid)
        chosen = self.behaviour.vote(self, r, inputs, (digest, bitmap, cid))
        if chosen == ABSTAIN:
            self._abstained.add(r)
            self.log("abstained", r)
            return
        if chosen is not None:
            digest, bitmap = chosen
            cid = digest_to_cid(digest)
        t3 = time.perf_counter()
        if self.commit_reveal:
            salt = self._salt(r)
            receipt = self.chain.commit_vote(r, self.chain.commitment(r, digest, bitmap, salt, self.address), self._previous(me))
            self._choices[r] = (digest, bitmap)
        else:
            receipt = self.chain.vote(r, digest, bitmap, self._previous(me))
        t4 = time.perf_counter()
        self._timing(r, "store", (t1 - t0) + (t3 - t2))  # fetching updates is store time
        self._timing(r, "aggregate", t2 - t1)
        self._timing(r, "chain", t4 - t3)
        self.metrics.inc("votes_total")
        self.metrics.inc("gas_spent_total", receipt["gasUsed"])
        self.log("committed" if self.commit_reveal else "voted", r, model=cid, included=len(included), excluded=len(inputs.excluded), gas=receipt["gasUsed"])
        if not self.commit_reveal:
            self.log("round_timing", r, **{k: round(v, 4) for k, v in self.timings.get(r, {}).items()})

    def _salt(self, round_: int) -> bytes:
        """A per-round salt a restarted peer can derive again; it reveals nothing of the key."""
        from web3 import Web3

        return bytes(Web3.keccak(self.chain.account.key + b"fedchain/commit-salt" + round_.to_bytes(32, "big")))

    def _revealed(self, round_: int) -> bool:
        evs = self.chain.events("VoteCast", from_block=self._round_start_block(round_), round=round_, peer=self.address)
        return bool(evs)

    def reveal(self, round_: int) -> None:
        """Reveal this peer's committed vote, recomputing it if a restart lost it."""
        if round_ in self._abstained:
            return
        if round_ not in self._choices:
            inputs = collect_updates(
                self.chain, self.store, self.task, self.task_cid, round_, self._round_base_of(round_),
                from_block=self._round_start_block(round_), members=self.members,
                fetch_retry_until=time.monotonic() + self.fetch_timeout,
            )
            data, bitmap, _ = build_aggregate(self.store, self.task, self.task_cid, inputs)
            digest = cid_to_digest(self.store.add(data, pin=True))
            chosen = self.behaviour.vote(self, round_, inputs, (digest, bitmap, digest_to_cid(digest)))
            self._choices[round_] = chosen if chosen not in (None, ABSTAIN) else (digest, bitmap)
        digest, bitmap = self._choices[round_]
        t0 = time.perf_counter()
        receipt = self.chain.reveal_vote(round_, digest, bitmap, self._salt(round_))
        self._timing(round_, "chain", time.perf_counter() - t0)
        self.metrics.inc("votes_total")
        self.metrics.inc("gas_spent_total", receipt["gasUsed"])
        self.log("voted", round_, model=digest_to_cid(digest), revealed=True, gas=receipt["gasUsed"])
        self.log("round_timing", round_, **{k: round(v, 4) for k, v in self.timings.get(round_, {}).items()})

    def _round_base_of(self, round_: int) -> str:
        self._round_start_block(round_)
        return self._round_base[round_]

    def health(self, *, max_silence: float = 30.0) -> dict:
        """Liveness and readiness: chain polled recently, store usable."""
        chain_ok = time.time() - self.last_poll < max_silence
        try:
            self.store.ping()
            store_ok, store_error = True, ""
        except E.StoreError as exc:
            store_ok, store_error = False, str(exc)
        report = {"ok": chain_ok and store_ok, "chain": chain_ok, "store": store_ok, "synced": chain_ok,
                  "last_poll": self.last_poll, "round": int(self.metrics.get("rounds_seen")), "peer": self.address}
        if store_error or (not chain_ok and self.last_error):
            report["error"] = store_error or self.last_error
        return report

    def _round_start_block(self, round_: int) -> int:
        """Start block of ``round_``; also records the base model it was opened with."""
        if round_ not in self._round_start:
            evs = self.chain.events("RoundStarted", from_block=self.deploy_block, round=round_)
            if not evs:
                raise E.UnknownRound(f"no RoundStarted event for round {round_}")
            self._round_start[round_] = evs[0].blockNumber
            self._round_base[round_] = digest_to_cid(self.chain.round_bases(from_block=self.deploy_block)[round_])
        return self._round_start[round_]

    def _settle_last(self) -> None:
        me = self.chain.member_info(self.address)
        previous = self._previous(me)
        if max(me.submitted_round, me.voted_round) > me.settled_round:
            try:
                self.chain.settle(self.address, previous)
                after = self.chain.member_info(self.address)
                self.log("settled", max(me.submitted_round, me.voted_round), reputation=after.reputation)
            except E.ContractError as exc:
                self.log("settle_failed", None, reason=str(exc))
