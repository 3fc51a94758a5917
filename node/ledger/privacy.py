"""The privacy each member of a DP task reports having spent, read back from its updates.

Every valid update of a task with ``train.dp`` carries its author's cumulative epsilon and noise
multiplier (``protocol/privacy.py``). This module fetches and validates a round's updates as the
peers do (an excluded update reports nothing) and returns them per member.
"""
from __future__ import annotations

from ..chain import ChainClient
from ..ml.models import schema_of
from ..protocol.privacy import PrivacySpent
from ..protocol.task import Task
from ..store import ArtifactStore
from .history import RoundRecord
from .secure import recorded_inputs

__all__ = ["round_privacy", "published_privacy"]


def round_privacy(chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, rec: RoundRecord,
                  members: list[str]) -> dict[str, PrivacySpent]:
    """{member address (lower case): its reported privacy} over the valid updates of one round."""
    if task.train.dp is None or not rec.submissions:
        return {}
    inputs = recorded_inputs(chain, store, task, task_cid, rec.round, rec.base_model, schema=schema_of(task.model),
                             start_block=rec.start_block, members=members, sealed=task.update_reveal_blocks > 0)
    return {members[c.member].lower(): c.privacy for c in inputs.contributions if c.privacy is not None}


def published_privacy(chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, history: list[RoundRecord],
                      members: list[str]) -> dict[int, dict[str, PrivacySpent]]:
    """{round: {member: privacy}} for every round on record (empty for a task without DP)."""
    if task.train.dp is None:
        return {}
    return {rec.round: round_privacy(chain, store, task, task_cid, rec, members) for rec in history}
