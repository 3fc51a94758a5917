"""The federated metric of each round's model, read back from the chain and the store.

Updates of round r carry their authors' holdout evaluations of r's base model (see
``protocol/evaluation.py``). This module fetches and validates every update of every round as
the peers do, keeps the evaluations whose label matches the round that, per the chain, produced
the base model (a member that mislabels its evaluation is not counted), one per member per
model (the earliest), and combines them. The last round's model has no later update to carry its
evaluation; peers log it (``evaluated``), and ``evaluations_from_logs`` reads those lines.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .. import errors as E
from ..chain import ChainClient
from ..ml.models import schema_of
from ..protocol.evaluation import EVAL_KEYS, Evaluation, federated_metric, headline, parse_evaluation
from ..protocol.task import Task
from ..store import ArtifactStore
from .history import RoundRecord
from .secure import recorded_inputs

__all__ = ["RoundMetric", "published_evaluations", "evaluations_from_logs", "federated_metrics"]

MAX_LOG_BYTES = 64 << 20  # a peer log read for evaluations is read up to this much


@dataclass
class RoundMetric:
    """The federated metric of one round's finalized model."""

    round: int
    kind: str
    source: str  # "chain" (published in later updates) or "logs" (the peers' own logs)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)  # member address (lower case) -> evaluation
    values: dict[str, Fraction | int] = field(default_factory=dict)

    @property
    def headline(self) -> float | None:
        value = self.values.get(headline(self.kind))
        return None if value is None else float(value)

    def to_dict(self) -> dict:
        out = {"round": self.round, "source": self.source, "peers": len(self.evaluations),
               "samples": int(self.values.get("samples", 0)), "metric": headline(self.kind), "value": self.headline}
        out.update({k: float(v) for k, v in self.values.items() if k not in ("samples", "peers")})
        return out


def _models_by_round(history: list[RoundRecord], initial_model: str) -> dict[int, str]:
    out = {0: initial_model}
    out.update({r.round: r.model for r in history if r.status == "finalized" and r.model})
    return out


def published_evaluations(chain: ChainClient, store: ArtifactStore, task: Task, task_cid: str, history: list[RoundRecord],
                          members: list[str], initial_model: str) -> dict[int, dict[str, Evaluation]]:
    """{round of the evaluated model: {member: evaluation}} from every valid update on record."""
    models = _models_by_round(history, initial_model)
    schema = schema_of(task.model)
    found: dict[int, dict[str, Evaluation]] = {}
    for rec in history:
        if not rec.submissions:
            continue
        inputs = recorded_inputs(chain, store, task, task_cid, rec.round, rec.base_model, schema=schema,
                                 start_block=rec.start_block, members=members)
        for c in inputs.contributions:
            ev = c.evaluation
            if ev is None or models.get(ev.round) != rec.base_model:
                continue  # no evaluation, or one labelled with a round whose model is not the base
            found.setdefault(ev.round, {}).setdefault(members[c.member].lower(), ev)
    return found


def evaluations_from_logs(paths: list[Path], task: Task, members: list[str]) -> dict[int, dict[str, Evaluation]]:
    """{round: {member: evaluation}} from peers' JSON logs (``node run --json-log``): the
    ``evaluated`` lines of members, validated like published ones. Unreadable lines are skipped."""
    member_set = {m.lower() for m in members}
    found: dict[int, dict[str, Evaluation]] = {}
    for path in paths:
        try:
            with open(path, "rb") as fh:
                text = fh.read(MAX_LOG_BYTES).decode("utf-8", errors="replace")
        except OSError as exc:
            raise E.ConfigError(f"cannot read peer log {path}: {exc.strerror or exc}") from None
        for line in text.splitlines():
            if '"evaluated"' not in line:
                continue
            try:
                rec = json.loads(line)
                peer = str(rec["peer"]).lower()
                meta = {k: v for k, v in rec.items() if k in EVAL_KEYS}
                ev = parse_evaluation(meta, round_=2**32, kind=task.train.kind, classes=task.model.classes)
            except (ValueError, KeyError, TypeError, E.ArtifactInvalid):
                continue
            if rec.get("event") == "evaluated" and ev is not None and peer in member_set:
                found.setdefault(ev.round, {}).setdefault(peer, ev)
    return found


def federated_metrics(history: list[RoundRecord], task: Task, published: dict[int, dict[str, Evaluation]],
                      logged: dict[int, dict[str, Evaluation]] | None = None) -> dict[int, RoundMetric]:
    """The federated metric of every finalized round that has evaluations: published ones first,
    the peers' logs for a model no update evaluated (the last round's)."""
    out: dict[int, RoundMetric] = {}
    finalized = {r.round for r in history if r.status == "finalized"}
    for r in sorted(finalized | {0}):
        evs, source = published.get(r), "chain"
        if not evs and logged:
            evs, source = logged.get(r), "logs"
        if evs:
            out[r] = RoundMetric(r, task.train.kind, source, dict(evs),
                                 federated_metric(list(evs.values()), cap=task.sample_cap))
    return out
