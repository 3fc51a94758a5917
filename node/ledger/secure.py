"""A secure-aggregation round as anyone rebuilds it from the chain and the store.

The rules are in ``protocol/secure.py``; this module reads the records they apply to: identity
keys, share bundles (the round's submissions), masked updates and unmasking reveals, each
fetched within the task's byte budget and checked. A hostile record excludes its sender (or, for
a dealer whose shares turn out inconsistent, its bucket); it never ends the reader.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import errors as E
from ..chain import ChainClient
from ..protocol.cid import digest_to_cid
from ..protocol.evaluation import parse_evaluation
from ..protocol.privacy import parse_privacy
from ..protocol.round import Bucket, Contribution, Exclusion, RoundInputs, Schema
from ..protocol.secure import (KIND_IDENTITY, KIND_MASKED, KIND_UNMASK, Stages, assign_buckets, dealt_ahead, key_cutoff, masked_vector,
                               needed_reveals, stages, validate_masked)
from ..protocol.task import Task
from ..store import ArtifactStore
from .updates import collect_updates, fetch_with_retry

__all__ = ["SecureRound", "identity_keys", "read_secure_round", "secure_inputs", "recorded_inputs", "secure_summary", "round_dp_rho", "float_dim", "RECORD_MAX_BYTES", "view_head",
           "round_start", "round_shape"]

RECORD_MAX_BYTES = 1 << 20  # a share bundle or an unmask reveal: ~100 bytes per member, 256 members at most
NOT_UNMASKED = "secure aggregation could not unmask this member's bucket"


def view_head(chain: ChainClient) -> int:
    """The last block whose logs ``chain.events`` shows."""
    return chain.block_number() - chain.confirmations


def round_start(chain: ChainClient, round_: int, deploy_block: int) -> int:
    """The block of ``round_``'s ``RoundStarted`` event; ``NotVisibleYet`` while it is not in view."""
    evs = chain.events("RoundStarted", from_block=deploy_block, round=round_)
    if not evs:
        raise E.NotVisibleYet(f"the start of round {round_} is not visible yet")
    return evs[0].blockNumber


def identity_keys(chain: ChainClient, index: dict[str, int], *, deploy_block: int, round_: int, start_block: int | None,
                  task: Task, previous_start: int | None = None) -> dict[int, bytes]:
    """The holders of a round: member -> identity key (its first kind-1 record of round 0) for
    the keys on record before the round's key cutoff (``protocol.secure.key_cutoff``: round 1's
    needs its ``start_block``, later rounds' the previous round's, ``previous_start``).
    ``NotVisibleYet`` until the cutoff is settled in view."""
    first: dict[int, tuple[bytes, int]] = {}
    for ev in chain.events("Published", from_block=deploy_block, round=0, kind=KIND_IDENTITY):
        member = index.get(str(ev.args.peer).lower())
        if member is not None and member not in first:
            first[member] = (bytes(ev.args.digest), ev.blockNumber)
    cutoff = key_cutoff(round_, start_block or 0, task.submit_blocks, task.secure_aggregation.stage_blocks,
                        [b for _, b in first.values()], len(index), previous_start)
    if view_head(chain) < cutoff - 1:
        raise E.NotVisibleYet(f"{len(first)} of {len(index)} identity keys on record; keys count until block {cutoff}")
    return {m: key for m, (key, block) in first.items() if block < cutoff and usable_key(key)}


def usable_key(public: bytes) -> bool:
    """Whether an identity key on record is one anybody can agree a secret with: a low-order
    X25519 point would make every dealer's encryption to it fail, so its member gets no shares."""
    from ..secagg.keys import agree

    try:
        agree(_PROBE, public)
        return True
    except E.ArtifactInvalid:
        return False


_PROBE = bytes(range(1, 33))  # any private key: a low-order point gives the all-zero secret with every one


