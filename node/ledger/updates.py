"""A round's inputs as anyone can rebuild them from the chain and the store."""
from __future__ import annotations

import time

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

__all__ = ["collect_updates", "load_model", "fetch_with_retry"]


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
    expected: int | None = None,
) -> RoundInputs:
    """Fetch and validate every update recorded for ``round_``; invalid ones are excluded.

    Each fetch is held to the task's ``max_update_bytes`` while the content graph is walked, so
    no update can make a peer hold more than that. Whatever goes wrong with one update (over
    budget, malformed, missing, or an error nobody foresaw) excludes that update, with the
    reason, and never ends the caller.

    ``expected``: the number of submissions the chain counts for the round. Fewer in view (the
    events lag behind the head by the confirmation depth) raises ``NotVisibleYet``.
    """
    index = {m.lower(): i for i, m in enumerate(members)}
    inputs = RoundInputs(round_, base_cid)
    events = chain.events("UpdateSubmitted", from_block=from_block, round=round_)
    if expected is not None and len(events) < expected:
        raise E.NotVisibleYet(f"{len(events)} of {expected} submissions of round {round_} in view")
    for position, ev in enumerate(events):
        member = index[ev.args.peer.lower()]
        cid = digest_to_cid(bytes(ev.args.update))
        try:
            data = fetch_with_retry(store, cid, fetch_retry_until, max_bytes=task.max_update_bytes)
            art, samples = validate_update(
                data, schema, max_bytes=task.max_update_bytes, task_cid=task_cid, round_=round_, base_cid=base_cid,
                submitter=ev.args.peer, kind=task.train.kind, classes=task.model.classes, dp=task.train.dp)
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
        inputs.contributions.append(Contribution(member, cid, art.tensors, samples, int(ev.args.reputation), position,
                                                 evaluation, privacy))
    return inputs.sort()
