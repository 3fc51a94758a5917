"""A member's part in secure aggregation: its identity key, its share bundle, its masked update
and its unmasking reveals (the round's stages are described in ``protocol/secure.py``).

Nothing here needs to survive a restart except the plain update between the submission and the
masking stage, which the peer keeps like a sealed update (``Peer._keep_sealed``): every key and
seed is derived again from the account key, the contract and the round.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import errors as E
from ..ledger.secure import (RECORD_MAX_BYTES, fetch_masked, identity_keys, masked_records, read_secure_round,
                             reveals_owed, round_shape, view_head)
from ..protocol.artifact import decode, encode
from ..protocol.cid import cid_to_digest
from ..protocol.fixedpoint import FRAC_BITS, clip_to_norm, exact_sq_norm, quantize
from .pipeline import UpdateContext
from ..protocol.secure import KIND_IDENTITY, KIND_MASKED, KIND_UNMASK, masked_metadata, masked_tensors, stages

__all__ = ["SecureMember", "update_vector"]


def update_vector(delta: dict[str, torch.Tensor], clip: float | None) -> torch.Tensor:
    """The update as one int64 vector in canonical order: floating tensors in fixed point, clipped
    together to L2 norm ``clip`` (None: not clipped) with exact integer arithmetic; integer
    buffers as they are."""
    names = sorted(delta)
    floats = [n for n in names if delta[n].is_floating_point()]
    q = quantize(torch.cat([delta[n].reshape(-1) for n in floats])) if floats else torch.zeros(0, dtype=torch.int64)
    if clip is not None:
        bound = int(clip * (1 << FRAC_BITS))
        q = clip_to_norm(q, exact_sq_norm(q), bound * bound)
    parts, pos = [], 0
    for n in names:
        if delta[n].is_floating_point():
            k = delta[n].numel()
            parts.append(q[pos:pos + k])
            pos += k
        else:
            parts.append(delta[n].reshape(-1).to(torch.int64))
    return torch.cat(parts)


class SecureMember:
    """The secure-aggregation steps of one ``Peer``."""

    def __init__(self, peer):
        self.peer = peer
        self.sa = peer.task.secure_aggregation
        self.index = {m.lower(): i for i, m in enumerate(peer.members)}
        self.me = self.index[peer.address.lower()]
        from ..secagg.keys import identity_private, public_key

        self._identity = identity_private(bytes(peer.chain.account.key), peer.chain.contract.address)
        self.identity_public = public_key(self._identity)
        self._identity_on_record = False
        self.masked: set[int] = set()  # rounds whose masked update this member recorded
        self.unmasked: set[int] = set()  # rounds whose reveals this member recorded
        self._cache: dict = {}  # what cannot change once read: (what, round) -> value (see read_secure_round)

    # ------------------------------------------------------------ records of this member
    def _recorded(self, round_: int, kind: int) -> bool:
        p = self.peer
        start = p.deploy_block if round_ == 0 else p.round_start_block(round_)
        return bool(p.chain.events("Published", from_block=start, round=round_, kind=kind, peer=p.address))

    def ensure_identity(self) -> bool:
        """Record this member's identity key once (kind 1, round 0); True if it sent it now."""
        if self._identity_on_record:
            return False
        if self._recorded(0, KIND_IDENTITY):
            self._identity_on_record = True
            return False
        receipt = self.peer.chain.publish(0, KIND_IDENTITY, self.identity_public)
        self._identity_on_record = True
        self.peer.metrics.inc("gas_used_total", receipt["gasUsed"])
        self.peer.log("identity_published", None, gas=receipt["gasUsed"])
        return True

    def holders(self, round_: int) -> dict[int, bytes]:
        """Members given shares in ``round_``: identity keys on record before its key cutoff
        (known in the previous round already, for dealing ahead). Kept in the read cache, under
        the key ``read_secure_round`` uses."""
        if ("holders", round_) not in self._cache:
            p = self.peer
            self._cache[("holders", round_)] = identity_keys(
                p.chain, self.index, deploy_block=p.deploy_block, round_=round_, task=p.task,
                start_block=p.round_start_block(round_) if round_ == 1 else None,
                previous_start=p.round_start_block(round_ - 1) if round_ >= 2 else None)
        return self._cache[("holders", round_)]

    def ahead(self, round_: int) -> bool:
        """Whether ``round_`` was dealt ahead (its submissions are the masked updates)."""
        if ("shape", round_) not in self._cache:
            p = self.peer
            self._cache[("shape", round_)] = round_shape(p.chain, p.task, round_, start_block=p.round_start_block(round_),
                                                         deploy_block=p.deploy_block)
        return self._cache[("shape", round_)][0]

    def read(self, round_: int, submissions: int | None = None):
        p = self.peer
        return read_secure_round(p.chain, p.store, p.task, p.task_cid, round_, start_block=p.round_start_block(round_),
                                 members=p.members, deploy_block=p.deploy_block, expected=submissions,
                                 fetch_retry_until=time.monotonic() + p.fetch_timeout, cache=self.cache_for(round_))

    def cache_for(self, round_: int) -> dict:
        """The read cache (``ledger.secure.read_secure_round``), holding this round and the next."""
        for old in [k for k in self._cache if k[1] < round_ - 1]:
            del self._cache[old]
        return self._cache

    # ------------------------------------------------------------ the stages
    def joinable(self, round_: int) -> str:
        """Why this member cannot take part in ``round_`` ("" when it can)."""
        holders = self.holders(round_)
        if self.me not in holders:
            return "its identity key was not on record before this round's key cutoff; it takes part from a later round"
        if len(holders) < self.sa.threshold:
            return f"only {len(holders)} members have identity keys on record, fewer than the threshold {self.sa.threshold}"
        if self.ahead(round_) and self.me not in self.read(round_).dealers:
            return "this round was dealt ahead and no share bundle of this member for it counts; it deals in this " \
                   "round's reveal and takes part from the next"
        return ""

    def share_bundle(self, round_: int) -> bytes:
        from ..secagg.bundles import deal

        p = self.peer
        return deal(account_key=bytes(p.chain.account.key), contract=p.chain.contract.address, task=p.task_cid,
                    round_=round_, dealer=self.me, peer=p.address, threshold=self.sa.threshold, holders=self.holders(round_))

    def stage(self, round_: int, submissions: int, submitted: bool) -> str:
        """Which step of the voting window this member owes now: "mask", "unmask", "vote" or "wait"."""
        p = self.peer
        ahead = self.ahead(round_)
        st = stages(p.round_start_block(round_), p.task.submit_blocks, self.sa.stage_blocks, ahead)
        head = view_head(p.chain)
        if ahead:
            if submitted:
                self.masked.add(round_)  # its submission was its masked update
        else:
            if submitted and round_ not in self.masked:
                if self._recorded(round_, KIND_MASKED):
                    self.masked.add(round_)
                elif head < st.masking_ends - 1:
                    return "mask"
            if head < st.masking_ends - 1 and len(self._recorders(round_, KIND_MASKED, st.masking_ends)) < submissions:
                return "wait"
        holders = self.holders(round_)
        if self.me in holders and round_ not in self.unmasked:
            if self._recorded(round_, KIND_UNMASK):
                self.unmasked.add(round_)
            elif head < st.unmasking_ends - 1:
                return "unmask"
        if head < st.unmasking_ends - 1 and len(self._recorders(round_, KIND_UNMASK, st.unmasking_ends) & set(holders)) < len(holders):
            return "wait"
        return "vote"

    def _recorders(self, round_: int, kind: int, before: int) -> set[int]:
        """The members with a ``kind`` record of ``round_`` in a block before ``before``."""
        p = self.peer
        evs = p.chain.events("Published", from_block=p.round_start_block(round_), round=round_, kind=kind)
        return {self.index[a] for a in (str(ev.args.peer).lower() for ev in evs if ev.blockNumber < before) if a in self.index}

    def masked_update(self, round_: int, rnd, plain: bytes) -> tuple[bytes, str]:
        """This member's masked update of ``round_`` (artifact bytes) and its CID, pinned unless
        an attack plugin withholds it. ``rnd``: the round as read (dealers, buckets)."""
        from ..secagg.masking import mask
        from ..secagg.keys import round_seeds, mask_private

        p = self.peer
        bucket = next(b for b in rnd.buckets if self.me in b)
        art = decode(plain, max_bytes=p.task.max_update_bytes)
        # Nobody can check the clipping of a masked update: an attacking member skips it.
        honest = all(getattr(plugin, "clips_under_masking", True) for plugin in p.pipeline.plugins)
        q = update_vector(art.tensors, self.sa.clip if honest else None)
        if self.sa.bits < 64:  # rotated, scaled to the bits and rounded; noise (if any) in that domain
            from ..secagg.quantize import codec_for, encode_update

            q = torch.from_numpy(encode_update(q.numpy(), codec_for(self.sa, members=len(bucket), length=q.numel()),
                                               task=p.task_cid, round_=round_))
        elif self.sa.noise_multiplier is not None:
            q = self._noise(q, len(bucket), art.tensors)
        mask_seed, self_seed = round_seeds(bytes(p.chain.account.key), p.chain.contract.address, round_)
        masked = mask(q.numpy(), me=self.me, mask_private=mask_private(mask_seed), self_seed=self_seed,
                      peers={j: rnd.dealers[j].mask_public for j in bucket if j != self.me}, task=p.task_cid, round_=round_)
        tensors = masked_tensors(masked, art.tensors, self.sa.bits)
        extra = {k: v for k, v in art.metadata.items() if k.startswith(("eval_", "dp_"))}
        data = encode(tensors, masked_metadata(p.task_cid, round_, art.metadata["base"], p.address, extra))
        data = p.pipeline.publish_masked(data, UpdateContext(round_, art.metadata["base"], {}, dict(art.metadata), p))
        if all(getattr(plugin, "pins_masked", True) for plugin in p.pipeline.plugins):
            cid = p.store.add(data, pin=True)
        else:  # an attacker that records a masked update nobody can fetch
            cid = p.store.cid_of(data)
        return data, cid

    def mask(self, round_: int, submissions: int, plain: bytes | None) -> bool:
        """Record this member's masked update of ``round_`` (a round dealt in the round); False
        when it has none to mask."""
        p = self.peer
        self.masked.add(round_)
        if plain is None:
            p.log("missed_mask", round_, reason="the update kept since the submission is lost (restarted without its state_dir copy)")
            return False
        rnd = self.read(round_, submissions)
        if self.me not in rnd.dealers:
            p.log("skipped", round_, reason="this member's share bundle does not count: nothing to mask")
            return False
        _, cid = self.masked_update(round_, rnd, plain)
        receipt = p.chain.publish(round_, KIND_MASKED, cid_to_digest(cid))
        p.metrics.inc("gas_used_total", receipt["gasUsed"])
        p.log("masked", round_, cid=cid, bucket=list(next(b for b in rnd.buckets if self.me in b)), gas=receipt["gasUsed"])
        p._forget_sealed(round_)
        return True

    def _fetch_deadline(self, end_block: int) -> float:
        """A monotonic-clock deadline for fetches that must finish well before block ``end_block``:
        half the time its remaining blocks take at the chain's recent pace, within the peer's fetch timeout."""
        p = self.peer
        head = p.chain.block_number()
        try:
            recent = p.chain.w3.eth.get_block(head)["timestamp"] - p.chain.w3.eth.get_block(max(head - 10, 0))["timestamp"]
            pace = max(recent / max(min(head, 10), 1), 0.1)
        except Exception:  # noqa: BLE001 - no timestamps: assume a block a second
            pace = 1.0
        left = max(end_block - head - 2, 0) * pace / 2
        return time.monotonic() + max(0.5, min(p.fetch_timeout, left))

    def _noise(self, q: torch.Tensor, bucket_size: int, like: dict[str, torch.Tensor]) -> torch.Tensor:
        """Distributed DP: this member's share of the bucket's discrete Gaussian noise, on the
        floating tensors (integer buffers carry no data)."""
        from ..secagg.noise import RandomSource, add_noise, plan_noise

        names = sorted(like)
        is_float = torch.cat([torch.full((like[n].numel(),), like[n].is_floating_point()) for n in names])
        dim = int(is_float.sum())
        plan = plan_noise(clip=self.sa.clip, noise_multiplier=self.sa.noise_multiplier, members=bucket_size, dim=dim)
        out = q.clone()
        out[is_float] = torch.from_numpy(np.asarray(add_noise(q[is_float].numpy(), plan, RandomSource.secure()), dtype=np.int64))
        return out

    def unmask(self, round_: int, submissions: int) -> bool:
        """Record this holder's reveals for ``round_``: one pair key per dealer, of the kind the
        masking stage's outcome calls for, and its share bundle for the next round (dealt ahead)."""
        from ..secagg.bundles import encode_unmask, pair_keys

        p = self.peer
        rnd = self.read(round_, submissions)
        recs = masked_records(p.chain, rnd, self.index, start_block=p.round_start_block(round_))
        if not rnd.masking_done:
            raise E.NotVisibleYet(f"{len(recs)} of {len(rnd.dealers)} masked updates in view; masking ends at block {rnd.stages.masking_ends}")
        # A masked update this holder cannot fetch gets its mask share revealed, so do not wait for
        # one past half of what is left of the unmasking stage.
        valid, missing, _ = fetch_masked(p.store, p.task, p.task_cid, rnd, recs, p.members, p.schema, p.base_of(round_),
                                         fetch_retry_until=self._fetch_deadline(rnd.stages.unmasking_ends))
        owed = reveals_owed(rnd, valid)
        keys = {}
        for dealer, kind in owed.items():
            mask_key, self_key = pair_keys(self._identity, rnd.holders[dealer], task=p.task_cid, round_=round_,
                                           dealer=dealer, holder=self.me)
            keys[(dealer, kind)] = mask_key if kind == "mask" else self_key
        ahead = self._next_bundle(round_)
        data = encode_unmask(task=p.task_cid, round_=round_, peer=p.address, holder=self.me, keys=keys, next_bundle=ahead)
        if len(data) > RECORD_MAX_BYTES:
            raise E.ConfigError("the unmasking reveal is over its size limit")
        cid = p.store.add(data, pin=True)
        receipt = p.chain.publish(round_, KIND_UNMASK, cid_to_digest(cid))
        self.unmasked.add(round_)
        p.metrics.inc("gas_used_total", receipt["gasUsed"])
        p.log("unmasked", round_, cid=cid, survivors=sum(k == "self" for k in owed.values()),
              dropped=sum(k == "mask" for k in owed.values()), unknown=len(missing), dealt_next=ahead is not None,
              gas=receipt["gasUsed"])
        p.pipeline.unmasked(round_, p)
        return True

    def _next_bundle(self, round_: int) -> bytes | None:
        """This member's share bundle for the round after ``round_``, when there is one it can
        deal (it holds shares in it, and enough members do), else None. A member whose privacy
        budget is spent deals nothing: it will not take part."""
        p = self.peer
        if round_ >= p.task.rounds or (p.privacy is not None and not p.privacy.admits(round_ + 1)):
            return None
        holders = self.holders(round_ + 1)
        if self.me not in holders or len(holders) < self.sa.threshold:
            return None
        return self.share_bundle(round_ + 1)