def _first_records(chain: ChainClient, round_: int, kind: int, index: dict[str, int], *, from_block: int,
                   before: int) -> dict[int, tuple[str, int]]:
    """member -> (CID, block) of its first ``kind`` record of ``round_`` in a block before ``before``."""
    out: dict[int, tuple[str, int]] = {}
    for ev in chain.events("Published", from_block=from_block, round=round_, kind=kind):
        member = index.get(str(ev.args.peer).lower())
        if member is None or ev.blockNumber >= before or member in out:
            continue
        out[member] = (digest_to_cid(bytes(ev.args.digest)), ev.blockNumber)
    return out


@dataclass
class SecureRound:
    """What is on record for one round, read as far as the chain has got."""

    round: int
    stages: Stages
    holders: dict[int, bytes]  # member -> identity key, for the members given shares this round
    dealers: dict[int, object] = field(default_factory=dict)  # member -> its ShareBundle
    dealer_cids: dict[int, str] = field(default_factory=dict)  # where its bundle is (dealt ahead: its reveal of the previous round)
    excluded: list[Exclusion] = field(default_factory=list)
    buckets: list[tuple[int, ...]] = field(default_factory=list)
    ahead: bool = False  # dealt ahead: the submissions are the masked updates
    submitted: dict[int, tuple[str, int]] = field(default_factory=dict)  # dealt ahead: dealer -> (masked update CID, block)
    masking_done: bool = False
    unmasking_done: bool = False


def round_shape(chain: ChainClient, task: Task, round_: int, *, start_block: int,
                deploy_block: int) -> tuple[bool, int | None, dict[str, tuple[str, int]] | None]:
    """(dealt ahead?, the previous round's start, address -> its first reveal record of the
    previous round that counts for dealing: (CID, block)). Chain facts only (``protocol.secure.dealt_ahead``)."""
    if round_ < 2:
        return False, None, None
    prev_start = round_start(chain, round_ - 1, deploy_block)
    prev_ue = stages(prev_start, task.submit_blocks, task.secure_aggregation.stage_blocks).unmasking_ends
    evs = chain.events("Published", from_block=prev_start, round=round_ - 1, kind=KIND_UNMASK)
    ahead = dealt_ahead(round_, [ev.blockNumber for ev in evs], prev_start, prev_ue, start_block)
    first: dict[str, tuple[str, int]] = {}
    for ev in evs:
        addr = str(ev.args.peer).lower()
        if prev_start <= ev.blockNumber < min(prev_ue, start_block) and addr not in first:
            first[addr] = (digest_to_cid(bytes(ev.args.digest)), ev.blockNumber)
    return ahead, prev_start, first


