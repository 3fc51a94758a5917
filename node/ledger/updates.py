"""A round's inputs as anyone can rebuild them from the chain and the store."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .. import errors as E
from ..chain import ChainClient
from ..ml.models import schema_of
from ..protocol.cid import digest_to_cid
from ..protocol.evaluation import parse_evaluation
from ..protocol.privacy import parse_privacy
from ..protocol.round import Contribution, Exclusion, RoundInputs, Schema, validate_model, validate_update
from ..protocol.task import Task
from ..store import ArtifactStore

__all__ = ["collect_updates", "load_model", "fetch_with_retry", "public_updates", "PublicUpdate", "is_sealed",
           "NEVER_REVEALED"]

NEVER_REVEALED = "committed but never revealed its update"


@dataclass(frozen=True)
class PublicUpdate:
    """An update of a round that anyone can see: its sender, CID, the sender's reputation as the
    chain recorded it with the update, and the block that made it public."""

    peer: str
    cid: str
    reputation: int
    block: int


def is_sealed(chain: ChainClient) -> bool:
    """Whether the task seals updates (commit during submissions, reveal after)."""
    return chain.config().get("update_reveal_blocks", 0) > 0


def public_updates(chain: ChainClient, round_: int, *, from_block: int, sealed: bool | None = None) -> list[PublicUpdate]:
    """The updates of ``round_`` that are public right now, in chain order.

    Sealed tasks: the revealed ones (``UpdateRevealed``), so none before the submission window
    closes; plain tasks: the submitted ones (``UpdateSubmitted``). ``sealed=None`` asks the chain.
    This is all an observer, honest or adaptive, can know of a round's updates at this moment.
    """
    if sealed is None:
        sealed = is_sealed(chain)
    name = "UpdateRevealed" if sealed else "UpdateSubmitted"
    return [PublicUpdate(ev.args.peer, digest_to_cid(bytes(ev.args.update)), int(ev.args.reputation), ev.blockNumber)
            for ev in chain.events(name, from_block=from_block, round=round_)]


def load_model(store: ArtifactStore, cid: str, task: Task, schema: Schema | None = None) -> dict[str, torch.Tensor]:
    """The global model ``cid``, fetched within the task's size budget and checked against its schema."""
    data = store.get(cid, max_bytes=task.max_update_bytes)
    return validate_model(data, schema or schema_of(task.model), max_bytes=task.max_update_bytes)


def fetch_with_retry(store: ArtifactStore, cid: str, retry_until: float, *, max_bytes: int) -> bytes:
    """``store.get(cid, max_bytes=...)``, retried with backoff while the artifact is missing, until the deadline."""
    delay = 0.2
    while True:
        try:
            return store.get(cid, max_bytes=max_bytes)
        except (E.ArtifactNotFound, E.StoreUnavailable):
            if time.monotonic() + delay > retry_until:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def collect_updates(
    chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, round_: int, base_cid: str,
    *, schema: Schema, from_block: int, members: list[str], fetch_retry_until: float = 0.0,
    expected: int | None = None, sealed: bool | None = None, expected_commitments: int | None = None,
) -> RoundInputs:
    """Fetch and validate every update recorded for ``round_``; invalid ones are excluded.

    Each fetch is held to the task's ``max_update_bytes`` while the content graph is walked, so
    no update can make a peer hold more than that. Whatever goes wrong with one update (over
    budget, malformed, missing, or an error nobody foresaw) excludes that update, with the
    reason, and never ends the caller.

    ``expected``: the number of updates the chain counts for the round (submissions; in a
    ``sealed`` task, reveals). Fewer in view (the events lag behind the head by the confirmation
    depth) raises ``NotVisibleYet``; so do fewer than ``expected_commitments`` commitments.

    Sealed tasks: only revealed updates count, and a member that committed but never revealed is
    an exclusion (``NEVER_REVEALED``), so it settles like any excluded update. Call this for a
    sealed round only once its voting is open: before that, reveals may still come.
    """
    index = {m.lower(): i for i, m in enumerate(members)}
    inputs = RoundInputs(round_, base_cid)
    if sealed is None:  # ask the chain: a caller that forgets must not read a sealed task as empty
        sealed = is_sealed(chain)
    updates = public_updates(chain, round_, from_block=from_block, sealed=sealed)
    if expected is not None and len(updates) < expected:
        raise E.NotVisibleYet(f"{len(updates)} of {expected} {'reveals' if sealed else 'submissions'} of round {round_} in view")
    order = {u.peer.lower(): i for i, u in enumerate(updates)}
    if sealed:
        commits = [ev.args.peer for ev in chain.events("UpdateCommitted", from_block=from_block, round=round_)]
        if expected_commitments is not None and len(commits) < expected_commitments:
            raise E.NotVisibleYet(f"{len(commits)} of {expected_commitments} update commitments of round {round_} in view")
        order = {peer.lower(): i for i, peer in enumerate(commits)}  # the earlier commitment is the original
        revealed = {u.peer.lower() for u in updates}
        inputs.excluded += [Exclusion(index[p.lower()], "", NEVER_REVEALED) for p in commits if p.lower() not in revealed]
    for u in updates:
        member = index[u.peer.lower()]
        position = order.get(u.peer.lower(), len(order))
        cid = u.cid
        try:
            data = fetch_with_retry(store, cid, fetch_retry_until, max_bytes=task.max_update_bytes)
            art, samples = validate_update(
                data, schema, max_bytes=task.max_update_bytes, task_cid=task_cid, round_=round_, base_cid=base_cid,
                submitter=u.peer, kind=task.train.kind, classes=task.model.classes, dp=task.train.dp)
            evaluation = parse_evaluation(art.metadata, round_=round_, kind=task.train.kind, classes=task.model.classes)
            privacy = parse_privacy(art.metadata, task.train.dp)
        except (E.ArtifactInvalid, E.StoreError) as exc:
            inputs.excluded.append(Exclusion(member, cid, str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - an update must not be able to end the peer
            inputs.excluded.append(Exclusion(member, cid, f"unusable: {type(exc).__name__}: {exc}"))
            continue
        finally:
            data = None  # a rejected update's bytes are not kept alive while the next is fetched
        inputs.contributions.append(Contribution(member, cid, art.tensors, samples, u.reputation, position,
                                                 evaluation, privacy))
    return inputs.sort()
