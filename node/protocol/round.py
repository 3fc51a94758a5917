"""The pure logic of one round: what an update must be to count, and what a round is built from.

Everything here is a function of bytes already fetched and values already read from the chain,
so any observer (a peer, an auditor, a test) gets the same answer from the same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import ArtifactInvalid
from .artifact import Artifact, decode, validate
from .evaluation import Evaluation, evaluation_metadata, parse_evaluation
from .privacy import PrivacySpent, parse_privacy, privacy_metadata
from .task import PrivacyConfig

__all__ = [
    "Bucket", "Contribution", "Exclusion", "RoundInputs", "Schema", "validate_update", "validate_model", "model_metadata",
    "update_metadata",
]

Schema = dict[str, tuple[tuple[int, ...], str]]  # tensor name -> (shape, safetensors dtype)


@dataclass(frozen=True)
class Contribution:
    """One valid update as the aggregation sees it."""

    member: int  # index on the contract's member list
    cid: str
    delta: dict[str, torch.Tensor]
    samples: int
    reputation: int
    position: int = 0  # order of its submission on chain; earlier submissions win ties as originals
    evaluation: Evaluation | None = None  # the author's holdout evaluation of an earlier global model
    privacy: PrivacySpent | None = None  # DP tasks: the author's cumulative epsilon and noise multiplier


@dataclass(frozen=True)
class Exclusion:
    """An update every honest peer leaves out, and why."""

    member: int
    cid: str
    reason: str


@dataclass(frozen=True)
class Bucket:
    """Secure aggregation: the unmasked exact sum of a bucket's masked updates (int64 fixed point,
    the model's tensors flattened in sorted-name order), and the members and updates it sums."""

    members: tuple[int, ...]
    total: torch.Tensor
    cids: str  # the summed masked updates' CIDs, comma-separated, in member order


@dataclass
class RoundInputs:
    """What an aggregate of one round is computed from, as any observer can rebuild it."""

    round: int
    base_cid: str
    contributions: list[Contribution] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)
    buckets: list[Bucket] | None = None  # secure aggregation: the sums the rule runs over

    def sort(self) -> "RoundInputs":
        self.contributions.sort(key=lambda c: c.member)
        self.excluded.sort(key=lambda x: x.member)
        return self


def update_metadata(task_cid: str, round_: int, base: str, samples: int, peer: str,
                    evaluation: Evaluation | None = None, privacy: PrivacySpent | None = None) -> dict:
    """An update's metadata; ``evaluation`` adds the ``eval_*`` fields (``protocol/evaluation.py``),
    ``privacy`` the ``dp_*`` fields (``protocol/privacy.py``)."""
    meta = {"kind": "update", "task": task_cid, "round": round_, "base": base, "samples": samples, "peer": peer}
    meta |= evaluation_metadata(evaluation) if evaluation is not None else {}
    return meta | (privacy_metadata(privacy) if privacy is not None else {})


def model_metadata(task_cid: str, round_: int, base: str, **extra) -> dict:
    return {"kind": "model", "task": task_cid, "round": round_, "base": base, **extra}


def validate_update(
    data: bytes, schema: Schema, *, max_bytes: int, task_cid: str, round_: int, base_cid: str, submitter: str,
    kind: str = "classification", classes: int = 0, dp: PrivacyConfig | None = None,
) -> tuple[Artifact, int]:
    """The parsed update and its reported sample count; ``ArtifactInvalid`` if it must not count.

    ``submitter`` is the address that recorded the update on chain. The artifact must name it as
    its ``peer`` (addresses compared case-insensitively), so that a digest copied from someone
    else's pending submission is excluded instead of credited: a copy earns its sender nothing.

    ``kind`` and ``classes`` are the task's: malformed ``eval_*`` fields (``parse_evaluation``)
    make the artifact invalid. ``dp`` is the task's privacy configuration: ``dp_*`` fields that do
    not fit it (``parse_privacy``) make the artifact invalid too.
    """
    art = validate(
        decode(data, max_bytes=max_bytes),
        schema,
        expect={"kind": "update", "task": task_cid, "round": str(round_), "base": base_cid},
    )
    author = str(art.metadata.get("peer", ""))
    if author.lower() != submitter.lower():
        raise ArtifactInvalid(f"update names peer {author or '(none)'} but was submitted by {submitter}")
    try:
        samples = int(art.metadata.get("samples", "x"))
    except ValueError:
        raise ArtifactInvalid("sample count is not an integer") from None
    if samples < 0:
        raise ArtifactInvalid("negative sample count")
    parse_evaluation(art.metadata, round_=round_, kind=kind, classes=classes)
    parse_privacy(art.metadata, dp)
    return art, samples


def validate_model(data: bytes, schema: Schema, *, max_bytes: int) -> dict[str, torch.Tensor]:
    """The tensors of a global-model artifact; ``ArtifactInvalid`` if it is not one."""
    art = validate(decode(data, max_bytes=max_bytes), schema, expect={"kind": "model"})
    return {k: v.clone() for k, v in art.tensors.items()}
