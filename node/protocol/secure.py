"""The pure rules of a secure-aggregation round: its stages, its buckets, and what its records
must be to count.

A round of a task with ``secure_aggregation`` runs on top of the contract's plain round:

1. **Submission window.** A member that takes part pins a *share bundle* (``secagg/bundles.py``:
   its round's mask public key, and Shamir shares of its two round seeds, each encrypted to one
   holder) and submits the bundle's digest. The members doing so are the round's *dealers*.
   *Holders* are the members whose identity key was on record (``Published`` kind 1) before the
   round's key cutoff.
2. **Masking stage** (voting window, until ``masking_ends``). Members are split into buckets by
   the hash of the block that closed submissions. Each dealer pins its clipped, quantized update
   masked against its bucket's other dealers, and records it (kind 2). Dealers whose valid masked
   update is on record in time are the *survivors*; the other dealers are *dropped*.
3. **Unmasking stage** (until ``unmasking_ends``). Each holder reveals, per dealer, the pair key of
   exactly one of its two shares: of the self-mask seed for a survivor, of the mask seed for a
   dropped dealer, never both (kind 3).
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
    "KIND_IDENTITY", "KIND_MASKED", "KIND_UNMASK", "Stages", "stages", "key_cutoff", "assign_buckets",
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
               members: int) -> int:
    """Members publish their identity key when they start; those on record before this block
    receive shares in the round. Round 1: the block after every member's key is on record, or
    ``stage_blocks`` before its submission window closes (time left to deal), whichever comes
    first. Later rounds: the round's start (a member that was late joins from the next round).
    ``identity_blocks``: the blocks of the identity records in view."""
    if round_ > 1:
        return start_block
    latest = start_block + max(1, submit_blocks - stage_blocks)
    if len(identity_blocks) >= members:
        return min(latest, max(identity_blocks) + 1)
    return latest


def stages(start_block: int, submit_blocks: int, stage_blocks: int) -> Stages:
    closes = start_block + submit_blocks
    return Stages(closes + stage_blocks, closes + 2 * stage_blocks)


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
