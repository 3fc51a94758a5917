"""The peer's round loop: train, pin, submit; fetch, validate, aggregate, vote; repeat.

A peer keeps no state that matters: every decision is re-derived from the chain (what round is
open, whether this peer already submitted or voted) and the store (the artifacts themselves).
Killed and restarted, it carries on where the chain says it is. The one exception is a sealed
update (tasks with an update-reveal window): between its commitment and its reveal it exists
only at this peer, so it is also written to the peer's private ``state_dir`` and a restarted
peer reveals it from there.

The loop is an explicit state machine: ``next_action`` is a pure function from what the chain
says (``Facts``) to what the peer owes it next (``Action``), and ``Peer.step`` carries it out.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch

from .. import errors as E
from ..aggregation import aggregate_round, rule_of
from ..chain import ChainClient, MemberInfo, Outcome, Phase, RoundState
from ..ledger.secure import secure_inputs
from ..ledger.updates import collect_updates, load_model
from ..ml.data import Dataset
from ..ml.models import schema_of
from ..ml.training import train_local
from ..protocol.artifact import encode
from ..protocol.cid import cid_to_digest, digest_to_cid
from ..protocol.round import RoundInputs, update_metadata
from ..protocol.secure import stages
from ..protocol.task import Task
from ..store import ArtifactStore
from .evaluation import HoldoutEvaluation
from .observability import Metrics, describe_peer_metrics, exclusion_reason
from .privacy import SampleDP
from .secure import SecureMember
from .pipeline import ABSTAIN, Ballot, Pipeline, Plugin, UpdateContext, VoteContext

__all__ = ["Peer", "EventLog", "Action", "Facts", "next_action"]

_NO_SEAL = b"\0" * 19  # ChainClient.update_seal of a member with nothing left to reveal


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
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record["ts"])) + f".{int(record['ts'] * 1000) % 1000:03d}Z"
            where = f" round {round_}" if round_ is not None else ""
            line = f"{stamp} [{self.peer[:10]}]{where} {event} {extra}".rstrip()
        print(line, file=self.stream, flush=True)


class Action(Enum):
    WAIT = "wait"
    ADVANCE = "advance"  # close an expired round
    LATE_VOTE = "late_vote"  # plain votes: vote for the round finalized before our vote got in
    REVEAL = "reveal"  # commit-reveal: reveal a committed vote (in its window, or late)
    SUBMIT = "submit"  # the update's digest, or (sealed updates) a commitment to it
    REVEAL_UPDATE = "reveal_update"  # sealed updates: pin the update and reveal it
    VOTE = "vote"  # plain vote, or the commitment under commit-reveal
    MASK = "mask"  # secure aggregation: record the masked update (masking stage)
    UNMASK = "unmask"  # secure aggregation: record this holder's reveals (unmasking stage)


@dataclass(frozen=True)
class Facts:
    """What the chain says about the open round and this member, plus what this peer decided."""

    round: int
    phase: Phase
    submitted_round: int
    voted_round: int
    commit_reveal: bool = False
    abstained: frozenset[int] = frozenset()
    revealed: frozenset[int] = frozenset()  # rounds whose committed vote is revealed on chain
    previous_finalized: bool = False  # round - 1 finalized: a late vote or reveal still counts
    sealed: bool = False  # updates are committed first and revealed after the submission window
    update_revealed: bool = False  # sealed: nothing of this round's update is left to reveal
    secure_stage: str = ""  # secure aggregation, voting window: "mask", "unmask", "wait" or "vote"


def next_action(f: Facts) -> tuple[Action, int]:
    """What this member owes the chain next, and for which round.

    Unfinished business of the previous round comes first, in every phase: its late vote or
    reveal must land before this member sends anything that settles that round (a submission or
    vote for a later round), and before the round it belongs to is closed (an ``advance``, or the
    task's end), or the contract settles it with no vote recorded and, under commit-reveal,
    halves an honest but slow revealer as a dissenter.
    """
    r, prev = f.round, f.round - 1
    if prev >= 1 and f.previous_finalized and prev not in f.abstained and f.submitted_round < r:
        if f.commit_reveal and f.voted_round == prev and prev not in f.revealed:
            return Action.REVEAL, prev
        if not f.commit_reveal and f.submitted_round == prev and f.voted_round < prev:
            return Action.LATE_VOTE, prev
    if f.phase is Phase.COMPLETE:
        return Action.WAIT, r
    if f.phase is Phase.EXPIRED:
        return Action.ADVANCE, r
    if f.phase is Phase.SUBMISSION and f.submitted_round != r:
        return Action.SUBMIT, r
    if f.sealed and f.phase is Phase.UPDATE_REVEAL and f.submitted_round == r and not f.update_revealed:
        return Action.REVEAL_UPDATE, r
    if f.phase is Phase.VOTING and f.voted_round != r and r not in f.abstained:
        if f.secure_stage in ("mask", "unmask"):
            return (Action.MASK if f.secure_stage == "mask" else Action.UNMASK), r
        if f.secure_stage == "wait":
            return Action.WAIT, r
        return Action.VOTE, r
    if f.commit_reveal and f.phase is Phase.REVEAL and f.voted_round == r and r not in f.revealed \
            and r not in f.abstained:
        return Action.REVEAL, r
    return Action.WAIT, r


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
        plugins: list[Plugin] | tuple[Plugin, ...] = (),
        state_dir: str | Path | None = None,
    ):
        self.chain = chain
        self.store = store
        self.task = task
        self.task_cid = task_cid
        self.rule = rule_of(task)
        self.schema = schema_of(task.model)
        self.pipeline = Pipeline(plugins)
        self.data = self.pipeline.prepare_data(data, np.random.default_rng(seed))
        self.seed = seed
        self.poll = poll
        self.fetch_timeout = fetch_timeout
        self.address = chain.address
        self.log = log or EventLog(self.address)
        self.metrics = metrics or Metrics()
        describe_peer_metrics(self.metrics)
        self.last_poll = 0.0
        self.last_progress = time.time()
        self._round_seen_at: dict[int, float] = {}
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
        self._round_base: dict[int, str] = {}
        self._round_end: dict[int, int] = {}
        self._choices: dict[int, Ballot] = {}  # commit-reveal: what we committed to
        self._abstained: set[int] = set()
        self._revealed: set[int] = set()
        self._last_wait: tuple | None = None
        self._missed: set[int] = set()
        self.commit_reveal = cfg["reveal_blocks"] > 0
        self.update_reveal_blocks = cfg.get("update_reveal_blocks", 0)
        self.sealed = self.update_reveal_blocks > 0
        self._sealed: dict[int, bytes] = {}  # sealed updates committed and not yet revealed
        self._updates_revealed: set[int] = set()  # rounds with nothing of our update left to reveal
        self.state_dir = Path(state_dir).expanduser() / self.address.lower() if state_dir else None
        self.last_step: tuple[Action | None, int, str] = (None, 0, "idle")
        self.evaluation = HoldoutEvaluation(self)  # federated evaluation on this peer's holdout
        # Sample-level DP-SGD and its privacy account when the task asks for it (peer/privacy.py).
        self.privacy = SampleDP(task, task_cid, len(self.data.y), self.log, state_dir=self.state_dir) if task.train.dp else None
        # Secure aggregation (peer/secure.py): identity key, share bundles, masked updates, reveals.
        self.secure = SecureMember(self) if task.secure_aggregation else None
        self._sitting_out: set[int] = set()

    # ---------------------------------------------------------------- the loop
    def run(self, stop=None) -> None:
        self.log("started", None, task=self.task.name, members=len(self.members))
        failures = 0
        while not (stop and stop()):
            try:
                state = self.chain.round_state()
                self.last_poll = time.time()
                self.last_progress = self.last_poll
                self.metrics.set("last_poll_timestamp_seconds", self.last_poll)
                self.metrics.set("current_round", state.round)
                self._note_round(state.round)
                acted = self.step(state)
                failures = 0
                # The task is over once nothing is owed (a late reveal or vote for the last round
                # still counts) and this peer's last round is settled.
                if state.phase is Phase.COMPLETE and self.last_step[0] is Action.WAIT and self._settle_last():
                    self.evaluation.final(state.round - 1)
                    self.log("task_complete", state.round - 1)
                    return
            except (E.ChainUnavailable, E.StoreError, E.ContractError, E.ArtifactInvalid) as exc:
                # Nothing a peer does is lost by retrying: the chain says what is still owed.
                # ArtifactInvalid: a damaged base model in the store; the peer waits for it to be restored.
                failures += 1
                self.last_error = str(exc)
                self.last_progress = time.time()  # retrying is progress: the process is not stuck
                self.metrics.inc("errors_total", kind=type(exc).__name__)
                self.log("retrying", None, error=str(exc), attempt=failures)
                time.sleep(min(self.poll * 2**failures, 10.0))
                continue
            if not acted:
                time.sleep(self.poll)

    def facts(self, state: RoundState, me: MemberInfo) -> Facts:
        """The inputs of ``next_action``; reads the chain only where the answer can matter."""
        prev = state.round - 1
        prev_finalized = False
        if prev >= 1 and me.submitted_round < state.round and prev not in self._abstained and (
            (self.commit_reveal and me.voted_round == prev and prev not in self._revealed)
            or (not self.commit_reveal and me.submitted_round == prev and me.voted_round < prev)
        ):
            prev_finalized = self.chain.is_finalized(prev)
        if self.commit_reveal:
            for r in (prev, state.round):
                if r >= 1 and me.voted_round == r and r not in self._revealed and self._revealed_on_chain(r):
                    self._revealed.add(r)
        r = state.round
        if self.sealed and state.phase is Phase.UPDATE_REVEAL and me.submitted_round == r \
                and r not in self._updates_revealed and self.chain.update_seal(self.address) == _NO_SEAL:
            self._updates_revealed.add(r)  # a previous life of this peer revealed it
        stage = ""
        if self.secure is not None and state.phase is Phase.VOTING and me.voted_round != r:
            stage = self.secure.stage(r, state.submissions, me.submitted_round == r)
        return Facts(
            state.round, state.phase, me.submitted_round, me.voted_round, self.commit_reveal,
            frozenset(self._abstained), frozenset(self._revealed), prev_finalized,
            self.sealed, r in self._updates_revealed, stage,
        )

    def step(self, state: RoundState) -> bool:
        """Do whatever this peer owes the chain in ``state``; True if it sent something.

        ``last_step`` records (action decided or None, its round, what came of it: ``sent``,
        ``idle``, ``waiting``, ``skipped`` or ``already``).
        """
        action, r = None, state.round
        self.last_step = (None, r, "waiting")
        try:
            me = self.chain.member_info(self.address)
            self.metrics.set("reputation", me.reputation)
            self._note_missed_window(state, me)
            if self.secure is not None and state.phase is not Phase.COMPLETE and self.secure.ensure_identity():
                self.last_step = (None, r, "sent")
                return True
            action, r = next_action(self.facts(state, me))
            self.last_step = (action, r, "waiting")
            sent = True
            if action is Action.WAIT:
                sent = False
                self._say_what_we_wait_for(state, me)
            elif action is Action.ADVANCE:
                self.chain.advance()
                self.log("advanced", r, reason="windows ran out without quorum")
            elif action is Action.SUBMIT:
                sent = self.submit(r, me)
            elif action is Action.REVEAL_UPDATE:
                sent = self.reveal_update(r)
            elif action is Action.MASK:
                sent = self.secure.mask(r, state.submissions, self._sealed_update(r))
            elif action is Action.UNMASK:
                sent = self.secure.unmask(r, state.submissions)
            elif action is Action.VOTE:
                sent = self.vote(r, me, expected=self._expected(state), commitments=state.submissions)
            elif action is Action.LATE_VOTE:
                sent = self.vote(r, me)
            elif action is Action.REVEAL:
                sent = self.reveal(r, expected=self._expected(state) if r == state.round else None,
                                   commitments=state.submissions if r == state.round else None)
            self.last_step = (action, r, "sent" if sent else "idle")
            return sent
        except E.NotVisibleYet as exc:
            self.log("waiting", r, reason=str(exc))
        except (E.RoundClosed, E.RoundStillOpen, E.WindowClosed, E.VotingNotOpen, E.TaskComplete, E.InvalidOutcome) as exc:
            self.last_step = (action, r, "skipped")
            self.log("skipped", r, reason=str(exc))  # the chain moved on under us
            if r < state.round:
                self._abstained.add(r)  # a previous round's late step that cannot land: move on
        except (E.AlreadySubmitted, E.AlreadyVoted):
            self.last_step = (action, r, "already")  # a previous life of this peer got there first
            if action is Action.REVEAL:
                self._revealed.add(r)  # ours is on chain, only not in view yet
            if action is Action.REVEAL_UPDATE:
                self._updates_revealed.add(r)
        except E.ArtifactInvalid as exc:
            # Only a base model can get here (updates that fail validation are excluded): a
            # finalized model that is not one. Nothing to build on this round; keep following.
            self.last_step = (action, r, "skipped")
            self.log("skipped", r, reason=f"unusable base model: {exc}")
        except E.ContractError as exc:
            if exc.name != "FedChainCommitmentMismatch":
                raise
            # Our recomputed ballot (a restart lost the committed one) differs from the commitment:
            # it cannot be revealed, and retrying cannot change that.
            self.last_step = (action, r, "skipped")
            self._abstained.add(r)
            self.log("skipped", r, reason=str(exc))
        return False

    def _note_missed_window(self, state: RoundState, me: MemberInfo) -> None:
        """Say so, once, when the open round's submission window closed before this peer submitted."""
        spent = self.privacy is not None and self.privacy.exhausted  # it stopped on purpose and said so
        if state.phase in (Phase.VOTING, Phase.REVEAL, Phase.EXPIRED) and me.submitted_round < state.round \
                and state.round not in self._missed and not spent:
            self._missed.add(state.round)
            self.log("missed_window", state.round, reason=f"the submission window closed at block {state.submit_deadline} "
                     "before this peer submitted; it can still vote, and takes part again from the next round")
        r = state.round
        if self.sealed and state.phase in (Phase.VOTING, Phase.REVEAL, Phase.EXPIRED) and me.submitted_round == r \
                and r not in self._updates_revealed:
            self._updates_revealed.add(r)  # too late now either way: log it at most once
            if self.chain.update_seal(self.address) != _NO_SEAL:
                self.metrics.inc("missed_reveals_total")
                self.log("missed_reveal", r, reason="the update-reveal window closed before this peer revealed its "
                         "committed update: it is excluded from this round's aggregate (and halved at settlement)")
            self._forget_sealed(r)

    def _say_what_we_wait_for(self, state: RoundState, me: MemberInfo) -> None:
        """Log, once per change, what this idle peer waits for."""
        if state.phase is Phase.COMPLETE:
            return
        key = (state.round, state.phase, state.submissions, state.reveals)
        if key == self._last_wait:
            return
        self._last_wait = key
        head = self.chain.block_number()
        n = len(self.members)
        if state.phase is Phase.SUBMISSION:
            what = f"{state.submissions} of {n} {'sealed ' if self.sealed else ''}updates; submission window closes in " \
                   f"{max(state.submit_deadline - head, 0)} blocks"
        elif state.phase is Phase.UPDATE_REVEAL:
            what = f"{state.reveals} of {state.submissions} sealed updates revealed; voting opens once all are, or at block " \
                   f"{state.submit_deadline + self.update_reveal_blocks}"
        elif self.secure is not None and state.phase is Phase.VOTING and me.voted_round != state.round:
            st = stages(state.start_block, self.task.submit_blocks, self.task.secure_aggregation.stage_blocks,
                        self.secure.ahead(state.round))
            what = f"the other members' secure-aggregation records: masked updates until block {st.masking_ends}, " \
                   f"reveals until block {st.unmasking_ends} (or until all are in), then votes"
        else:
            what = f"votes of the other members ({state.submissions} of {n} updates submitted); " \
                   f"voting window closes in {max(state.vote_deadline - head, 0)} blocks"
        self.log("waiting", state.round, reason=what)

    # ---------------------------------------------------------------- helpers for plugins
    def round_start_block(self, round_: int) -> int:
        """Start block of ``round_``; ``E.NotVisibleYet`` while its RoundStarted event is not."""
        if round_ not in self._round_start:
            evs = self.chain.events("RoundStarted", from_block=self.deploy_block, round=round_)
            if not evs:
                raise E.NotVisibleYet(f"the start of round {round_} is not visible yet")
            bases = self.chain.round_bases(from_block=self.deploy_block)
            if round_ not in bases:
                raise E.NotVisibleYet(f"the base model of round {round_} is not visible yet")
            self._round_start[round_] = evs[0].blockNumber
            self._round_base[round_] = digest_to_cid(bases[round_])
        return self._round_start[round_]

    def round_end_block(self, round_: int) -> int:
        """Block in which ``round_`` was finalized or failed; ``E.NotVisibleYet`` while that is not
        in view. (The last round ends with no next RoundStarted, so that cannot be the sign.)"""
        if round_ not in self._round_end:
            start = self.round_start_block(round_)
            evs = self.chain.events("RoundFinalized", from_block=start, round=round_) \
                or self.chain.events("RoundFailed", from_block=start, round=round_)
            if not evs:
                raise E.NotVisibleYet(f"the end of round {round_} is not visible yet")
            self._round_end[round_] = evs[0].blockNumber
        return self._round_end[round_]

    def base_of(self, round_: int) -> str:
        """CID of the global model that round ``round_`` trains on."""
        self.round_start_block(round_)
        return self._round_base[round_]

    def global_model(self, round_: int) -> tuple[str, dict[str, torch.Tensor]]:
        cid = self.base_of(round_)
        return cid, load_model(self.store, cid, self.task, self.schema)

    def _expected(self, state: RoundState) -> int:
        """How many updates of the open round the chain counts: submissions, or (sealed) reveals."""
        return state.reveals if self.sealed else state.submissions

    def round_inputs(self, round_: int, *, expected: int | None = None, commitments: int | None = None) -> RoundInputs:
        """Every update of ``round_``, validated. Waits (``E.NotVisibleYet``) until the peer sees
        all of them: ``expected`` updates (and, sealed, ``commitments`` commitments) for the open
        round, or the round's end for a past one, so that peers at different heads never
        aggregate different sets. In a sealed task only revealed updates count."""
        start = self.round_start_block(round_)
        if expected is None:
            self.round_end_block(round_)  # the round ended in view: so did every submission to it
        if self.secure is not None:
            return secure_inputs(self.chain, self.store, self.task, self.task_cid, round_, self.base_of(round_),
                                 schema=self.schema, start_block=start, members=self.members, deploy_block=self.deploy_block,
                                 expected=expected, fetch_retry_until=time.monotonic() + self.fetch_timeout,
                                 cache=self.secure.cache_for(round_))
        inputs = collect_updates(
            self.chain, self.store, self.task, self.task_cid, round_, self.base_of(round_), schema=self.schema,
            from_block=start, members=self.members, fetch_retry_until=time.monotonic() + self.fetch_timeout,
            expected=expected, sealed=self.sealed, expected_commitments=commitments if self.sealed else None,
        )
        return inputs

    # ---------------------------------------------------------------- phases
    def _timing(self, round_: int, phase: str, seconds: float) -> None:
        t = self.timings.setdefault(round_, {"train": 0.0, "store": 0.0, "chain": 0.0, "aggregate": 0.0})
        t[phase] += seconds
        self.metrics.inc("phase_seconds_total", seconds, phase=phase)

    def _previous(self, me: MemberInfo, round_: int) -> Outcome:
        """The outcome of this member's last unsettled round, which a transaction for ``round_``
        settles. ``NotVisibleYet`` while that round is finalized but its event is not in view:
        sending zeros then would revert with ``InvalidOutcome``."""
        last = max(me.submitted_round, me.voted_round)
        if last <= me.settled_round or last >= round_:
            return Outcome.none()  # nothing to settle: the contract ignores the argument
        found = self.chain.outcome(last, from_block=self.deploy_block)
        if found is None and self.chain.is_finalized(last):
            raise E.NotVisibleYet(f"the outcome of round {last} is not visible yet")
        return found or Outcome.none()

    def submit(self, r: int, me: MemberInfo) -> bool:
        """Train, publish and submit this member's update of round ``r``; False if its privacy
        budget does not admit another round (it stops contributing and keeps voting)."""
        if self.privacy is not None and not self.privacy.admits(r):
            return False
        if self.secure is not None:
            why = self.secure.joinable(r)
            if why:
                if r not in self._sitting_out:
                    self._sitting_out.add(r)
                    self.log("sitting_out", r, reason=why)
                return False
        t0 = time.perf_counter()
        previous = self._previous(me, r)  # before training: it may say to wait
        base_cid, base = self.global_model(r)
        t1 = time.perf_counter()
        if self.privacy is not None:
            delta, loss = self.privacy.train(r, base_cid, base, self.data, seed=self.seed * 100_003 + r)
        else:
            delta, loss = train_local(self.task.model, base, self.data, self.task.train, seed=self.seed * 100_003 + r)
        t2 = time.perf_counter()
        meta = update_metadata(self.task_cid, r, base_cid, len(self.data.y), self.address,
                               self.evaluation.of_base(r, base_cid, base), self.privacy.spent if self.privacy else None)
        ctx = UpdateContext(r, base_cid, base, meta, self)
        delta = self.pipeline.transform(delta, ctx)
        artifact = self.pipeline.publish(delta, ctx) or encode(delta, meta)
        if self.secure is not None and self.secure.ahead(r):
            # Secure aggregation, a round dealt ahead: the submission is the masked update.
            _, cid = self.secure.masked_update(r, self.secure.read(r), artifact)
            self.secure.masked.add(r)
            recorded = cid_to_digest(cid)
        elif self.secure is not None:
            # Secure aggregation, a round dealt in the round: the update stays here until the
            # masking stage; what is submitted is the share bundle of this round's mask seeds.
            self._keep_sealed(r, artifact)
            cid = self.store.add(self.secure.share_bundle(r), pin=True)
            recorded = cid_to_digest(cid)
        elif self.sealed:
            # Sealed: nothing leaves this peer but a commitment; the artifact reaches the store
            # only when it is revealed, after the submission window.
            cid = self.store.cid_of(artifact)
            self._keep_sealed(r, artifact)
            recorded = self.chain.update_commitment(r, cid_to_digest(cid), self._update_salt(r), self.address)
        else:
            cid = self.store.add(artifact, pin=True)
            recorded = cid_to_digest(cid)
        t3 = time.perf_counter()
        receipt = self.chain.submit(r, recorded, previous)
        self.pipeline.submitted(ctx)
        t4 = time.perf_counter()
        self._timing(r, "store", (t1 - t0) + (t3 - t2))
        self._timing(r, "train", t2 - t1)
        self._timing(r, "chain", t4 - t3)
        self.metrics.inc("submissions_total")
        self.metrics.set("training_loss", loss)
        self.metrics.inc("gas_used_total", receipt["gasUsed"])
        if self.secure is not None and r in self.secure.masked:
            self.log("submitted", r, masked=cid, loss=round(loss, 4), samples=len(self.data.y), gas=receipt["gasUsed"])
        elif self.secure is not None:
            self.log("submitted", r, shares=cid, loss=round(loss, 4), samples=len(self.data.y), gas=receipt["gasUsed"])
        elif self.sealed:
            self.log("submitted", r, sealed=True, loss=round(loss, 4), samples=len(self.data.y), gas=receipt["gasUsed"])
        else:
            self.log("submitted", r, cid=cid, loss=round(loss, 4), samples=len(self.data.y), gas=receipt["gasUsed"])
        return True

    # ---------------------------------------------------------------- sealed updates
    def _update_salt(self, round_: int) -> bytes:
        """The salt of this peer's sealed update of ``round_`` in this deployment: derivable again
        after a restart, unknowable to anyone without the key until it is revealed."""
        from web3 import Web3

        return bytes(Web3.keccak(self.chain.account.key + b"fedchain/update-salt" + bytes.fromhex(
            self.chain.contract.address[2:]) + round_.to_bytes(32, "big")))

    def _sealed_path(self, round_: int) -> Path | None:
        if self.state_dir is None:
            return None
        return self.state_dir / f"sealed-{self.chain.contract.address.lower()}-{round_}.safetensors"

    def _keep_sealed(self, round_: int, artifact: bytes) -> None:
        """Keep the sealed update until it is revealed: in memory, and in ``state_dir`` (private to
        this peer, mode 0600) so that a restart between commitment and reveal loses nothing."""
        self._sealed[round_] = artifact
        path = self._sealed_path(round_)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(artifact)
            tmp.replace(path)
        except OSError as exc:  # the reveal still works unless this process dies first
            self.log("sealed_not_saved", round_, reason=f"cannot write {path}: {exc.strerror or exc}; "
                     "a restart before the reveal would lose this round's update")

    def _sealed_update(self, round_: int) -> bytes | None:
        if round_ not in self._sealed:
            path = self._sealed_path(round_)
            try:
                if path is not None:
                    self._sealed[round_] = path.read_bytes()
            except OSError:
                pass
        return self._sealed.get(round_)

    def _forget_sealed(self, round_: int) -> None:
        self._sealed.pop(round_, None)
        path = self._sealed_path(round_)
        if path is not None:
            path.unlink(missing_ok=True)

    def reveal_update(self, r: int) -> bool:
        """Pin this peer's sealed update of round ``r`` and reveal it; False when it cannot be
        revealed (lost, or not the one committed to), which is logged once."""
        artifact = self._sealed_update(r)
        salt = self._update_salt(r)
        digest = cid_to_digest(self.store.cid_of(artifact)) if artifact is not None else None
        seal = self.chain.update_seal(self.address)
        if digest is None or self.chain.update_commitment(r, digest, salt, self.address)[:19] != seal:
            self._updates_revealed.add(r)
            self.metrics.inc("missed_reveals_total")
            self.log("missed_reveal", r, reason="the committed update is lost (restarted without its state_dir copy)"
                     if digest is None else "the kept update does not match the commitment on chain")
            return False
        t0 = time.perf_counter()
        cid = self.store.add(artifact, pin=True)
        t1 = time.perf_counter()
        if cid_to_digest(cid) != digest:
            raise E.StoreError(f"the store named the sealed update {cid}, not the CID committed to")
        receipt = self.chain.reveal_update(r, digest, salt)
        self._updates_revealed.add(r)
        self._forget_sealed(r)
        self._timing(r, "store", t1 - t0)
        self._timing(r, "chain", time.perf_counter() - t1)
        self.metrics.inc("gas_used_total", receipt["gasUsed"])
        self.log("revealed_update", r, cid=cid, gas=receipt["gasUsed"])
        return True

    def _ballot(self, r: int, expected: int | None, commitments: int | None = None) -> tuple[Ballot | None, RoundInputs, str]:
        """Compute and pin the honest aggregate of round ``r``; the plugins' ballot, or None to abstain."""
        t0 = time.perf_counter()
        inputs = self.round_inputs(r, expected=expected, commitments=commitments)
        self.evaluation.observe(inputs)
        for ex in inputs.excluded:
            self.metrics.inc("exclusions_total", reason=exclusion_reason(ex.reason))
            self.log("excluded", r, member=ex.member, cid=ex.cid, reason=ex.reason)
        t1 = time.perf_counter()
        _, base = self.global_model(r)
        data, bitmap, included = aggregate_round(base, self.task, self.task_cid, inputs, rule=self.rule)
        t2 = time.perf_counter()
        cid = self.store.add(data, pin=True)
        honest = (cid_to_digest(cid), bitmap)
        chosen = self.pipeline.vote(VoteContext(r, inputs, self, cid), honest)
        self._timing(r, "store", (t1 - t0) + (time.perf_counter() - t2))  # fetching updates is store time
        self._timing(r, "aggregate", t2 - t1)
        if chosen == ABSTAIN:
            self._abstained.add(r)
            self.log("abstained", r)
            return None, inputs, cid
        return chosen or honest, inputs, cid

    def vote(self, r: int, me: MemberInfo, *, expected: int | None = None, commitments: int | None = None) -> bool:
        """Vote (or commit) for round ``r``; ``expected`` is the open round's on-chain update count
        (submissions, or reveals when sealed; None for a round that has ended) and ``commitments``
        its sealed-update commitments. False if the plugins abstained."""
        previous = self._previous(me, r)
        ballot, inputs, _ = self._ballot(r, expected, commitments)
        if ballot is None:
            return False
        digest, bitmap = ballot
        t3 = time.perf_counter()
        if self.commit_reveal:
            salt = self._salt(r)
            receipt = self.chain.commit_vote(r, self.chain.commitment(r, digest, bitmap, salt, self.address), previous)
            self._choices[r] = ballot
        else:
            receipt = self.chain.vote(r, digest, bitmap, previous)
        self._timing(r, "chain", time.perf_counter() - t3)
        self.metrics.inc("votes_total")
        self.metrics.inc("gas_used_total", receipt["gasUsed"])
        self.log("committed" if self.commit_reveal else "voted", r, model=digest_to_cid(digest),
                 included=bin(bitmap).count("1"), excluded=len(inputs.excluded), gas=receipt["gasUsed"])
        if not self.commit_reveal:
            self.log("round_timing", r, **{k: round(v, 4) for k, v in self.timings.get(r, {}).items()})
        return True

    def _salt(self, round_: int) -> bytes:
        """A per-round salt a restarted peer can derive again; it reveals nothing of the key."""
        from web3 import Web3

        return bytes(Web3.keccak(self.chain.account.key + b"fedchain/commit-salt" + round_.to_bytes(32, "big")))

    def _revealed_on_chain(self, round_: int) -> bool:
        evs = self.chain.events("VoteCast", from_block=self.round_start_block(round_), round=round_, peer=self.address)
        return bool(evs)

    def reveal(self, round_: int, *, expected: int | None = None, commitments: int | None = None) -> bool:
        """Reveal this peer's committed vote, recomputing it if a restart lost it; False if the
        plugins abstained on recomputing."""
        if round_ in self._abstained:
            return False  # nothing committed to reveal (and a recomputed ballot could copy revealed votes)
        if round_ not in self._choices:
            ballot, _, _ = self._ballot(round_, expected, commitments)
            if ballot is None:
                return False
            self._choices[round_] = ballot
        digest, bitmap = self._choices[round_]
        t0 = time.perf_counter()
        receipt = self.chain.reveal_vote(round_, digest, bitmap, self._salt(round_))
        self._revealed.add(round_)
        self._timing(round_, "chain", time.perf_counter() - t0)
        self.metrics.inc("votes_total")
        self.metrics.inc("gas_used_total", receipt["gasUsed"])
        self.log("voted", round_, model=digest_to_cid(digest), revealed=True, gas=receipt["gasUsed"])
        self.log("round_timing", round_, **{k: round(v, 4) for k, v in self.timings.get(round_, {}).items()})
        return True

    def _note_round(self, round_: int) -> None:
        """Count the rounds this peer saw end in finalization, and how long they took."""
        if round_ in self._round_seen_at:
            return
        now = time.time()
        self._round_seen_at[round_] = now
        prev = round_ - 1
        if prev in self._round_seen_at and self.chain.is_finalized(prev):
            self.metrics.inc("rounds_finalized_total")
            self.metrics.observe("round_duration_seconds", now - self._round_seen_at[prev])

    def health(self, *, max_silence: float = 30.0, stuck_after: float = 900.0) -> dict:
        """Liveness (the loop is not stuck), readiness (chain polled recently, store usable)."""
        now = time.time()
        chain_ok = now - self.last_poll < max_silence
        try:
            self.store.ping()
            store_ok, store_error = True, ""
        except E.StoreError as exc:
            store_ok, store_error = False, str(exc)
        live = now - self.last_progress < stuck_after
        report = {"ok": chain_ok and store_ok, "live": live, "ready": chain_ok and store_ok, "chain": chain_ok,
                  "store": store_ok, "synced": chain_ok, "last_poll": self.last_poll,
                  "round": int(self.metrics.get("current_round")), "peer": self.address}
        if store_error or (not chain_ok and self.last_error):
            report["error"] = store_error or self.last_error
        return report

    def _settle_last(self) -> bool:
        """Settle this peer's last round once the task is complete; False while its outcome is
        not in view yet."""
        me = self.chain.member_info(self.address)
        last = max(me.submitted_round, me.voted_round)
        if last <= me.settled_round:
            return True
        try:
            previous = self._previous(me, last + 1)
        except E.NotVisibleYet as exc:
            self.log("waiting", last, reason=str(exc))
            return False
        try:
            self.chain.settle(self.address, previous)
            after = self.chain.member_info(self.address)
            self.log("settled", last, reputation=after.reputation)
        except E.ContractError as exc:
            self.log("settle_failed", None, reason=str(exc))
        return True
