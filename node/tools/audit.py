"""Auditing history: recompute every finalized round's aggregate and compare with the chain."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..chain import ChainClient
from ..protocol.cid import cid_of_bytes
from ..ledger.history import RoundRecord
from ..aggregation import aggregate_round
from .. import errors as E
from ..ledger.secure import recorded_inputs
from ..ledger.updates import load_model
from ..ml.models import schema_of
from ..store import ArtifactStore
from ..protocol.task import Task

__all__ = ["RoundAudit", "audit_round"]


@dataclass
class RoundAudit:
    round: int
    verified: bool
    expected_model: str
    recomputed_model: str | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"round": self.round, "verified": self.verified, "expected_model": self.expected_model,
                "recomputed_model": self.recomputed_model, "problems": self.problems}


def audit_round(chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, rec: RoundRecord, members: list[str]) -> RoundAudit:
    """Fetch the round's updates (in a sealed task: the revealed ones), re-aggregate with the
    task's rule and on-chain reputations."""
    audit = RoundAudit(rec.round, False, rec.model or "")
    schema = schema_of(task.model)
    try:
        inputs = recorded_inputs(chain, store, task, task_cid, rec.round, rec.base_model, schema=schema,
                                 start_block=rec.start_block, members=members, sealed=rec.sealed)
    except E.NotVisibleYet as exc:  # a secure round whose records cannot all be fetched
        audit.problems.append(f"cannot rebuild the round's inputs: {exc}")
        return audit
    try:
        data, bitmap, _ = aggregate_round(load_model(store, rec.base_model, task, schema), task, task_cid, inputs)
    except Exception as exc:  # the base model itself may be missing or damaged
        audit.problems.append(f"cannot rebuild the aggregate: {exc}")
        return audit
    audit.recomputed_model = cid_of_bytes(data)
    for ex in inputs.excluded:
        if (rec.included >> ex.member) & 1:
            audit.problems.append(f"update {ex.cid} of member {ex.member} was included on chain but is now unusable: {ex.reason}")
    if bitmap != rec.included:
        audit.problems.append(f"included set differs: chain {hex(rec.included)}, recomputed {hex(bitmap)}")
    if audit.recomputed_model != rec.model:
        audit.problems.append(f"aggregate differs: chain {rec.model}, recomputed {audit.recomputed_model}")
    audit.verified = not audit.problems
    return audit