def read_secure_round(
    chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, round_: int, *, start_block: int,
    members: list[str], deploy_block: int, expected: int | None = None, fetch_retry_until: float = 0.0,
    cache: dict | None = None,
) -> SecureRound:
    """The round's holders, dealers (with their validated share bundles) and buckets.

    ``cache``: a dict a reader keeps across calls for what cannot change once read (the round's
    shape, its holders, and a round dealt ahead's dealers, all fixed by records from before the
    round started), so that polling a round does not read them from the chain and store again.

    ``expected``: the submissions the chain counts for the open round (fewer in view raises
    ``NotVisibleYet``). A bundle that cannot be fetched raises ``NotVisibleYet`` too, until half
    the stage that needs it is gone (the masking stage; dealt ahead, the submission window):
    nobody can mask against a member whose bundle it has not seen. After that its dealer is left
    out. (A bundle withheld from some readers and shown to others splits their views; one pinned
    only after the round is read differently by a later auditor.)
    """
    sa = task.secure_aggregation
    index = {m.lower(): i for i, m in enumerate(members)}
    cache = {} if cache is None else cache
    if ("shape", round_) not in cache:
        cache[("shape", round_)] = round_shape(chain, task, round_, start_block=start_block, deploy_block=deploy_block)
    ahead, prev_start, reveals = cache[("shape", round_)]
    st = stages(start_block, task.submit_blocks, sa.stage_blocks, ahead)
    if ("holders", round_) not in cache:
        cache[("holders", round_)] = identity_keys(chain, index, deploy_block=deploy_block, round_=round_,
                                                   start_block=start_block, task=task, previous_start=prev_start)
    holders = cache[("holders", round_)]
    rnd = SecureRound(round_, st, holders, ahead=ahead)
    subs = chain.events("UpdateSubmitted", from_block=start_block, round=round_)
    if expected is not None and len(subs) < expected:
        raise E.NotVisibleYet(f"{len(subs)} of {expected} submissions of round {round_} in view")
    if ahead:
        if ("dealt", round_) not in cache:
            dealt = SecureRound(round_, st, holders, ahead=True)
            _read_dealt_ahead(chain, store, task, task_cid, dealt, reveals or {}, index, members,
                              patience_until=start_block + task.submit_blocks // 2, fetch_retry_until=fetch_retry_until)
            cache[("dealt", round_)] = (dealt.dealers, dealt.dealer_cids, dealt.excluded)
        dealers, cids, excluded = cache[("dealt", round_)]
        rnd.dealers, rnd.dealer_cids, rnd.excluded = dict(dealers), dict(cids), list(excluded)
        for ev in subs:
            member = index[str(ev.args.peer).lower()]
            cid = digest_to_cid(bytes(ev.args.update))
            if member in rnd.dealers:
                rnd.submitted.setdefault(member, (cid, ev.blockNumber))
            else:
                rnd.excluded.append(Exclusion(member, cid, "sat the round out: no share bundle of it for this round "
                                                           "was dealt ahead in the previous round's reveals"))
        seed = bytes(chain.w3.eth.get_block(start_block)["hash"]) if sa.buckets > 1 else b""
    else:
        for ev in subs:
            member = index[str(ev.args.peer).lower()]
            cid = digest_to_cid(bytes(ev.args.update))
            if member not in holders:
                rnd.excluded.append(Exclusion(member, cid, "joined a secure-aggregation round without an identity key on record"))
                continue
            data = _fetch_record(chain, store, rnd, member, cid, "share bundle", st.masking_ends - 1 - sa.stage_blocks // 2,
                                 fetch_retry_until)
            if data is not None:
                _add_dealer(rnd, member, cid, data, task_cid, str(ev.args.peer), sa.threshold)
        seed = bucket_seed(chain, start_block, task, subs, len(members)) if rnd.dealers else b""
    rnd.buckets = assign_buckets(seed, sorted(rnd.dealers), sa.buckets) if rnd.dealers else []
    return rnd


def _fetch_record(chain: ChainClient, store: ArtifactStore, rnd: SecureRound, member: int, cid: str, what: str,
                  patience_until: int, fetch_retry_until: float) -> bytes | None:
    """A record's bytes, within the record budget; None (and an exclusion) when it is unusable, or
    unavailable once block ``patience_until`` is in view; ``NotVisibleYet`` before then."""
    try:
        return fetch_with_retry(store, cid, fetch_retry_until, max_bytes=RECORD_MAX_BYTES)
    except (E.ArtifactNotFound, E.StoreUnavailable) as exc:
        if view_head(chain) < patience_until:
            raise E.NotVisibleYet(f"the {what} of member {member} ({cid}) cannot be fetched yet: {exc}") from None
        rnd.excluded.append(Exclusion(member, cid, f"{what} never became available"))
    except E.StoreError as exc:  # over budget, or not what its CID says
        rnd.excluded.append(Exclusion(member, cid, f"{what} unusable: {exc}"))
    return None


def _add_dealer(rnd: SecureRound, member: int, cid: str, data: bytes, task_cid: str, peer: str, threshold: int) -> None:
    from ..secagg.bundles import decode_bundle

    try:
        rnd.dealers[member] = decode_bundle(data, max_bytes=RECORD_MAX_BYTES, task=task_cid, round_=rnd.round, peer=peer,
                                            dealer=member, holders=set(rnd.holders), threshold=threshold)
        rnd.dealer_cids[member] = cid
    except E.ArtifactInvalid as exc:
        rnd.excluded.append(Exclusion(member, cid, f"share bundle invalid: {exc}"))
    except Exception as exc:  # noqa: BLE001 - a bundle must not be able to end the reader
        rnd.excluded.append(Exclusion(member, cid, f"share bundle unusable: {type(exc).__name__}: {exc}"))


def _read_dealt_ahead(chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, rnd: SecureRound,
                      reveals: dict[str, tuple[str, int]], index: dict[str, int], members: list[str], *,
                      patience_until: int, fetch_retry_until: float) -> None:
    """The dealers of a round dealt ahead: the holders whose reveal of the previous round carries a
    valid share bundle for this one. A reveal without one deals nothing; an unusable one excludes
    its sender from this round only."""
    from ..secagg.bundles import decode_unmask

    for addr, (cid, _) in sorted(reveals.items(), key=lambda kv: index.get(kv[0], -1)):
        member = index.get(addr)
        if member is None or member not in rnd.holders:
            continue
        data = _fetch_record(chain, store, rnd, member, cid, "share bundle (in its reveal of the previous round)",
                             patience_until, fetch_retry_until)
        if data is None:
            continue
        try:
            reveal = decode_unmask(data, max_bytes=RECORD_MAX_BYTES, task=task_cid, round_=rnd.round - 1,
                                   peer=members[member], holder=member, members=len(members))
        except Exception as exc:  # noqa: BLE001 - hostile bytes exclude their sender, never end the reader
            rnd.excluded.append(Exclusion(member, cid, f"reveal of the previous round unusable: {exc}"))
            continue
        if reveal.next is not None:
            _add_dealer(rnd, member, cid, reveal.next, task_cid, members[member], task.secure_aggregation.threshold)


def bucket_seed(chain: ChainClient, start_block: int, task: Task, subs: list, member_count: int) -> bytes:
    """The hash of the block that closed submissions: the last submission's when every member
    submitted, else the window's last block. Nobody knew it when joining."""
    if task.secure_aggregation.buckets <= 1:
        return b""
    closing = subs[-1].blockNumber if len(subs) == member_count else start_block + task.submit_blocks - 1
    if view_head(chain) < closing:
        raise E.NotVisibleYet(f"buckets are drawn from block {closing}, not in view yet")
    return bytes(chain.w3.eth.get_block(closing)["hash"])


def _bucket_of(rnd: SecureRound, member: int) -> tuple[int, ...]:
    return next((b for b in rnd.buckets if member in b), ())


def masked_records(chain: ChainClient, rnd: SecureRound, index: dict[str, int], *, start_block: int) -> dict[int, tuple[str, int]]:
    """Dealers' masked-update records that count (before the masking deadline); sets
    ``rnd.masking_done`` when the stage is over (deadline in view, or every dealer recorded)."""
    if rnd.ahead:
        recs = dict(rnd.submitted)
        rnd.masking_done = view_head(chain) >= rnd.stages.masking_ends - 1 or len(recs) == len(rnd.dealers)
        return recs
    recs = _first_records(chain, rnd.round, KIND_MASKED, index, from_block=start_block, before=rnd.stages.masking_ends)
    recs = {m: v for m, v in recs.items() if m in rnd.dealers}
    rnd.masking_done = view_head(chain) >= rnd.stages.masking_ends - 1 or len(recs) == len(rnd.dealers)
    return recs


def fetch_masked(store: ArtifactStore, task: Task, task_cid: str, rnd: SecureRound, recs: dict[int, tuple[str, int]],
                 members: list[str], schema: Schema, base_cid: str, *, fetch_retry_until: float = 0.0) -> tuple[dict, set[int], list[Exclusion]]:
    """(valid masked artifacts, dealers whose record could not be fetched, exclusions of invalid ones)."""
    valid, missing, excluded = {}, set(), []
    for member, (cid, _) in sorted(recs.items()):
        try:
            data = fetch_with_retry(store, cid, fetch_retry_until, max_bytes=task.max_update_bytes)
        except (E.ArtifactNotFound, E.StoreUnavailable):
            missing.add(member)
            continue
        except E.StoreError as exc:
            excluded.append(Exclusion(member, cid, f"masked update unusable: {exc}"))
            continue
        try:
            art = validate_masked(data, schema, max_bytes=task.max_update_bytes, task_cid=task_cid, round_=rnd.round,
                                  base_cid=base_cid, submitter=members[member], bits=task.secure_aggregation.bits)
            parse_evaluation(art.metadata, round_=rnd.round, kind=task.train.kind, classes=task.model.classes)
            parse_privacy(art.metadata, task.train.dp)
            valid[member] = (cid, art)
        except E.ArtifactInvalid as exc:
            excluded.append(Exclusion(member, cid, f"masked update invalid: {exc}"))
        except Exception as exc:  # noqa: BLE001
            excluded.append(Exclusion(member, cid, f"masked update unusable: {type(exc).__name__}: {exc}"))
    return valid, missing, excluded


def reveals_owed(rnd: SecureRound, valid: dict) -> dict[int, str]:
    """What an honest holder reveals this round: per dealer one kind, the self-mask share of a
    dealer whose valid masked update it fetched, the mask share of every other dealer (none on
    record, an invalid one, or one it could not fetch). Holders that fetched differently may
    reveal different kinds, but with a threshold above half the holders at most one kind reaches
    it, so no dealer's two seeds are ever both reconstructed."""
    return needed_reveals(sorted(rnd.dealers), set(valid))


def secure_inputs(
    chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, round_: int, base_cid: str, *,
    schema: Schema, start_block: int, members: list[str], deploy_block: int, expected: int | None = None,
    fetch_retry_until: float = 0.0, cache: dict | None = None,
) -> RoundInputs:
    """The round's inputs: one ``Bucket`` per unmasked bucket (its members' mean update), and a
    ``Contribution`` without a delta per survivor (its evaluation and privacy metadata).
    ``NotVisibleYet`` until the unmasking stage is over in view."""
    from ..secagg.bundles import decode_unmask, reconstruct
    from ..secagg.masking import unmask_sum

    index = {m.lower(): i for i, m in enumerate(members)}
    rnd = read_secure_round(chain, store, task, task_cid, round_, start_block=start_block, members=members,
                            deploy_block=deploy_block, expected=expected, fetch_retry_until=fetch_retry_until, cache=cache)
    inputs = RoundInputs(round_, base_cid)
    inputs.excluded += rnd.excluded
    inputs.buckets = []
    recs = masked_records(chain, rnd, index, start_block=start_block)
    if not rnd.masking_done:
        raise E.NotVisibleYet(f"{len(recs)} of {len(rnd.dealers)} masked updates of round {round_} in view; "
                              f"the masking stage ends at block {rnd.stages.masking_ends}")
    valid, missing, bad = fetch_masked(store, task, task_cid, rnd, recs, members, schema, base_cid,
                                       fetch_retry_until=fetch_retry_until)
    inputs.excluded += bad
    unmask_recs = _first_records(chain, round_, KIND_UNMASK, index, from_block=start_block, before=rnd.stages.unmasking_ends)
    unmask_recs = {m: v for m, v in unmask_recs.items() if m in rnd.holders}
    rnd.unmasking_done = view_head(chain) >= rnd.stages.unmasking_ends - 1 or len(unmask_recs) == len(rnd.holders)
    if not rnd.unmasking_done:
        raise E.NotVisibleYet(f"{len(unmask_recs)} of {len(rnd.holders)} unmasking reveals of round {round_} in view; "
                              f"the unmasking stage ends at block {rnd.stages.unmasking_ends}")
    unmasks = []
    for holder, (cid, _) in sorted(unmask_recs.items()):
        try:
            data = fetch_with_retry(store, cid, fetch_retry_until, max_bytes=RECORD_MAX_BYTES)
            unmasks.append(decode_unmask(data, max_bytes=RECORD_MAX_BYTES, task=task_cid, round_=round_,
                                         peer=members[holder], holder=holder, members=len(members)))
        except Exception:  # noqa: BLE001 - a holder's unusable reveal only loses its shares
            continue
    # The reveals on record decide, not this reader's own fetches: with a threshold above half the
    # holders, at most one of a dealer's two seeds can be reconstructed. A self seed makes the
    # dealer a survivor, a mask seed a dropout; neither leaves its bucket unresolved.
    selfs = reconstruct(rnd.dealers, unmasks, {d: "self" for d in rnd.dealers})
    masks = reconstruct(rnd.dealers, unmasks, {d: "mask" for d in rnd.dealers})
    late = sorted(d for d in rnd.dealers if selfs.get(d) is not None and d in missing)
    if late:
        raise E.NotVisibleYet(f"masked updates of members {late} were unmasked by the holders but cannot be fetched here yet")
    for bucket in rnd.buckets:
        survivors = [m for m in bucket if selfs.get(m) is not None and m in valid]
        dropped = [m for m in bucket if selfs.get(m) is None and masks.get(m) is not None]
        if not survivors:
            continue
        if len(survivors) + len(dropped) < len(bucket):
            inputs.excluded += [Exclusion(m, valid[m][0], NOT_UNMASKED) for m in survivors]
            continue
        vectors = {m: masked_vector(valid[m][1]).numpy().view(np.uint64) for m in survivors}
        total = unmask_sum(vectors, self_seeds={m: selfs[m] for m in survivors}, dropped={m: masks[m] for m in dropped},
                           mask_publics={m: rnd.dealers[m].mask_public for m in bucket}, task=task_cid, round_=round_)
        if task.secure_aggregation.bits < 64:  # back from the rotated, scaled domain to the fixed-point sum
            total = _decode_bucket(total, task, task_cid, round_, len(bucket), schema)
        inputs.buckets.append(Bucket(tuple(survivors), torch.from_numpy(np.asarray(total, dtype=np.int64).copy()),
                                     ",".join(valid[m][0] for m in survivors)))
    counted = {m for b in inputs.buckets for m in b.members}
    for m in sorted(counted):
        cid, art = valid[m]
        evaluation = parse_evaluation(art.metadata, round_=round_, kind=task.train.kind, classes=task.model.classes)
        privacy = parse_privacy(art.metadata, task.train.dp)
        inputs.contributions.append(Contribution(m, cid, {}, 1, 1, m, evaluation, privacy))
    for m in sorted(set(rnd.dealers) - counted - {x.member for x in inputs.excluded}):
        reason = "dropped out: no valid masked update in the masking stage, or none the holders could fetch" \
            if masks.get(m) is not None else NOT_UNMASKED
        inputs.excluded.append(Exclusion(m, valid[m][0] if m in valid else rnd.dealer_cids[m], reason))
    return inputs.sort()


def _decode_bucket(total: np.ndarray, task: Task, task_cid: str, round_: int, members: int, schema: Schema) -> np.ndarray:
    """A bucket sum masked below 64 bits, decoded (``secagg.quantize``) to int64 fixed point."""
    from ..secagg.quantize import codec_for, decode_sum

    length = sum(math.prod(shape) for shape, _ in schema.values())
    return decode_sum(total, codec_for(task.secure_aggregation, members=members, length=length), task=task_cid, round_=round_)


def recorded_inputs(chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, round_: int, base_cid: str, *,
                    schema: Schema, start_block: int, members: list[str], sealed: bool | None = None) -> RoundInputs:
    """A past round's inputs as an auditor rebuilds them: ``secure_inputs`` for a
    secure-aggregation task, ``collect_updates`` otherwise."""
    if task.secure_aggregation is not None:
        return secure_inputs(chain, store, task, task_cid, round_, base_cid, schema=schema, start_block=start_block,
                             members=members, deploy_block=chain.config()["deploy_block"])
    return collect_updates(chain, store, task, task_cid, round_, base_cid, schema=schema, from_block=start_block,
                           members=members, sealed=sealed)


def secure_summary(chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, round_: int, *, start_block: int,
                   members: list[str], deploy_block: int, base_cid: str) -> dict:
    """What happened in a secure-aggregation round, for ``rounds show``: the dealers, buckets,
    survivors, dropped dealers and whether each one's mask seed was recovered, and how many
    holders recorded reveals. Reads only records; raises ``NotVisibleYet`` while they are not in view."""
    from ..ml.models import schema_of
    from ..secagg.bundles import decode_unmask, reconstruct

    index = {m.lower(): i for i, m in enumerate(members)}
    rnd = read_secure_round(chain, store, task, task_cid, round_, start_block=start_block, members=members,
                            deploy_block=deploy_block)
    recs = masked_records(chain, rnd, index, start_block=start_block)
    valid, missing, _ = fetch_masked(store, task, task_cid, rnd, recs, members, schema_of(task.model), base_cid)
    reveals = _first_records(chain, round_, KIND_UNMASK, index, from_block=start_block, before=rnd.stages.unmasking_ends)
    reveals = {m: v for m, v in reveals.items() if m in rnd.holders}
    unmasks = []
    for holder, (cid, _) in sorted(reveals.items()):
        try:
            unmasks.append(decode_unmask(store.get(cid, max_bytes=RECORD_MAX_BYTES), max_bytes=RECORD_MAX_BYTES,
                                         task=task_cid, round_=round_, peer=members[holder], holder=holder, members=len(members)))
        except Exception:  # noqa: BLE001 - an unusable reveal is simply not counted
            continue
    selfs = reconstruct(rnd.dealers, unmasks, {d: "self" for d in rnd.dealers})
    survivors = sorted(d for d in rnd.dealers if selfs.get(d) is not None and (d in valid or d in missing))
    dropped = sorted(set(rnd.dealers) - set(survivors))
    seeds = reconstruct(rnd.dealers, unmasks, {d: "mask" for d in dropped}) if dropped else {}
    return {"dealt_ahead": rnd.ahead, "dealers": sorted(rnd.dealers), "holders": sorted(rnd.holders), "threshold": task.secure_aggregation.threshold,
            "buckets": [list(b) for b in rnd.buckets], "survivors": survivors, "dropped": dropped,
            "recovered": sorted(d for d in dropped if seeds.get(d) is not None), "reveals": len(unmasks),
            "masking_ends": rnd.stages.masking_ends, "unmasking_ends": rnd.stages.unmasking_ends,
            "dp_rho": (rho := round_dp_rho(task, [list(b) for b in rnd.buckets], survivors)),
            "dp_epsilon_round": None if rho is None else _epsilon(rho, task.secure_aggregation.delta),
            "delta": task.secure_aggregation.delta}


def _epsilon(rho: float, delta: float) -> float:
    from ..secagg.accountant import epsilon

    return epsilon(rho, delta)


def float_dim(task: Task) -> int:
    """How many floating-point values a model of ``task`` has (the noised coordinates)."""
    from ..ml.models import schema_of

    return sum(math.prod(shape) for shape, dtype in schema_of(task.model).values() if dtype == "F32")


def round_dp_rho(task: Task, buckets: list[list[int]], survivors: list[int]) -> float | None:
    """Distributed DP: the zCDP rho a member spends in a round whose buckets and survivors these
    were: each bucket sum is released with its survivors' share of the noise (planned for the
    bucket's size), a member is in one bucket, so the round costs the worst bucket's rho. None
    when the task adds no noise or nothing was released."""
    from ..secagg.accountant import round_rho
    from ..secagg.quantize import bucket_noise_plan

    sa = task.secure_aggregation
    if sa is None or sa.noise_multiplier is None:
        return None
    alive, rhos = set(survivors), []
    for b in buckets:
        if alive & set(b):
            plan, dim = bucket_noise_plan(sa, members=len(b), dim=float_dim(task))  # dim: the noised coordinates
            rhos.append(round_rho(plan, len(alive & set(b)), dim))
    return max(rhos) if rhos else None
