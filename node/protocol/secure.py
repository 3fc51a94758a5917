"""The pure rules of a secure-aggregation round: its stages, its buckets, and what its records
must be to count.

A round of a task with ``secure_aggregation`` runs on top of the contract's plain round. Its
*holders* are the members whose identity key was on record (``Published`` kind 1) before the
round's key cutoff. Its *dealers* are the members whose share bundle (``secagg/bundles.py``: the
round's mask public key, and Shamir shares of two round seeds, each encrypted to one holder)
counts. A round is one of two shapes:

**Dealt ahead** (the usual one, three steps). Every holder's unmasking reveal of round r-1 also
carries its share bundle for round r. When round r-1 has reveals on record, round r is dealt
ahead: its dealers are the members whose reveal of round r-1 carried a valid bundle for round r.

1. **Submission window.** Buckets are drawn from the hash of the round's start block (after the
   dealing). Each dealer submits its clipped, quantized update, masked against its bucket's
   other dealers: the submission *is* the masked update. A member that did not deal ahead sits
   the round out (and deals in this round's reveal for the next).
2. **Unmasking stage** (voting window, from the close of submissions until ``unmasking_ends``):
   as below.
3. **Votes.**

**Dealt in the round** (round 1, or after a round with no reveals on record: four steps).

1. **Submission window.** A member that takes part pins its share bundle and submits its digest.
2. **Masking stage** (voting window, until ``masking_ends``). Members are split into buckets by
   the hash of the block that closed submissions. Each dealer pins its masked update and records
   it (kind 2).
3. **Unmasking stage** (until ``unmasking_ends``). Each holder reveals, per dealer, the pair key of
   exactly one of its two shares: of the self-mask seed for a dealer whose valid masked update it
   fetched (a *survivor*), of the mask seed for any other (*dropped*), never both (kind 3).
4. **Votes.** Anyone rebuilds each bucket's sum from the masked updates and the reconstructed
   seeds; the task's rule runs over the bucket means.

Everything here is a function of chain records and fetched bytes, so every peer and any auditor
decide the same.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ArtifactInvalid
from .artifact import Artifact, decode, validate
from .fixedpoint import vector_to_state

__all__ = [
    "KIND_IDENTITY", "KIND_MASKED", "KIND_UNMASK", "Stages", "stages", "dealt_ahead", "key_cutoff", "assign_buckets",
    "masked_metadata", "masked_schema", "masked_tensors", "validate_masked", "needed_reveals", "MASKED_KIND",
]

KIND_IDENTITY = 1  # Published(round 0): the member's X25519 identity key, raw
KIND_MASKED = 2  # Published(round r): digest of the member's masked update
KIND_UNMASK = 3  # Published(round r): digest of the member's unmasking reveals
MASKED_KIND = "masked-update"  # the artifact's metadata kind


@dataclass(frozen=True)
class Stages:
    """Block numbers of a round's secure-aggregation deadlines: records in blocks before them count."""

    masking_ends: int
    unmasking_ends: int


def key_cutoff(round_: int, start_block: int, submit_blocks: int, stage_blocks: int, identity_blocks: list[int],
               members: int, previous_start: int | None = None) -> int:
    """Members publish their identity key when they start; those on record before this block
    hold shares in the round. Round 1: the block after every member's key is on record, or
    ``stage_blocks`` before its submission window closes (time left to deal), whichever comes
    first. Round 2: round 1's cutoff. Later rounds: the start of the previous round
    (``previous_start``), because a round's shares are dealt ahead, in the previous round's
    unmasking stage, and the dealers must know the holders then. (A member whose key came later
    joins a round or two after.) ``identity_blocks``: the blocks of the identity records in view."""
    if round_ >= 3:
        if previous_start is None:
            raise ValueError("the key cutoff of a round after the second is the previous round's start")
        return previous_start
    first = start_block if round_ == 1 else previous_start
    if first is None:
        raise ValueError("the key cutoff of round 2 is round 1's: give round 1's start")
    latest = first + max(1, submit_blocks - stage_blocks)
    if len(identity_blocks) >= members:
        return min(latest, max(identity_blocks) + 1)
    return latest


def stages(start_block: int, submit_blocks: int, stage_blocks: int, ahead: bool = False) -> Stages:
    """A round dealt ahead has no masking stage of its own (its submissions are the masked
    updates); the unmasking deadline is the same for both shapes."""
    closes = start_block + submit_blocks
    return Stages(closes if ahead else closes + stage_blocks, closes + 2 * stage_blocks)


