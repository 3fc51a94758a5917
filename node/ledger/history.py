"""Round history rebuilt from the contract's events and checked with view calls."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..chain import ChainClient, Phase
from ..protocol.cid import digest_to_cid
from ..errors import UnknownRound

__all__ = ["RoundRecord", "round_history", "round_record", "participation", "no_such_round"]


@dataclass
class RoundRecord:
    round: int
    status: str  # open | finalized | failed
    start_block: int
    base_model: str
    submissions: list[dict] = field(default_factory=list)
    votes: list[dict] = field(default_factory=list)
    model: str | None = None
    included: int = 0
    weight: int = 0
    total_reputation: int = 0
    end_block: int | None = None
    sealed: bool = False  # updates were committed, then revealed (cid None: not revealed)

    @property
    def included_count(self) -> int:
        return bin(self.included).count("1")

    def to_dict(self) -> dict:
        return {
            "round": self.round, "status": self.status, "start_block": self.start_block, "end_block": self.end_block,
            "base_model": self.base_model, "model": self.model, "included": hex(self.included),
            "included_count": self.included_count, "vote_weight": self.weight, "total_reputation": self.total_reputation,
            "submissions": self.submissions, "votes": self.votes, "sealed": self.sealed,
        }


def round_history(chain: ChainClient, *, from_block: int | None = None) -> list[RoundRecord]:
    """Every round from the events. In a sealed task a round's submissions are its commitments,
    each with the CID and reputation of its reveal, or ``cid`` None while (or if never) revealed."""
    cfg = chain.config()
    start = cfg["deploy_block"] if from_block is None else from_block
    sealed = cfg.get("update_reveal_blocks", 0) > 0
    records: dict[int, RoundRecord] = {}
    started = chain.events("RoundStarted", from_block=start)
    bases = chain.round_bases(from_block=start)  # read second: it covers every round in `started`
    for ev in started:
        r = int(ev.args.round)
        records[r] = RoundRecord(r, "open", ev.blockNumber, digest_to_cid(bases[r]), sealed=sealed)
    if sealed:
        for ev in chain.events("UpdateCommitted", from_block=start):
            rec = records.get(int(ev.args.round))
            if rec:
                rec.submissions.append({"peer": ev.args.peer, "cid": None, "reputation": None, "block": ev.blockNumber,
                                        "revealed": False})
        for ev in chain.events("UpdateRevealed", from_block=start):
            rec = records.get(int(ev.args.round))
            sub = next((s for s in rec.submissions if s["peer"].lower() == ev.args.peer.lower()), None) if rec else None
            if sub:
                sub.update(cid=digest_to_cid(bytes(ev.args.update)), reputation=int(ev.args.reputation), revealed=True,
                           reveal_block=ev.blockNumber)
    for ev in chain.events("UpdateSubmitted", from_block=start):
        rec = records.get(int(ev.args.round))
        if rec:
            rec.submissions.append({"peer": ev.args.peer, "cid": digest_to_cid(bytes(ev.args.update)), "reputation": int(ev.args.reputation), "block": ev.blockNumber})
    for ev in chain.events("VoteCast", from_block=start):
        rec = records.get(int(ev.args.round))
        if rec:
            rec.votes.append({"peer": ev.args.peer, "model": digest_to_cid(bytes(ev.args.model)), "included": hex(int(ev.args.included)), "weight": int(ev.args.weight), "block": ev.blockNumber})
    for ev in chain.events("RoundFinalized", from_block=start):
        rec = records.get(int(ev.args.round))
        if rec and chain.outcome_matches(rec.round, bytes(ev.args.model), int(ev.args.included)):
            rec.status = "finalized"
            rec.model = digest_to_cid(bytes(ev.args.model))
            rec.included = int(ev.args.included)
            rec.weight = int(ev.args.weight)
            rec.total_reputation = int(ev.args.totalReputation)
            rec.end_block = ev.blockNumber
    for ev in chain.events("RoundFailed", from_block=start):
        rec = records.get(int(ev.args.round))
        if rec:
            rec.status = "failed"
            rec.end_block = ev.blockNumber
    state = chain.round_state()
    current = records.get(state.round)
    if current and current.status == "open" and state.phase is Phase.EXPIRED:
        current.status = "expired"
    return [records[r] for r in sorted(records)]


def no_such_round(round_: int, history: list[RoundRecord], state) -> UnknownRound:
    """The one error every command gives for a round that has not started or does not exist."""
    last = history[-1].round if history else 0
    if state.phase is Phase.COMPLETE:
        return UnknownRound(f"round {round_} does not exist: this task ran {last} rounds (1..{last}), all ended")
    return UnknownRound(f"round {round_} has not started yet (the open round is {state.round})")


def round_record(chain: ChainClient, round_: int) -> RoundRecord:
    history = round_history(chain)
    for rec in history:
        if rec.round == round_:
            return rec
    raise no_such_round(round_, history, chain.round_state())


def participation(chain: ChainClient, history: list[RoundRecord]) -> list[dict]:
    """Per member, in index order: reputation now, and how often it submitted, was included and voted."""
    rows = []
    for addr in chain.members():
        info = chain.member_info(addr)
        me = addr.lower()
        rows.append({
            "address": addr, "index": info.index, "reputation": info.reputation,
            "submitted": sum(1 for r in history for s in r.submissions if s["peer"].lower() == me),
            "included": sum(1 for r in history if r.status == "finalized" and (r.included >> info.index) & 1),
            "voted": sum(1 for r in history for v in r.votes if v["peer"].lower() == me),
            "last_settled_round": info.settled_round,
        })
    return rows