def dealt_ahead(round_: int, reveal_blocks: list[int], previous_start: int | None, previous_unmasking_ends: int | None,
                start_block: int) -> bool:
    """Whether ``round_`` is dealt ahead: some reveal (kind 3) of the previous round is on record
    in a block from that round's start, before its unmasking deadline and before this round
    started. Chain facts only, so every reader decides the same; which members dealt is read
    from the reveals' contents. ``reveal_blocks``: the blocks of the previous round's reveals."""
    if round_ < 2 or previous_start is None or previous_unmasking_ends is None:
        return False
    return any(previous_start <= b < min(previous_unmasking_ends, start_block) for b in reveal_blocks)


def assign_buckets(seed: bytes, dealers: list[int], buckets: int) -> list[tuple[int, ...]]:
    """Split ``dealers`` into ``buckets`` groups of near-equal size, in an order fixed by
    ``seed`` (a block hash from after the submission window, so no dealer knew its bucket when it
    joined): sorted by sha256(seed || index), dealt out in contiguous runs; each group sorted.
    Fewer dealers than two per bucket: fewer buckets, so that no bucket holds a single member."""
    order = sorted(dealers, key=lambda m: (hashlib.sha256(seed + m.to_bytes(4, "big")).digest(), m))
    count = max(1, min(buckets, len(order) // 2))
    size, extra = divmod(len(order), count)
    groups, pos = [], 0
    for k in range(count):
        n = size + (1 if k < extra else 0)
        groups.append(tuple(sorted(order[pos:pos + n])))
        pos += n
    return [g for g in groups if g]


def masked_metadata(task_cid: str, round_: int, base: str, peer: str, extra: dict | None = None) -> dict:
    return {"kind": MASKED_KIND, "task": task_cid, "round": round_, "base": base, "peer": peer, **(extra or {})}


MASKED_TENSOR = "masked"  # the one tensor of a masked update below 64 bits
_NARROW = {16: (torch.int16, "I16"), 32: (torch.int32, "I32")}


def masked_schema(schema: dict, bits: int = 64) -> dict:
    """The tensors of a masked update: at 64 bits every tensor of the model, int64 and shaped like
    it; at 16 or 32 bits one vector ``masked`` of the rotation's length (the model's value count
    padded to a power of two), int16 or int32 (the values modulo 2**bits, two's complement)."""
    if bits == 64:
        return {name: (shape, "I64") for name, (shape, _) in schema.items()}
    n = sum(math.prod(shape) for shape, _ in schema.values())
    return {MASKED_TENSOR: ((1 << max(0, (n - 1).bit_length()),), _NARROW[bits][1])}


def masked_tensors(masked: np.ndarray, like: dict[str, torch.Tensor], bits: int = 64) -> dict[str, torch.Tensor]:
    """A member's masked uint64 vector as the tensors it publishes (``masked_schema``): at 64 bits
    split and shaped like ``like`` in canonical order, below only its low ``bits`` bits."""
    masked = np.asarray(masked, dtype=np.uint64)
    if bits != 64:
        narrow = masked.astype(np.uint16 if bits == 16 else np.uint32)  # integer narrowing keeps the low bits
        return {MASKED_TENSOR: torch.from_numpy(narrow.view(np.int16 if bits == 16 else np.int32).copy())}
    return vector_to_state(torch.from_numpy(masked.view(np.int64).copy()), like)


def validate_masked(data: bytes, schema: dict, *, max_bytes: int, task_cid: str, round_: int, base_cid: str,
                    submitter: str, bits: int = 64) -> Artifact:
    """A masked update: the tensors of ``masked_schema(schema, bits)``, and metadata naming this
    task, round, base and its own sender. Raises ``ArtifactInvalid``."""
    art = decode(data, max_bytes=max_bytes)
    if art.metadata.get("peer", "").lower() != submitter.lower():
        raise ArtifactInvalid(f"masked update names peer {art.metadata.get('peer')!r}, but {submitter} recorded it")
    return validate(art, masked_schema(schema, bits), expect={"kind": MASKED_KIND, "task": task_cid, "round": str(round_),
                                                              "base": base_cid})


def masked_vector(art: Artifact) -> torch.Tensor:
    """The masked tensors flattened in canonical (sorted-name) order, int64 (narrower values sign-extended:
    their low bits are what counts)."""
    return torch.cat([art.tensors[k].reshape(-1).to(torch.int64) for k in sorted(art.tensors)])


def needed_reveals(dealers: list[int], survivors: set[int]) -> dict[int, str]:
    """What a holder reveals for each dealer: the self-mask share of a survivor, the mask share of
    a dropped dealer. One kind per dealer, so no dealer's update is ever exposed."""
    return {d: ("self" if d in survivors else "mask") for d in dealers}
